package metrics_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gometrics "github.com/hashicorp/go-metrics"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/metrics"
	"github.com/tenet-net/tenet/ipam"
)

// scrape fetches /metrics as Prometheus would and parses the text format
// into series -> value ("name{a=\"x\",b=\"y\"}").
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func must(t *testing.T, got map[string]float64, series string, want float64) {
	t.Helper()
	v, ok := got[series]
	if !ok {
		t.Errorf("no series %s", series)
		return
	}
	if v != want {
		t.Errorf("%s = %v, want %v", series, v, want)
	}
}

func TestInstrumentsRecordCallsPassesAndConvergence(t *testing.T) {
	m := metrics.New(metrics.Config{Host: "h0", Version: "test"})
	h := metrics.Handler(m, nil)
	m.ObserveCall("NetworkDriver.CreateEndpoint", 3*time.Millisecond, nil)
	m.ObserveCall("NetworkDriver.CreateEndpoint", 2*time.Second, errors.New("refused"))
	m.Reconciled(true, 40*time.Millisecond, nil)
	m.Reconciled(false, time.Millisecond, nil)
	m.Reconciled(false, time.Millisecond, errors.New("netlink"))
	now := time.Now()
	m.Converged([]time.Time{now.Add(-4 * time.Millisecond), now.Add(-200 * time.Millisecond), now.Add(time.Millisecond)}, now)

	got := scrape(t, h)
	must(t, got, `tenet_plugin_call_duration_seconds_count{call="NetworkDriver.CreateEndpoint",result="ok"}`, 1)
	must(t, got, `tenet_plugin_call_duration_seconds_count{call="NetworkDriver.CreateEndpoint",result="error"}`, 1)
	must(t, got, `tenet_reconcile_duration_seconds_count{kind="full",result="ok"}`, 1)
	must(t, got, `tenet_reconcile_duration_seconds_count{kind="scoped",result="ok"}`, 1)
	must(t, got, `tenet_reconcile_duration_seconds_count{kind="scoped",result="error"}`, 1)
	must(t, got, `tenet_convergence_seconds_count`, 3)
	must(t, got, `tenet_convergence_clock_ahead_total`, 1)
	must(t, got, `tenet_build_info{host="h0",version="test"}`, 1)
	if s := got[`tenet_convergence_seconds_sum`]; s < 0.203 || s > 0.2041 {
		t.Errorf("convergence sum %v, want 0.204 s (the change ahead counted as 0)", s)
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
	sum := m.Convergence()
	if sum.Count != 3 || sum.Max != 200*time.Millisecond || sum.P50 != 4*time.Millisecond || sum.Span != time.Minute {
		t.Errorf("convergence summary %+v", sum)
	}
}

func TestConvergenceWindowKeepsTheLastMinute(t *testing.T) {
	m := metrics.New(metrics.Config{Window: 100 * time.Millisecond})
	now := time.Now()
	// 100 samples of 1..100 ms, the last minute's; an old one of 10 s.
	m.Converged([]time.Time{now.Add(-10 * time.Second)}, now.Add(-time.Second))
	var pub []time.Time
	for i := 1; i <= 100; i++ {
		pub = append(pub, now.Add(-time.Duration(i)*time.Millisecond))
	}
	m.Converged(pub, now)
	s := m.Convergence()
	if s.Count != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Errorf("summary %+v, want 100 samples, p50 50ms, p99 99ms, max 100ms", s)
	}
	// Overflow: the ring keeps the newest; the span says how much it covers.
	for i := range 9000 {
		at := now.Add(-9*time.Millisecond + time.Duration(i)*time.Microsecond)
		m.Converged([]time.Time{at.Add(-time.Millisecond)}, at)
	}
	s = m.Convergence()
	if s.Count != 8192 || s.Span >= 100*time.Millisecond || s.Max != time.Millisecond {
		t.Errorf("after overflow: %+v", s)
	}
}

// fakeLocal is a core with endpoints the test adds and removes.
type fakeLocal struct {
	mu   sync.Mutex
	nets []core.Network
	eps  []core.Endpoint
	w    core.WriterState
}

func (f *fakeLocal) Networks() []core.Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nets
}
func (f *fakeLocal) Endpoints() []core.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eps
}
func (f *fakeLocal) Writer() core.WriterState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w
}

type fakeRemotes map[string][]core.Remote

func (f fakeRemotes) Remotes(network string) []core.Remote { return f[network] }

