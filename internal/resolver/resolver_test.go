package resolver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/overlay"
)

// fakeDatapath hands out loopback sockets in place of the tenants'.
type fakeDatapath struct {
	mu     sync.Mutex
	ns     map[string]overlay.NSID
	conns  map[string]*net.UDPConn
	opened map[string]int
	// bridges: the TCP listeners ListenResolverOn opened, by "tenant/vni",
	// latest last.
	bridges map[string][]net.Listener
}

func (f *fakeDatapath) ListenResolverOn(ctx context.Context, tenant string, vni uint32) (net.Listener, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bridges == nil {
		f.bridges = map[string][]net.Listener{}
	}
	k := fmt.Sprint(tenant, "/", vni)
	f.bridges[k] = append(f.bridges[k], l)
	return l, nil
}

// bridgeListeners returns the listeners opened on tenant/vni's bridge.
func (f *fakeDatapath) bridgeListeners(tenant string, vni uint32) []net.Listener {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.bridges[fmt.Sprint(tenant, "/", vni)])
}

func (f *fakeDatapath) TenantNSID(tenant string) (overlay.NSID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.ns[tenant]
	return id, ok
}

func (f *fakeDatapath) ListenResolver(ctx context.Context, tenant string) (overlay.ResolverSockets, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return overlay.ResolverSockets{}, err
	}
	// TCP on the same port, as in a tenant's namespace.
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.LocalAddr().(*net.UDPAddr).Port})
	if err != nil {
		c.Close()
		return overlay.ResolverSockets{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conns[tenant] = c
	f.opened[tenant]++
	return overlay.ResolverSockets{UDP: c, TCP: l, NS: f.ns[tenant]}, nil
}

func (f *fakeDatapath) ListenHostResolver(ctx context.Context) (*net.UDPConn, error) {
	s, err := f.ListenResolver(ctx, "")
	if err != nil {
		return nil, err
	}
	s.TCP.Close()
	return s.UDP, nil
}

func (f *fakeDatapath) RedirectHostResolver(upstream netip.AddrPort) error { return nil }

func (f *fakeDatapath) addr(t *testing.T, tenant string) netip.AddrPort {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		c := f.conns[tenant]
		f.mu.Unlock()
		if c != nil {
			return c.LocalAddr().(*net.UDPAddr).AddrPort()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket for tenant %q", tenant)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type fakeLocal struct {
	mu   sync.Mutex
	nets []core.Network
	eps  []core.Endpoint
}

func (f *fakeLocal) Networks() []core.Network {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nets)
}

func (f *fakeLocal) Endpoints() []core.Endpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.eps)
}

// fakeCluster is other hosts' endpoints; put and del change them and
// stream the event, as gossip does.
type fakeCluster struct {
	mu      sync.Mutex
	remotes map[string][]core.Remote
	reads   int
	events  chan gossip.Event
}

func (f *fakeCluster) Remotes(network string) []core.Remote {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return slices.Clone(f.remotes[network])
}

func (f *fakeCluster) Subscribe(int) (<-chan gossip.Event, func()) { return f.events, func() {} }

func (f *fakeCluster) put(r core.Remote) {
	f.mu.Lock()
	f.remotes[r.Network] = append(f.remotes[r.Network], r)
	f.mu.Unlock()
	f.events <- gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: r.ID, Endpoint: &gossip.Endpoint{ID: r.ID, Network: r.Network}}
}

func (f *fakeCluster) del(network, id string) {
	f.mu.Lock()
	f.remotes[network] = slices.DeleteFunc(f.remotes[network], func(r core.Remote) bool { return r.ID == id })
	f.mu.Unlock()
	f.events <- gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: id, Endpoint: &gossip.Endpoint{ID: id}}
}

func network(tenant, name, subnet string, egress bool) core.Network {
	n := core.Network{NetworkSpec: core.NetworkSpec{Tenant: tenant, Name: name, Subnet: netip.MustParsePrefix(subnet), Ref: tenant + name}}
	if egress {
		n.Gateway = n.Subnet.Addr().Next()
	}
	return n
}

func endpoint(id, network, ip string, names ...string) core.Endpoint {
	e := core.Endpoint{EndpointSpec: core.EndpointSpec{ID: id, Network: network, IP: netip.PrefixFrom(netip.MustParseAddr(ip), 16), Names: names}}
	e.Netns = "/var/run/docker/netns/" + id
	if names[0] == "both" {
		e.Netns = "/var/run/docker/netns/both"
	}
	return e
}

// upstream serves example.test on loopback.
func upstream(t testing.TB) netip.AddrPort {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Name == "example.test." {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr("example.test.", dns.TypeA), A: net.IPv4(203, 0, 113, 80)})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

type setup struct {
	dp      *fakeDatapath
	local   *fakeLocal
	cluster *fakeCluster
}

