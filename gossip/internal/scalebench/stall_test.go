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
