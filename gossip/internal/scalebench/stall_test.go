package main

import (
	"runtime"
	"testing"
	"time"
)

// The hog refuses a missing length or thread count by name, and spins for
// about as long as asked, not forever.
func TestHogRunsForItsLength(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) // runHog sets it for its own process
	for _, o := range []options{{stall: 0, stallThreads: 2}, {stall: time.Second, stallThreads: 0}} {
		if err := runHog(&o); err == nil {
			t.Errorf("runHog(stall %s, threads %d): no error", o.stall, o.stallThreads)
		}
	}
	start := time.Now()
	if err := runHog(&options{stall: 50 * time.Millisecond, stallThreads: 1}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 5*time.Second {
		t.Errorf("a 50 ms hog took %s", took)
	}
}

// The watch after a stall tells reports that stop from reports that go on,
// and says when the last one came.
func TestStallWatchTellsAStopFromAStorm(t *testing.T) {
	defer func(w, tl time.Duration) { stallWatch, stallTail = w, tl }(stallWatch, stallTail)
	stallWatch, stallTail = 1200*time.Millisecond, 400*time.Millisecond
	for _, c := range []struct {
		name      string
		reportFor time.Duration // reports keep coming this long after the hog's end
		stopped   bool
	}{
		{"none after", 0, true},
		{"stop early", 300 * time.Millisecond, true},
		{"go on", stallWatch + time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDowns()
			d.report("h1") // during the hog
			end := time.Now()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for time.Since(end) < c.reportFor {
					d.report("h1")
					time.Sleep(20 * time.Millisecond) // the reports' pace
				}
			}()
			out := follow(d, 0, 1, end)
			<-done
			if out.during != 1 || out.recovered != c.stopped {
				t.Errorf("during %d, stopped %v; want 1, %v", out.during, out.recovered, c.stopped)
			}
			switch {
			case c.reportFor == 0 && (out.after != 0 || out.lastAfter != 0):
				t.Errorf("none after the hog: after %d, last %s after", out.after, out.lastAfter)
			case c.reportFor > 0 && out.after == 0:
				t.Errorf("reports after the hog not counted")
			case c.stopped && c.reportFor > 0 && (out.lastAfter < c.reportFor-100*time.Millisecond || out.lastAfter > c.reportFor+200*time.Millisecond):
				t.Errorf("last report %s after the hog's end, want about %s", out.lastAfter, c.reportFor)
			}
		})
	}
}
