package ipam_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// reportLatency adds p50 and p99 of ds to the benchmark's output.
func reportLatency(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkRequestAddressOwning: a host with space in a block it owns; the
// hot path. Also reports allocations per second on one host. Every maxHeld
// requests the pool is emptied (untimed), so the state stays bounded.
func BenchmarkRequestAddressOwning(b *testing.B) {
	b.Run("store=none", func(b *testing.B) { benchOwning(b, nil, 60000) })
	// With a Store, every change re-encodes this host's whole state, so the
	// cost grows with the addresses held: measured at up to 1,000.
	b.Run("store=mem,held<=1000", func(b *testing.B) { benchOwning(b, &ipam.MemStore{}, 1000) })
}

func benchOwning(b *testing.B, store ipam.Store, maxHeld int) {
	c := ipamtest.NewCluster(0, 1)
	h := startHost(b, c, "a", []string{"a"}, func(cfg *ipam.Config) {
		if store != nil {
			cfg.Store = store
		}
	})
	p := mustPool(b, h, "acme", "10.0.0.0/16", "")
	ds := make([]time.Duration, 0, b.N)
	ctx := b.Context()
	var held []netip.Addr
	var elapsed time.Duration
	b.ResetTimer()
	for range b.N {
		if len(held) == maxHeld {
			b.StopTimer()
			for _, a := range held {
				if err := h.m.ReleaseAddress(ctx, p.ID, a); err != nil {
					b.Fatal(err)
				}
			}
			held = held[:0]
			b.StartTimer()
		}
		t0 := time.Now()
		a, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{})
		d := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		elapsed += d
		ds = append(ds, d)
		held = append(held, a.Addr())
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "allocs/s")
	reportLatency(b, ds)
}

// BenchmarkRequestAddressObtaining: every measured request finds this
// host's blocks full and must first obtain a block from the seed, over a
// fake network with the given one-way delay. A fresh two-host cluster is
// started (untimed) every 100 requests, so at most 100 blocks have moved:
// the cost of a reconcile grows with the number of entries in the table.
func BenchmarkRequestAddressObtaining(b *testing.B) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		b.Run("delay="+delay.String(), func(b *testing.B) {
			ctx := b.Context()
			ds := make([]time.Duration, 0, b.N)
			var h *host
			var stop func()
			var p ipam.Pool
			b.ResetTimer()
			for n := range b.N {
				b.StopTimer()
				if n%100 == 0 {
					if stop != nil {
						stop()
					}
					c := ipamtest.NewCluster(delay, uint64(n))
					seeds := []string{"a"}
					a := startHost(b, c, "a", seeds, func(cfg *ipam.Config) { cfg.BlockBitsV4 = 30 })
					h = startHost(b, c, "b", seeds, func(cfg *ipam.Config) { cfg.BlockBitsV4 = 30 })
					stop = func() { a.halt(); h.halt() }
					p = mustPool(b, h, "acme", "10.0.0.0/16", "")
				}
				st, err := h.m.Status(p.ID)
				if err != nil {
					b.Fatal(err)
				}
				for _, bl := range st.Blocks {
					for range bl.Avail { // fill the block so the next request must obtain one
						if _, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{}); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StartTimer()
				t0 := time.Now()
				if _, err := h.m.RequestAddress(ctx, p.ID, ipam.AddressRequest{}); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(t0))
			}
			b.StopTimer()
			if stop != nil {
				stop()
			}
			reportLatency(b, ds)
		})
	}
}