func start(t *testing.T, cfg Config) *setup {
	t.Helper()
	s := &setup{dp: &fakeDatapath{ns: map[string]overlay.NSID{"acme": 1, "beta": 2, "": 9}, conns: map[string]*net.UDPConn{}, opened: map[string]int{}},
		local: &fakeLocal{
			nets: []core.Network{
				network("acme", "web", "127.1.0.0/16", true),
				network("acme", "db", "127.3.0.0/16", false),
				network("beta", "web", "127.2.0.0/16", true),
			},
			eps: []core.Endpoint{
				endpoint("e1", "acme/web", "127.1.0.10", "a0"),
				endpoint("e2", "beta/web", "127.2.0.20", "db"),
				endpoint("e3", "acme/db", "127.3.0.5", "secret"),
				endpoint("e4", "acme/db", "127.3.0.6", "both"),  // also on acme/web:
				endpoint("e5", "acme/web", "127.1.0.6", "both"), // one container
				endpoint("e6", "beta/web", "127.2.0.6", "both"), // and on beta's
			},
		}}
	cfg.Host, cfg.Datapath, cfg.Local, cfg.Logger = "h0", s.dp, s.local, slog.New(slog.NewTextHandler(t.Output(), nil))
	s.cluster = &fakeCluster{events: make(chan gossip.Event, 16), remotes: map[string][]core.Remote{"acme/web": {
		{ID: "r1", Network: "acme/web", IP: netip.MustParseAddr("127.1.0.74"), Names: []string{"a1", "api"}, Host: "h1"},
		{ID: "r2", Network: "acme/web", IP: netip.MustParseAddr("127.1.0.30"), Names: []string{"db"}, Host: "h1"},
		{ID: "e1", Network: "acme/web", IP: netip.MustParseAddr("127.1.0.99"), Names: []string{"a0"}, Host: "h0"}, // our own, as gossip had it
	}}}
	cfg.Cluster = s.cluster
	cfg.DockerNames = func(context.Context) (map[string]string, error) {
		return map[string]string{"acmeweb": "acme-web"}, nil
	}
	runResolver(t, cfg)
	return s
}

// runResolver makes a Resolver of cfg and runs it until t ends.
func runResolver(t *testing.T, cfg Config) {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// ask sends one query from src to server.
func ask(t *testing.T, src string, server netip.AddrPort, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(src)}}}
	r, _, err := c.Exchange(question(dns.Fqdn(name), qtype), server.String())
	return r, err
}

func TestResolverAnswersEachNetworkItsOwnNames(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Upstream = []netip.AddrPort{upstream(t)}
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	acme, beta := s.dp.addr(t, "acme"), s.dp.addr(t, "beta")
	for _, tc := range []struct {
		src    string
		server netip.AddrPort
		name   string
		rcode  int
		want   []string
	}{
		{"127.1.0.10", acme, "a1", dns.RcodeSuccess, []string{"127.1.0.74"}},
		{"127.1.0.10", acme, "api.acme-web", dns.RcodeSuccess, []string{"127.1.0.74"}},
		{"127.1.0.10", acme, "a0.acme.web", dns.RcodeSuccess, []string{"127.1.0.10"}},
		{"127.1.0.10", acme, "db", dns.RcodeSuccess, []string{"127.1.0.30"}},                         // acme's db, not beta's
		{"127.1.0.10", acme, "secret", dns.RcodeNameError, nil},                                      // another network: forwarded, unknown
		{"127.1.0.10", acme, "example.test", dns.RcodeSuccess, []string{"203.0.113.80"}},             // forwarded
		{"127.3.0.5", acme, "secret", dns.RcodeSuccess, []string{"127.3.0.5"}},                       // its own network
		{"127.3.0.5", acme, "a1", dns.RcodeRefused, nil},                                             // internal: not forwarded
		{"127.3.0.5", acme, "example.test", dns.RcodeRefused, nil},                                   // internal: not forwarded
		{"127.2.0.20", beta, "db", dns.RcodeSuccess, []string{"127.2.0.20"}},                         // beta's db
		{"127.2.0.20", beta, "a1", dns.RcodeNameError, nil},                                          // acme's name, forwarded: unknown
		{"127.2.0.20", acme, "db", dns.RcodeRefused, nil},                                            // beta's address at acme's socket
		{"127.9.0.1", beta, "db", dns.RcodeRefused, nil},                                             // on no network
		{"127.1.0.10", s.dp.addr(t, ""), "example.test", dns.RcodeSuccess, []string{"203.0.113.80"}}, // the host's: forwards
		{"127.1.0.10", s.dp.addr(t, ""), "a1", dns.RcodeNameError, nil},                              // the host's: no tenant names
	} {
		r, err := ask(t, tc.src, tc.server, tc.name, dns.TypeA)
		if err != nil {
			t.Errorf("%s asks %s: %v", tc.src, tc.name, err)
			continue
		}
		if got := answers(r); r.Rcode != tc.rcode || !slices.Equal(got, tc.want) {
			t.Errorf("%s asks %s: %s %v, want %s %v", tc.src, tc.name, dns.RcodeToString[r.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
		}
	}
}

func TestResolverFollowsNamespaces(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	s.dp.addr(t, "acme")
	// The tenant's namespace is made anew: a new socket there.
	s.dp.mu.Lock()
	s.dp.ns["acme"] = 7
	s.dp.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.dp.mu.Lock()
		n := s.dp.opened["acme"]
		s.dp.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket opened %d times, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, err := ask(t, "127.1.0.10", s.dp.addr(t, "acme"), "a1", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("after the new namespace: %v %v", r, err)
	}
}

func TestResolverLimitsEachSource(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rate, cfg.Burst, cfg.Interval = 1, 5, 10*time.Millisecond
	s := start(t, cfg)
	acme := s.dp.addr(t, "acme")
	answered := 0
	c := &dns.Client{Timeout: 100 * time.Millisecond, Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("127.1.0.10")}}}
	for range 20 {
		if _, _, err := c.Exchange(question("a1.", dns.TypeA), acme.String()); err == nil {
			answered++
		}
	}
	if answered < 5 || answered > 7 {
		t.Errorf("%d of 20 queries answered at 1/s with a burst of 5", answered)
	}
	// Another source has its own bucket.
	if r, err := ask(t, "127.1.0.6", acme, "a1", dns.TypeA); err != nil || r.Rcode != dns.RcodeSuccess {
		t.Errorf("another source: %v %v", r, err)
	}
}

func TestLimiterForgetsAndBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(1, 1)
	l.now = func() time.Time { return now }
	a := netip.MustParseAddr("10.0.0.1")
	if !l.allow(a) || l.allow(a) {
		t.Fatal("burst of 1 not kept")
	}
	now = now.Add(time.Second)
	if !l.allow(a) {
		t.Fatal("no token after a second at 1/s")
	}
	now = now.Add(2 * time.Minute)
	l.allow(netip.MustParseAddr("10.0.0.2"))
	if _, ok := l.buckets[a]; ok {
		t.Error("an idle source was kept")
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Error("a config without Datapath passed")
	}
	bad := DefaultConfig()
	bad.Host, bad.Datapath, bad.Local, bad.Cluster, bad.Logger = "h0", &fakeDatapath{}, &fakeLocal{}, &fakeCluster{}, slog.Default()
	bad.Upstream = []netip.AddrPort{netip.AddrPortFrom(overlay.ResolverAddr, 53)}
	if err := bad.Validate(); err == nil {
		t.Error("the resolver's own address as upstream passed")
	}
}

// TestResolverFollowsGossip: other hosts' names are read once and kept
// until gossip reports a change of their network; a new and a removed
// endpoint show at the next query after the event.
func TestResolverFollowsGossip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	acme := s.dp.addr(t, "acme")
	want := func(name string, ips ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			r, err := ask(t, "127.1.0.10", acme, name, dns.TypeA)
			if err == nil && slices.Equal(answers(r), ips) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v %v, want %v", name, r, err, ips)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	want("a1", "127.1.0.74")
	want("a0", "127.1.0.10") // from the core, not gossip's copy
	s.cluster.mu.Lock()
	before := s.cluster.reads
	s.cluster.mu.Unlock()
	for range 50 {
		want("a1", "127.1.0.74")
	}
	s.cluster.mu.Lock()
	if reads := s.cluster.reads - before; reads > 1 {
		t.Errorf("50 queries read gossip %d times", reads)
	}
	s.cluster.mu.Unlock()
	s.cluster.put(core.Remote{ID: "r3", Network: "acme/web", IP: netip.MustParseAddr("127.1.0.75"), Names: []string{"a1"}, Host: "h2"})
	want("a1", "127.1.0.74", "127.1.0.75")
	s.cluster.del("acme/web", "r1")
	want("a1", "127.1.0.75")
	want("api")
}

