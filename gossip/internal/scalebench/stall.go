package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"
)

// A stall: for a while the ring gets only part of the machine's CPU, as when
// another job lands on the same cores, and probes come back late. A failure
// detector then reports live hosts down; what matters is that the reports
// stop once the CPU is back, and do not feed on themselves (each false down
// costs suspect, dead and refute messages, and Tenet hides and shows the
// host's entries and repairs them). One ring of 200 of three collapsed
// that way on 2026-12-02 in its soak, with no known trigger; this phase
// makes the trigger deliberate, for Tenet and memberlist alone alike.
//
// The hog is a child process (this binary, -mode hog) spinning
// -stall-threads threads for -stall; the kernel shares the cores between
// its threads and the ring's by thread.

// stallWatch is how long, after the hog ends, false downs are followed;
// the storm counts as stopped if none came in its last stallTail.
var stallWatch, stallTail = time.Minute, 10 * time.Second

// startStall starts the hog now and returns a function that waits until
// the hog has ended and its watch is over, then prints: false downs during
// the hog, false downs in the minute after it, the time from its end to the
// last false down seen, and the process's CPU in the watch's last 10 s (a
// storm that feeds on itself keeps the cores full). The watch starts when
// the hog ends, whatever the scenario is doing then.
func startStall(o *options, scenario string, impl string, d *downs) (finish func() error) {
	self, err := os.Executable()
	if err != nil {
		return func() error { return err }
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.stall+30*time.Second)
	cmd := exec.CommandContext(ctx, self, "-mode", "hog", "-stall", o.stall.String(),
		"-stall-threads", strconv.Itoa(o.stallThreads))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	d0 := d.false_.Load()
	c0, t0 := cpuTime(), time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		return func() error { return fmt.Errorf("stall: start the hog: %w", err) }
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		cancel()
		if err != nil {
			done <- fmt.Errorf("stall: hog: %w", err)
			return
		}
		done <- watchStall(o, scenario, impl, d, d0, c0, t0)
	}()
	return func() error { return <-done }
}

// stallOutcome is what the watch saw.
type stallOutcome struct {
	during, after int64         // false downs during the hog, and in the watch after it
	lastAfter     time.Duration // from the hog's end to the last false down (0: none)
	recovered     bool          // none in the watch's last stallTail
	tailCPU       float64       // the process's CPU in the watch's last stallTail, in cores
}

func watchStall(o *options, scenario, impl string, d *downs, d0 int64, c0 time.Duration, t0 time.Time) error {
	n := o.n
	during := d.false_.Load() - d0
	ringCPU := float64(cpuTime()-c0) / float64(time.Since(t0))
	log.Printf("%s ring of %d: stall of %s (hog threads: %d, %s): the ring had %.0f%% of a core, false downs %d",
		impl, n, o.stall, o.stallThreads, scenario, 100*ringCPU, during)
	stop, err := cpuProfile(o.stallProfile)
	if err != nil {
		return err
	}
	defer stop()
	out := follow(d, d0, during, time.Now())
	log.Printf("%s ring of %d: in the %s after the stall: false downs %d, the last %s after it ended; recovered %v (CPU in the last %s %.0f%% of a core)",
		impl, n, stallWatch, out.after, out.lastAfter.Round(time.Millisecond), out.recovered, stallTail, 100*out.tailCPU)
	result(scenario, n, impl, "stall_false_downs_during", out.during)
	result(scenario, n, impl, "stall_false_downs_after", out.after)
	result(scenario, n, impl, "stall_last_false_down_after", out.lastAfter)
	result(scenario, n, impl, "stall_recovered", out.recovered)
	result(scenario, n, impl, "stall_tail_cpu_pct", 100*out.tailCPU)
	return nil
}

// follow watches d for stallWatch from end (the hog's end), d0 and during
// being the count at the hog's start and the reports during it.
func follow(d *downs, d0, during int64, end time.Time) stallOutcome {
	last, seen := end, d0+during
	var c1 time.Duration
	var t1 time.Time
	for time.Since(end) < stallWatch {
		time.Sleep(stallWatch / 600) // poll interval, not a wait for an outcome
		if v := d.false_.Load(); v != seen {
			seen, last = v, time.Now()
		}
		if t1.IsZero() && time.Since(end) >= stallWatch-stallTail {
			c1, t1 = cpuTime(), time.Now()
		}
	}
	out := stallOutcome{during: during, after: seen - d0 - during, recovered: time.Since(last) >= stallTail,
		tailCPU: float64(cpuTime()-c1) / float64(time.Since(t1))}
	if seen != d0+during {
		out.lastAfter = last.Sub(end)
	}
	return out
}

// runHog spins o.stallThreads threads for o.stall (the stall's child).
func runHog(o *options) error {
	if o.stall <= 0 || o.stallThreads <= 0 {
		return fmt.Errorf("hog: want -stall and -stall-threads above 0")
	}
	runtime.GOMAXPROCS(o.stallThreads)
	deadline := time.Now().Add(o.stall)
	done := make(chan struct{})
	for range o.stallThreads {
		go func() {
			x := 0
			for time.Now().Before(deadline) {
				for i := range 100_000 {
					x += i
				}
			}
			_ = x
			done <- struct{}{}
		}()
	}
	for range o.stallThreads {
		<-done
	}
	return nil
}
