package ipam

import (
	"context"
	"errors"
	"testing"
)

func TestKindErrorReadsAndMatches(t *testing.T) {
	err := kindErrorf(ErrUnavailable, "waiting for host %s: %w", "h2", context.DeadlineExceeded)
	if got, want := err.Error(), "waiting for host h2: context deadline exceeded"; got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrExhausted) {
		t.Fatal("kind or cause not matched, or a wrong kind matched")
	}
	a := NewAllocator(mustPrefix("10.1.0.0/24"), 26, nil)
	err = a.AllocateAddr(mustAddr("10.1.0.70"))
	if got, want := err.Error(), "address 10.1.0.70: not owned by this host"; got != want || !errors.Is(err, ErrNotOwned) {
		t.Fatalf("message %q (want %q), Is(ErrNotOwned) = %v", got, want, errors.Is(err, ErrNotOwned))
	}
}