// TestResolverAnswersInFullOverTCP: a name with more addresses than fit
// in 512 bytes is truncated over UDP (TC set) and answered in full over
// TCP, as a client retries.
func TestResolverAnswersInFullOverTCP(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	acme := s.dp.addr(t, "acme")
	for i := range 60 {
		s.cluster.put(core.Remote{ID: fmt.Sprint("m", i), Network: "acme/web", IP: netip.AddrFrom4([4]byte{127, 1, 1, byte(i)}),
			Names: []string{fmt.Sprint("m", i), "many"}, Host: "h1"})
	}
	deadline := time.Now().Add(5 * time.Second)
	var r *dns.Msg
	for {
		var err error
		if r, err = ask(t, "127.1.0.10", acme, "many", dns.TypeA); err == nil && (r.Truncated || len(r.Answer) == 60) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("many over UDP: %v %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !r.Truncated || len(r.Answer) >= 60 {
		t.Errorf("over UDP: truncated %v, %d answers", r.Truncated, len(r.Answer))
	}
	c := &dns.Client{Net: "tcp", Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.1.0.10")}}}
	r, _, err := c.Exchange(question("many.", dns.TypeA), acme.String())
	if err != nil || r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("over TCP: %v, %v", r, err)
	}
	// Forwarded and refused answers come over TCP too.
	c.Dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP("127.3.0.5")}
	if r, _, err := c.Exchange(question("example.test.", dns.TypeA), acme.String()); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("over TCP from an internal network: %v, %v", r, err)
	}
}

// TestResolverAnswersOverTCPOnBridgesWithoutEgress: a network without
// egress that has a container here gets a TCP server on its bridge
// (the tenant's namespace has no route back to it); networks with egress,
// or without a container here, get none; the server goes with the
// network's last container, and is opened anew for a network re-created
// under another Docker ID.
func TestResolverAnswersOverTCPOnBridgesWithoutEgress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	s.local.mu.Lock()
	s.local.nets = append(s.local.nets, network("acme", "spare", "127.4.0.0/16", false))
	for i := range s.local.nets {
		s.local.nets[i].VNI = uint32(100 + i)
	}
	s.local.mu.Unlock()
	const db = 101 // acme/db's VNI
	await := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not after 5 s: %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	await("a TCP server on acme/db's bridge", func() bool { return len(s.dp.bridgeListeners("acme", db)) == 1 })
	ln := s.dp.bridgeListeners("acme", db)[0]
	c := &dns.Client{Net: "tcp", Timeout: time.Second, Dialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.3.0.6")}}}
	query := func(l net.Listener) (*dns.Msg, error) {
		r, _, err := c.Exchange(question("secret.", dns.TypeA), l.Addr().String())
		return r, err
	}
	if r, err := query(ln); err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.3.0.5" {
		t.Fatalf("secret over TCP on acme/db's bridge: %v %v", r, err)
	}
	// Re-created by Docker under another ID: a new server, the old one gone.
	s.local.mu.Lock()
	s.local.nets[1].Ref = "acme-db-2"
	s.local.mu.Unlock()
	await("a new server for the re-created network", func() bool { return len(s.dp.bridgeListeners("acme", db)) == 2 })
	if _, err := query(ln); err == nil {
		t.Error("the old network's server still answers")
	}
	if r, err := query(s.dp.bridgeListeners("acme", db)[1]); err != nil || len(r.Answer) != 1 {
		t.Errorf("the new server: %v %v", r, err)
	}
	// The network's containers go: so does its server.
	s.local.mu.Lock()
	s.local.eps = slices.DeleteFunc(s.local.eps, func(e core.Endpoint) bool { return e.Network == "acme/db" })
	s.local.mu.Unlock()
	await("the server gone with the last container", func() bool {
		_, err := query(s.dp.bridgeListeners("acme", db)[1])
		return err != nil
	})
	time.Sleep(5 * cfg.Interval) // rounds in which nothing may be opened
	s.dp.mu.Lock()
	defer s.dp.mu.Unlock()
	for k, ls := range s.dp.bridges {
		if k != fmt.Sprint("acme/", db) || len(ls) != 2 {
			t.Errorf("%d servers on %s's bridge: only acme/db (no egress, containers here) should have had one, twice", len(ls), k)
		}
	}
}

// TestReverseLookupNamesTheNewerClaim: of two remote endpoints claiming one
// address, a reverse lookup names the newer, the one the datapath reaches,
// whatever order gossip lists them in (it lists in no particular order).
func TestReverseLookupNamesTheNewerClaim(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Interval = 10 * time.Millisecond
	s := start(t, cfg)
	acme := s.dp.addr(t, "acme")
	addr := netip.MustParseAddr("127.1.0.80")
	s.cluster.put(core.Remote{ID: "old", Network: "acme/web", IP: addr, Names: []string{"older"}, Host: "h1", Version: 1})
	s.cluster.put(core.Remote{ID: "new", Network: "acme/web", IP: addr, Names: []string{"newer"}, Host: "h2", Version: 5})
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := ask(t, "127.1.0.10", acme, "80.0.1.127.in-addr.arpa.", dns.TypePTR)
		got := []string{}
		if err == nil {
			got = answers(r)
		}
		if len(got) == 1 && strings.HasPrefix(got[0], "newer.") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PTR of %s: %v %v, want the newer claim's name", addr, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
