package ipam_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// host is one IPAM on a fake cluster, with Run going until the test ends.
type host struct {
	name string
	m    *ipam.IPAM
	stop context.CancelFunc
	done chan struct{}
}

type hostOpt func(*ipam.Config)

func startHost(t testing.TB, c *ipamtest.Cluster, name string, seeds []string, opts ...hostOpt) *host {
	t.Helper()
	cfg := ipam.DefaultConfig()
	cfg.Host, cfg.Seeds = name, seeds
	cfg.AnswerTimeout = 500 * time.Millisecond
	if tt, ok := t.(*testing.T); ok && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := ipam.New(cfg, c.Node(name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &host{name: name, m: m, stop: cancel, done: make(chan struct{})}
	go func() { defer close(h.done); _ = m.Run(ctx) }()
	t.Cleanup(h.halt)
	return h
}

// halt stops Run; safe to call twice.
func (h *host) halt() {
	h.stop()
	<-h.done
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustPool(t testing.TB, h *host, tenant, subnet, rng string) ipam.Pool {
	t.Helper()
	req, err := ipam.ParsePoolRequest("default", ipam.LocalSpace, subnet, rng, map[string]string{ipam.OptTenant: tenant}, netip.MustParsePrefix(subnet).Addr().Is6())
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.m.RequestPool(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkEpochs fails if two entries on overlapping parts of one pool name
// different owners at the same epoch: the protocol's core invariant (see
// doc.go: every address has at most one owner per epoch), checked on the raw
// replicated table so that no conflict resolution can hide a violation.
func checkEpochs(t testing.TB, n *ipamtest.Node) {
	t.Helper()
	type claim struct {
		host, pool string
		part       netip.Prefix
		Epoch      uint64 `json:"epoch"`
		To         string `json:"to"`
	}
	byPool := map[string][]claim{}
	for _, e := range n.List("ipam/block/") {
		var c claim
		if err := json.Unmarshal(e.Value, &c); err != nil {
			t.Fatalf("entry %s of %s: %v", e.Key, e.Host, err)
		}
		rest := strings.TrimPrefix(e.Key, "ipam/block/")
		pool, part, _ := strings.Cut(rest, "|")
		c.host, c.pool, c.part = e.Host, pool, netip.MustParsePrefix(part)
		byPool[pool] = append(byPool[pool], c)
	}
	for pool, cs := range byPool {
		for i, a := range cs {
			for _, b := range cs[i+1:] {
				if a.Epoch == b.Epoch && a.To != b.To && a.part.Overlaps(b.part) {
					t.Fatalf("pool %s: %s (by %s) and %s (by %s) at epoch %d name %s and %s", pool, a.part, a.host, b.part, b.host, a.Epoch, a.To, b.To)
				}
			}
		}
	}
}
