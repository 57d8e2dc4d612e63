package resolver

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
)

// BenchmarkForwardExchange: one forwarded query, to a server on loopback.
func BenchmarkForwardExchange(b *testing.B) {
	up := upstream(b)
	f := newForwarder(context.Background(), []netip.AddrPort{up}, 2e9, 16, slog.New(slog.NewTextHandler(io.Discard, nil)))
	q := question("example.test.", 1)
	for b.Loop() {
		if r := f.exchange(q); r == nil {
			b.Fatal("no answer")
		}
	}
}
