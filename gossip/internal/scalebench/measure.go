package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuTime is the CPU this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memory is the live heap and the goroutine stacks after a collection, and
// the resident set.
type memory struct{ heapStack, rss uint64 }

func measureMemory() memory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{heapStack: ms.HeapInuse + ms.StackInuse, rss: rssBytes()}
}

func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// idle measures CPU over a quiet window and memory at its end, per host,
// relative to base (taken before any host started).
func idle(scenario string, n int, impl string, window time.Duration, base memory, _ func()) {
	idleAs(scenario, n, impl, "", window, base)
}

// idleAs is idle with a prefix on the metrics' names.
func idleAs(scenario string, n int, impl, prefix string, window time.Duration, base memory) {
	c0, t0 := cpuTime(), time.Now()
	<-time.After(window) // the window's length is the measurement, not a wait for an outcome
	cpu := float64(cpuTime()-c0) / float64(time.Since(t0))
	m := measureMemory()
	result(scenario, n, impl, prefix+"idle_cpu_pct_per_host", 100*cpu/float64(n))
	result(scenario, n, impl, prefix+"heap_stack_KiB_per_host", float64(int64(m.heapStack)-int64(base.heapStack))/1024/float64(n))
	result(scenario, n, impl, prefix+"rss_KiB_per_host", float64(int64(m.rss)-int64(base.rss))/1024/float64(n))
}

// downs counts "host down" reports about hosts that are in fact up: every
// host's logger feeds it. Hosts the scenario cut off on purpose are
// expected down and not counted.
type downs struct {
	false_   atomic.Int64
	mu       sync.Mutex
	expected map[string]bool
}

func newDowns() *downs { return &downs{expected: make(map[string]bool)} }

func (d *downs) expect(host string) {
	d.mu.Lock()
	d.expected[host] = true
	d.mu.Unlock()
}

func (d *downs) report(peer string) {
	d.mu.Lock()
	exp := d.expected[peer]
	d.mu.Unlock()
	if !exp {
		d.false_.Add(1)
	}
}

// logHandler is each host's slog handler: it counts the node's "host down"
// reports and prints warnings and errors (rate-limited), dropping the rest.
type logHandler struct {
	d     *downs
	warns *atomic.Int64
}

const hostDownMsg = "host down; its entries are hidden"

func (h logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h logHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h logHandler) WithGroup(string) slog.Handler                { return h }
func (h logHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == hostDownMsg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "peer" {
				h.d.report(a.Value.String())
				return false
			}
			return true
		})
		return nil
	}
	if r.Level >= slog.LevelWarn && h.warns.Add(1) <= 20 {
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		fmt.Fprintf(os.Stderr, "%s %s %s%s\n", r.Time.Format("15:04:05.000"), r.Level, r.Message, b.String())
	}
	return nil
}

// eventually polls check every interval until it returns nil or timeout
// passes; it returns the time taken, or the last error.
func eventually(timeout, interval time.Duration, check func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), err
		}
		time.Sleep(interval) // poll interval, not a wait for an outcome
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// cpuProfile starts a CPU profile written to path, if path is set; the
// returned stop ends it and closes the file (a no-op without a path).
func cpuProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
