package main

// A new host in its own process (join -newcomer own or both). In the ring's
// process a newcomer shares one heap with the 50 hosts' copies of every
// endpoint (gigabytes at 100,000), and the collector's assists land on its
// receive path; a real host holds one copy. The child below is this
// binary run with -mode newcomer: a fresh heap, the ring's key from the
// environment, the ring's first host as its seed.

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// keyEnv carries the ring's key to the child (not its command line,
// which other users can read).
const keyEnv = "SCALEBENCH_KEY"

// newcomerReport is what the child measured, printed as one line.
type newcomerReport struct {
	took     time.Duration
	complete bool
	messages uint64
	kib      float64
	syncs    uint64
}

func (r newcomerReport) String() string {
	return fmt.Sprintf("NEWCOMER %d %t %d %.1f %d", r.took.Nanoseconds(), r.complete, r.messages, r.kib, r.syncs)
}

func parseNewcomerReport(line string) (newcomerReport, error) {
	var r newcomerReport
	var ns int64
	if _, err := fmt.Sscanf(line, "NEWCOMER %d %t %d %f %d", &ns, &r.complete, &r.messages, &r.kib, &r.syncs); err != nil {
		return r, fmt.Errorf("newcomer's report %q: %w", line, err)
	}
	r.took = time.Duration(ns)
	return r, nil
}

// ownProcess runs one newcomer as a child process and returns its report.
// ringSize is the ring's hosts without newcomers; vtep is an index for
// the child's made-up VTEP address, unused by any other host.
func (r *ring) ownProcess(name, order string, nets []string, ringSize, vtep int) (newcomerReport, error) {
	self, err := os.Executable()
	if err != nil {
		return newcomerReport{}, err
	}
	// The child's own waits end within about two minutes; this bounds a
	// child that hangs anyway.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-mode", "newcomer", "-name", name, "-order", order,
		"-seed", r.nodes[0].Addr(), "-ring-size", strconv.Itoa(ringSize),
		"-networks", strconv.Itoa(len(nets)), "-endpoints", strconv.Itoa(r.o.endpoints),
		"-vtep-index", strconv.Itoa(vtep))
	if r.o.newcomerProfile != "" {
		cmd.Args = append(cmd.Args, "-cpuprofile", r.o.newcomerProfile+"-"+name+".prof")
	}
	cmd.Env = append(os.Environ(), keyEnv+"="+hex.EncodeToString(r.key))
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return newcomerReport{}, err
	}
	if err := cmd.Start(); err != nil {
		return newcomerReport{}, err
	}
	var rep newcomerReport
	repErr := errors.New("the newcomer printed no report")
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "NEWCOMER ") {
			rep, repErr = parseNewcomerReport(sc.Text())
		}
	}
	if err := cmd.Wait(); err != nil {
		return rep, fmt.Errorf("newcomer %s: %w", name, err)
	}
	return rep, repErr
}

// runNewcomer is the child: one host that attaches and joins in the given
// order, counts the ring's endpoints as they arrive, prints its report,
// and leaves the ring.
func runNewcomer(o *options) error {
	switch {
	case o.order != "attach-then-join" && o.order != "join-then-attach":
		return fmt.Errorf("newcomer: -order %q: must be attach-then-join or join-then-attach", o.order)
	case o.name == "" || o.seed == "":
		return errors.New("newcomer: -name and -seed are required")
	case o.networks < 1 || o.endpoints < 1 || o.ringSize < 1:
		return fmt.Errorf("newcomer: -networks %d, -endpoints %d, -ring-size %d: each must be at least 1", o.networks, o.endpoints, o.ringSize)
	}
	key, err := hex.DecodeString(os.Getenv(keyEnv))
	if err != nil || len(key) == 0 {
		return fmt.Errorf("newcomer: no key in $%s", keyEnv)
	}
	nets := bigNetworks(o.networks)
	cfg := gossip.DefaultConfig()
	cfg.NodeName = o.name
	cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	cfg.BindPort = 0 // any free port, as the ring's hosts
	cfg.VTEP = netip.AddrFrom4([4]byte{198, 18, byte(o.vtepIndex >> 8), byte(o.vtepIndex)})
	cfg.Keys = [][]byte{key}
	cfg.Seeds = []string{o.seed}
	var warns atomic.Int64
	cfg.Logger = slog.New(logHandler{d: newDowns(), warns: &warns})
	attach := func(n *gossip.Node) error {
		for _, nw := range nets {
			if err := n.Attachments().Attach(nw); err != nil {
				return err
			}
		}
		return nil
	}

	stop, err := cpuProfile(o.cpuprofile)
	if err != nil {
		return err
	}
	defer stop()
	var mu sync.Mutex
	var count int
	var first, last time.Time
	t0 := time.Now()
	node, err := gossip.New(cfg)
	if err != nil {
		return err
	}
	ch, _ := node.Subscribe(16)
	go func() {
		for ev := range ch {
			if ev.Table == gossip.TableEndpoints && ev.Kind == gossip.EventPut && len(ev.Key) == 64 {
				at := time.Now()
				mu.Lock()
				if count == 0 {
					first = at
				}
				count, last = count+1, at
				mu.Unlock()
			}
		}
	}()
	if o.order == "attach-then-join" {
		if err := attach(node); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = node.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }() // leaves the ring
	if o.order == "join-then-attach" {
		if _, err := eventually(time.Minute, 10*time.Millisecond, func() error {
			if len(node.Attachments().Hosts(nets[0])) < o.ringSize {
				return fmt.Errorf("%d of %d hosts' attachments known", len(node.Attachments().Hosts(nets[0])), o.ringSize)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s never learned the ring's attachments: %w", o.name, err)
		}
		t0 = time.Now()
		if err := attach(node); err != nil {
			return err
		}
	}
	_, err = eventually(time.Minute, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if count < o.endpoints {
			return fmt.Errorf("%d of %d", count, o.endpoints)
		}
		return nil
	})
	mu.Lock()
	took, firstAfter := last.Sub(t0), "none"
	if count > 0 {
		firstAfter = first.Sub(t0).Round(time.Millisecond).String()
	}
	mu.Unlock()
	if err != nil {
		took = time.Since(t0) // incomplete: the whole wait, not the last arrival
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	log.Printf("%s (%s, own process): first endpoint after %s; %d garbage collections, %s paused, %.0f%% of CPU; heap %d MiB",
		o.name, o.order, firstAfter, ms.NumGC, time.Duration(ms.PauseTotalNs).Round(time.Microsecond), ms.GCCPUFraction*100, ms.HeapAlloc>>20)
	st := node.Stats()
	fmt.Println(newcomerReport{took: took, complete: err == nil, messages: st.MessagesReceived,
		kib: float64(st.BytesReceived) / 1024, syncs: st.SyncRequests})
	if err != nil {
		log.Printf("%s (%s, own process): incomplete: %v", o.name, o.order, err)
	}
	return nil
}
