package e2e

import (
	"testing"
	"time"
)

// Holds checks check repeatedly for d and fails t the first time it
// returns an error: for what must stay true (a network that must not be
// recreated, an address that must stay unreachable).
func Holds(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if err := check(); err != nil {
			t.Fatalf("stopped holding after %v: %v", d-time.Until(deadline), err)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