func TestStateSeriesFollowTheSources(t *testing.T) {
	m := metrics.New(metrics.Config{Host: "h0"})
	local := &fakeLocal{nets: []core.Network{
		{NetworkSpec: core.NetworkSpec{Tenant: "acme", Name: "web"}},
		{NetworkSpec: core.NetworkSpec{Tenant: "acme", Name: "db"}},
		{NetworkSpec: core.NetworkSpec{Tenant: "globex", Name: "web"}},
	}}
	remotes := fakeRemotes{"acme/web": {{ID: "r1", Host: "h1"}, {ID: "r2", Host: "h2"}, {ID: "own", Host: "h0"}}}
	pools := []ipam.PoolStats{{ID: "acme/10.1.0.0/24", Blocks: 2, Owned: 128, Used: 3, Free: 124, Received: 1}}
	if err := m.Watch(metrics.Sources{Local: local, Cluster: remotes, IPAM: func() []ipam.PoolStats { return pools },
		Gossip: func() metrics.GossipStats {
			return metrics.GossipStats{Members: map[string]int{"alive": 3, "down": 1}, Sent: 7, Received: 9,
				Dropped: map[string]uint64{"ownership": 2}, Applied: 5, Queues: map[string]int{"sync": 4}}
		}}); err != nil {
		t.Fatal(err)
	}
	h := metrics.Handler(m, nil)
	got := scrape(t, h)
	must(t, got, `tenet_networks{tenant="acme"}`, 2)
	must(t, got, `tenet_networks{tenant="globex"}`, 1)
	must(t, got, `tenet_endpoints{location="local",tenant="acme"}`, 0)
	must(t, got, `tenet_endpoints{location="remote",tenant="acme"}`, 2)
	must(t, got, `tenet_endpoints{location="remote",tenant="globex"}`, 0)
	must(t, got, `tenet_gossip_members{state="alive"}`, 3)
	must(t, got, `tenet_gossip_members{state="down"}`, 1)
	must(t, got, `tenet_gossip_messages_sent_total`, 7)
	must(t, got, `tenet_gossip_messages_received_total`, 9)
	must(t, got, `tenet_gossip_dropped_total{reason="ownership"}`, 2)
	must(t, got, `tenet_gossip_entries_total{result="applied"}`, 5)
	must(t, got, `tenet_gossip_queue_depth{queue="sync"}`, 4)
	must(t, got, `tenet_ipam_blocks_owned{pool="acme/10.1.0.0/24",tenant="acme"}`, 2)
	must(t, got, `tenet_ipam_addresses_free{pool="acme/10.1.0.0/24",tenant="acme"}`, 124)
	must(t, got, `tenet_ipam_addresses_used{pool="acme/10.1.0.0/24",tenant="acme"}`, 3)
	must(t, got, `tenet_ipam_handovers_total{direction="received",pool="acme/10.1.0.0/24",tenant="acme"}`, 1)
	must(t, got, `tenet_writer_failing`, 0)

	// Containers start: the values move; they stop: back to zero.
	local.mu.Lock()
	local.eps = []core.Endpoint{{EndpointSpec: core.EndpointSpec{ID: "e1", Network: "acme/web"}},
		{EndpointSpec: core.EndpointSpec{ID: "e2", Network: "acme/db"}}}
	local.w = core.WriterState{Queued: 2, Busy: time.Second, LastErr: errors.New("x")}
	local.mu.Unlock()
	got = scrape(t, h)
	must(t, got, `tenet_endpoints{location="local",tenant="acme"}`, 2)
	must(t, got, `tenet_writer_queue`, 2)
	must(t, got, `tenet_writer_busy_seconds`, 1)
	must(t, got, `tenet_writer_failing`, 1)
	local.mu.Lock()
	local.eps = nil
	local.mu.Unlock()
	must(t, scrape(t, h), `tenet_endpoints{location="local",tenant="acme"}`, 0)
}

