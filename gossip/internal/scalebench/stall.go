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

// stallWatch is how long, after the hog ends, false downs are followed.
const stallWatch = time.Minute

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

func watchStall(o *options, scenario, impl string, d *downs, d0 int64, c0 time.Duration, t0 time.Time) error {
	n := o.n
	during := d.false_.Load() - d0
	ringCPU := float64(cpuTime()-c0) / float64(time.Since(t0))
	end := time.Now()
	log.Printf("%s ring of %d: stall of %s (hog threads: %d, %s): the ring had %.0f%% of a core, false downs %d",
		impl, n, o.stall, o.stallThreads, scenario, 100*ringCPU, during)

	stop, err := cpuProfile(o.stallProfile)
	if err != nil {
		return err
	}
	defer stop()
	// Follow the reports after the hog: the last time the count moved.
	last, seen := end, d.false_.Load()
	var c1 time.Duration
	var t1 time.Time
	for time.Since(end) < stallWatch {
		time.Sleep(100 * time.Millisecond) // poll interval, not a wait for an outcome
		if v := d.false_.Load(); v != seen {
			seen, last = v, time.Now()
		}
		if t1.IsZero() && time.Since(end) >= stallWatch-10*time.Second {
			c1, t1 = cpuTime(), time.Now()
		}
	}
	after := seen - d0 - during
	tailCPU := float64(cpuTime()-c1) / float64(time.Since(t1))
	quiet := last.Sub(end)
	recovered := time.Since(last) >= 10*time.Second
	log.Printf("%s ring of %d: in the minute after the stall: false downs %d, the last %s after it ended; recovered %v (CPU in the last 10 s %.0f%% of a core)",
		impl, n, after, quiet.Round(time.Millisecond), recovered, 100*tailCPU)
	result(scenario, n, impl, "stall_false_downs_during", during)
	result(scenario, n, impl, "stall_false_downs_after", after)
	result(scenario, n, impl, "stall_last_false_down_after", quiet)
	result(scenario, n, impl, "stall_recovered", recovered)
	result(scenario, n, impl, "stall_tail_cpu_pct", 100*tailCPU)
	return nil
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