func TestMemberlistMetricsReachOnlyTheirNodesMetrics(t *testing.T) {
	a, b := metrics.New(metrics.Config{}), metrics.New(metrics.Config{})
	na, nb := fmt.Sprint("ta-", time.Now().UnixNano()), fmt.Sprint("tb-", time.Now().UnixNano())
	if err := a.AttachMemberlist(na); err != nil {
		t.Fatal(err)
	}
	if err := a.AttachMemberlist(na); err == nil {
		t.Error("a second attach was accepted")
	}
	if err := b.AttachMemberlist(nb); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gometrics.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 5, []gometrics.Label{{Name: "node", Value: na}})
	gometrics.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 3, []gometrics.Label{{Name: "node", Value: na}})
	gometrics.SetGaugeWithLabels([]string{"memberlist", "node", "instances"}, 2,
		[]gometrics.Label{{Name: "node", Value: nb}, {Name: "node_state", Value: "alive"}})
	gometrics.AddSampleWithLabels([]string{"memberlist", "gossip"}, 1.5, []gometrics.Label{{Name: "node", Value: nb}})
	gometrics.IncrCounter([]string{"memberlist", "udp", "sent"}, 1) // no node: nobody's
	ga, gb := scrape(t, metrics.Handler(a, nil)), scrape(t, metrics.Handler(b, nil))
	must(t, ga, `memberlist_udp_sent_total`, 8)
	must(t, gb, `memberlist_node_instances{node_state="alive"}`, 2)
	must(t, gb, `memberlist_gossip_count`, 1)
	must(t, gb, `memberlist_gossip_sum`, 1.5)
	if _, ok := gb[`memberlist_udp_sent_total`]; ok {
		t.Error("node b's metrics show node a's counter")
	}
	if _, ok := ga[`memberlist_node_instances{node_state="alive"}`]; ok {
		t.Error("node a's metrics show node b's gauge")
	}
	a.Close()
	gometrics.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 5, []gometrics.Label{{Name: "node", Value: na}})
	if _, ok := scrape(t, metrics.Handler(a, nil))[`memberlist_udp_sent_total`]; ok {
		t.Error("detached metrics still show memberlist's")
	}
}

func TestMemberlistMetricsOfARealRing(t *testing.T) {
	key, err := gossip.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*gossip.Node
	ms := map[string]*metrics.Metrics{}
	for i := range 2 {
		cfg := gossip.DefaultConfig()
		cfg.NodeName = fmt.Sprintf("mt%d-%d", i, time.Now().UnixNano())
		cfg.BindAddr, cfg.BindPort = netip.MustParseAddr("127.0.0.1"), 0
		cfg.VTEP = netip.MustParseAddr("203.0.113.1")
		cfg.Keys = [][]byte{key}
		cfg.Logger = slog.New(slog.DiscardHandler)
		if i > 0 {
			cfg.Seeds = []string{nodes[0].Addr()}
		}
		m := metrics.New(metrics.Config{})
		if err := m.AttachMemberlist(cfg.NodeName); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		n, err := gossip.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Watch(metrics.Sources{Gossip: func() metrics.GossipStats { return metrics.FromGossip(n) }}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = n.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		nodes = append(nodes, n)
		ms[cfg.NodeName] = m
	}
	for name, m := range ms {
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := scrape(t, metrics.Handler(m, nil))
			if got[`memberlist_udp_sent_total`] > 0 && got[`memberlist_gossip_count`] > 0 && got[`tenet_gossip_members{state="alive"}`] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no memberlist traffic or members in its metrics: udp %v gossip %v alive %v", name,
					got[`memberlist_udp_sent_total`], got[`memberlist_gossip_count`], got[`tenet_gossip_members{state="alive"}`])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestHealthAnswersEachCheck(t *testing.T) {
	var ringErr error = errors.New("no other host reachable")
	var mu sync.Mutex
	h := &metrics.Health{
		Live: []metrics.Check{{Name: "writer", Fn: func(context.Context) error { return nil }}},
		Ready: []metrics.Check{
			{Name: "plugin", Fn: func(context.Context) error { return nil }},
			{Name: "ring", Fn: func(context.Context) error { mu.Lock(); defer mu.Unlock(); return ringErr }},
			{Name: "slow", Fn: func(ctx context.Context) error { <-ctx.Done(); return nil }},
		},
		Timeout: 20 * time.Millisecond,
	}
	srv := httptest.NewServer(metrics.Handler(nil, h))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "writer: ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "ring: no other host reachable") || !strings.Contains(body, "plugin: ok") {
		t.Errorf("/readyz while the ring is not joined: %d %q", code, body)
	}
	mu.Lock()
	ringErr = nil
	mu.Unlock()
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz when all hold: %d %q", code, body)
	}
	if err := h.ReadyNow(t.Context()); err != nil {
		t.Error(err)
	}
	if code, _ := get("/metrics"); code != 404 {
		t.Errorf("/metrics without metrics: %d", code)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}

func TestServeRefusesATakenAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = metrics.Serve(t.Context(), l.Addr().String(), nil, &metrics.Health{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("serve on a taken address: %v", err)
	}
}
