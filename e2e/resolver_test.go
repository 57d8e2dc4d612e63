package e2e_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tenet-net/tenet/e2e"
)

// asker queries Docker's embedded DNS (127.0.0.11) from inside a
// container's namespace, as the container's own resolver does: names the
// engine does not know go on from there to the engine's DNS servers.
type asker struct {
	t    testing.TB
	name string
	conn *net.UDPConn
}

func newAsker(t testing.TB, e *e2e.Engine, container string) *asker {
	t.Helper()
	ns, err := e.ContainerNetns(t.Context(), container)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e2e.DialUDPIn(ns, netip.MustParseAddrPort("127.0.0.11:53"))
	if err != nil {
		t.Fatalf("socket in %s: %v", container, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &asker{t: t, name: container, conn: conn}
}

// lookup returns the sorted answers (addresses, or PTR targets) and the
// response code.
func (a *asker) lookup(name string, qtype uint16) ([]string, int, error) {
	r, _, err := e2e.Query(a.conn, name, qtype)
	if err != nil {
		return nil, 0, fmt.Errorf("%s asks %s %s: %w", a.name, dns.TypeToString[qtype], name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.PTR:
			out = append(out, rr.Ptr)
		}
	}
	slices.Sort(out)
	return out, r.Rcode, nil
}

// await waits until name resolves (qtype) to exactly want.
func (a *asker) await(name string, qtype uint16, want ...string) {
	a.t.Helper()
	slices.Sort(want)
	e2e.Eventually(a.t, 10*time.Second, func() error {
		got, rcode, err := a.lookup(name, qtype)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: %s %s = %v (%s), want %v", a.name, dns.TypeToString[qtype], name, got, dns.RcodeToString[rcode], want)
		}
		return nil
	})
}

// never checks, over a few tries, that name gets no address.
func (a *asker) never(name string) {
	a.t.Helper()
	for range 3 {
		got, rcode, err := a.lookup(name, dns.TypeA)
		if err != nil {
			a.t.Fatal(err)
		}
		if len(got) > 0 || rcode == dns.RcodeSuccess {
			a.t.Errorf("%s resolved %s: %v (%s)", a.name, name, got, dns.RcodeToString[rcode])
			return
		}
	}
}

// tcpLookup asks server over TCP from container's namespace for name's
// addresses, sorted.
func tcpLookup(t testing.TB, e *e2e.Engine, container, server, name string) ([]string, error) {
	ns, err := e.ContainerNetns(t.Context(), container)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	if err := e2e.InNetns(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp4", server, 3*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Net: "tcp", Timeout: 3 * time.Second}
	r, _, err := c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func runWith(t testing.TB, e *e2e.Engine, name, network, ip string, extra ...string) {
	t.Helper()
	args := []string{"run", "-d", "--name", name, "--network", network}
	if ip != "" {
		args = append(args, "--ip", ip)
	}
	args = append(args, extra...)
	if _, err := e.Docker(t.Context(), append(args, e2e.ImageName, "sleep", "3600")...); err != nil {
		t.Fatal(err)
	}
}

// TestNamesResolveOnEveryHost (issue 14): a container finds the containers
// of its tenant network on other hosts by name, alias and name.network,
// and their names by address; containers sharing an alias all answer;
// names of another network or tenant never resolve, even the same name on
// the same subnet; external names still resolve; a removed container stops
// resolving; a tenetd restart loses no name.
func TestNamesResolveOnEveryHost(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	c.StartTenetds(t)
	e2e.ServeUpstreamDNS(t, c.Testbed, map[string]string{"example.test": "203.0.113.80"})
	h0, h1, h2 := c.Engine(0), c.Engine(1), c.Engine(2)
	web := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	other := createNetwork(t, c, "acme", "other", "10.2.0.0/24")
	beta := createNetwork(t, c, "beta", "web", "10.1.0.0/24") // the same subnet, another tenant
	runWith(t, h0, "a0", web, "10.1.0.10")
	runWith(t, h1, "a1", web, "10.1.0.74", "--network-alias", "api", "--network-alias", "shared")
	runWith(t, h2, "a2", web, "10.1.0.138", "--network-alias", "shared")
	runWith(t, h2, "db", web, "10.1.0.30")
	runWith(t, h1, "secret", other, "10.2.0.5")
	runWith(t, h1, "db-beta", beta, "10.1.0.20", "--network-alias", "db")
	runWith(t, h0, "b0", beta, "10.1.0.11")

	a := newAsker(t, h0, "a0")
	a.await("a1", dns.TypeA, "10.1.0.74")
	a.await("api", dns.TypeA, "10.1.0.74")
	a.await("a1."+web, dns.TypeA, "10.1.0.74")
	a.await("shared", dns.TypeA, "10.1.0.74", "10.1.0.138")
	a.await("74.0.1.10.in-addr.arpa", dns.TypePTR, "a1."+web+".")
	a.await("db", dns.TypeA, "10.1.0.30")
	a.await("example.test", dns.TypeA, "203.0.113.80")
	// Docker answers a name its own engine holds with its own containers
	// only; the answer's tap adds the other hosts'.
	a2 := newAsker(t, h2, "a2")
	a2.await("shared", dns.TypeA, "10.1.0.74", "10.1.0.138")
	a2.await("shared."+web, dns.TypeA, "10.1.0.74", "10.1.0.138")
	a2.await("a2", dns.TypeA, "10.1.0.138")
	a2.await("a1", dns.TypeA, "10.1.0.74")
	a.never("secret")          // another network of the same tenant
	a.never("db-beta")         // another tenant
	a.never("a1." + other)     // not a name of that network
	a.never("secret." + other) // not asked from that network
	if out, err := h0.Docker(t.Context(), "exec", "a0", "ping", "-c1", "-W2", "a2"); err != nil {
		t.Errorf("ping a2 from a0 by name: %v: %s", err, out)
	}
	// Over TCP (a client's retry after a truncated answer), through
	// Docker's embedded DNS and straight to the resolver.
	for _, server := range []string{"127.0.0.11:53", "169.254.53.53:53"} {
		got, err := tcpLookup(t, h0, "a0", server, "shared")
		if err != nil || !slices.Equal(got, []string{"10.1.0.138", "10.1.0.74"}) {
			t.Errorf("shared over TCP to %s: %v %v", server, got, err)
		}
	}
	// tenetctl endpoint ls on h0 names the containers of other hosts.
	out, err := c.Hosts[0].Run(t.Context(), c.Dir+"/tenetctl", "endpoint", "ls", "--network", "acme/web", "--json")
	if err != nil {
		t.Fatalf("tenetctl endpoint ls: %v: %s", err, out)
	}
	var eps []struct {
		Name    string   `json:"name"`
		Aliases []string `json:"aliases"`
		Host    string   `json:"host"`
	}
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		t.Fatalf("tenetctl endpoint ls --json: %v: %s", err, out)
	}
	var named []string
	for _, e := range eps {
		named = append(named, fmt.Sprintf("%s@%s%v", e.Name, e.Host, e.Aliases))
	}
	slices.Sort(named)
	if want := []string{"a0@h0[]", "a1@h1[api shared]", "a2@h2[shared]", "db@h2[]"}; !slices.Equal(named, want) {
		t.Errorf("endpoint ls on h0: %v, want %v", named, want)
	}

	b := newAsker(t, h0, "b0")
	b.await("db", dns.TypeA, "10.1.0.20")
	b.await("db-beta", dns.TypeA, "10.1.0.20")
	b.never("a1")

	// Removed: gone within a second (measured from docker rm returning).
	if _, err := h1.Docker(t.Context(), "rm", "-f", "a1"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	a.await("a1", dns.TypeA)
	t.Logf("a1 stopped resolving on h0 %v after docker rm returned on h1", time.Since(removed).Round(time.Millisecond))
	a.await("shared", dns.TypeA, "10.1.0.138")
	a2.await("shared", dns.TypeA, "10.1.0.138")

	// The tap fails open: with tenetd on h2 killed, Docker's answers reach
	// its containers untouched, external names resolve; back, it widens
	// again.
	runWith(t, h0, "s0", web, "10.1.0.12", "--network-alias", "shared")
	a2.await("shared", dns.TypeA, "10.1.0.12", "10.1.0.138")
	td, err := c.StopTenetd(t.Context(), "h2", true)
	if err != nil {
		t.Fatal(err)
	}
	a2.await("shared", dns.TypeA, "10.1.0.138")
	a2.await("example.test", dns.TypeA, "203.0.113.80")
	if err := td.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	a2.await("shared", dns.TypeA, "10.1.0.12", "10.1.0.138")

	// Stopped: gone; started again: back, with its address. Restarted:
	// the same.
	if _, err := h2.Docker(t.Context(), "stop", "-t", "0", "db"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	a.await("db", dns.TypeA)
	t.Logf("db stopped resolving on h0 %v after docker stop returned on h2", time.Since(stopped).Round(time.Millisecond))
	if _, err := h2.Docker(t.Context(), "start", "db"); err != nil {
		t.Fatal(err)
	}
	a.await("db", dns.TypeA, "10.1.0.30")
	runWith(t, h2, "dyn", web, "") // an address of Docker's choice
	ipOf := func() string {
		out, err := h2.Docker(t.Context(), "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "dyn")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	before := ipOf()
	a.await("dyn", dns.TypeA, before)
	if _, err := h2.Docker(t.Context(), "restart", "-t", "0", "dyn"); err != nil {
		t.Fatal(err)
	}
	if after := ipOf(); after != before {
		t.Errorf("dyn restarted with address %s, had %s", after, before)
	}
	a.await("dyn", dns.TypeA, before)

	// A tenetd restart (here and there) loses no name.
	for _, h := range []string{"h0", "h2"} {
		if err := c.RestartTenetd(t.Context(), h, false); err != nil {
			t.Fatal(err)
		}
	}
	restarted := time.Now()
	a.await("a2", dns.TypeA, "10.1.0.138")
	t.Logf("a2 resolved on h0 %v after tenetd on h0 and h2 were back", time.Since(restarted).Round(time.Millisecond))
	a.await("db", dns.TypeA, "10.1.0.30")
	a.await("dyn", dns.TypeA, before)
	a.await("example.test", dns.TypeA, "203.0.113.80")
	if t.Failed() {
		out, _ := c.Hosts[0].Run(t.Context(), "sh", "-c", "ip netns exec tenet-acme ip addr; ip netns exec tenet-acme nft list ruleset")
		t.Log(strings.TrimSpace(out))
	}
}

// TestResolverOnInternalNetworksUnderAttack (issue 14): containers on an
// --internal network (no gateway: Docker's Join gets an on-link route to
// the resolver) resolve each other's names across hosts, and get a quick
// refusal, not a timeout, for external names (the network reaches nothing
// outside), over UDP and TCP. Malformed, oversized and flooding queries sent straight to the
// resolver neither crash it nor stop it answering other containers.
func TestResolverOnInternalNetworksUnderAttack(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	e2e.ServeUpstreamDNS(t, c.Testbed, map[string]string{"example.test": "203.0.113.80"})
	ctx := t.Context()
	h0, h1 := c.Engine(0), c.Engine(1)
	for _, e := range c.Engines {
		if _, err := e.Docker(ctx, "network", "create", "-d", "tenet", "--internal", "--ipam-driver", "tenet", "--ipam-opt", "tenant=acme",
			"-o", "tenant=acme", "-o", "network=back", "--subnet", "10.5.0.0/24", "acme-back"); err != nil {
			t.Fatal(err)
		}
	}
	runWith(t, h0, "i0", "acme-back", "10.5.0.10")
	runWith(t, h0, "i0b", "acme-back", "10.5.0.11")
	runWith(t, h1, "i1", "acme-back", "10.5.0.74", "--network-alias", "store")
	a := newAsker(t, h0, "i0")
	a.await("i1", dns.TypeA, "10.5.0.74")
	a.await("store.acme-back", dns.TypeA, "10.5.0.74")
	a.await("74.0.5.10.in-addr.arpa", dns.TypePTR, "i1.acme-back.")
	start := time.Now()
	got, rcode, err := a.lookup("example.test", dns.TypeA)
	if err != nil || len(got) > 0 {
		t.Errorf("external name from an internal network: %v %s %v", got, dns.RcodeToString[rcode], err)
	}
	t.Logf("external name from an internal network: %s after %v", dns.RcodeToString[rcode], time.Since(start).Round(time.Millisecond))
	// Over TCP (a client's retry after a truncated answer), through
	// Docker's embedded DNS and straight to the resolver: the tenant's
	// namespace has no route back to an internal network, so the answer
	// needs the resolver's socket on the network's bridge.
	for _, server := range []string{"127.0.0.11:53", "169.254.53.53:53"} {
		e2e.Eventually(t, 10*time.Second, func() error {
			got, err := tcpLookup(t, h0, "i0", server, "store")
			if err != nil || !slices.Equal(got, []string{"10.5.0.74"}) {
				return fmt.Errorf("store over TCP to %s from an internal network: %v %v", server, got, err)
			}
			return nil
		})
	}

	// On a second internal network too (connected later: Docker would
	// fail the connect on a second identical route), i0 resolves the
	// names of both, as Docker does for a container on several networks.
	for _, e := range c.Engines {
		if _, err := e.Docker(ctx, "network", "create", "-d", "tenet", "--internal", "--ipam-driver", "tenet", "--ipam-opt", "tenant=acme",
			"-o", "tenant=acme", "-o", "network=back2", "--subnet", "10.6.0.0/24", "acme-back2"); err != nil {
			t.Fatal(err)
		}
	}
	runWith(t, h1, "j1", "acme-back2", "10.6.0.74")
	if out, err := h0.Docker(ctx, "network", "connect", "--ip", "10.6.0.10", "acme-back2", "i0"); err != nil {
		t.Fatalf("connect i0 to a second internal network: %v: %s", err, out)
	}
	a.await("j1", dns.TypeA, "10.6.0.74")
	a.await("j1.acme-back2", dns.TypeA, "10.6.0.74")
	if got, err := tcpLookup(t, h0, "i0", "169.254.53.53:53", "j1"); err != nil || !slices.Equal(got, []string{"10.6.0.74"}) {
		t.Errorf("j1 over TCP from i0: %v %v", got, err)
	}
	a.await("i1", dns.TypeA, "10.5.0.74")
	b0 := newAsker(t, h0, "i0b")
	b0.never("j1") // i0b is not on acme-back2

	// Straight to the resolver, from i0.
	ns, err := h0.ContainerNetns(ctx, "i0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e2e.DialUDPIn(ns, netip.MustParseAddrPort("169.254.53.53:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r, _, err := e2e.Query(conn, "i1", dns.TypeA); err != nil || len(r.Answer) != 1 {
		t.Fatalf("direct query for i1: %v %v", r, err)
	}
	valid, _ := func() *dns.Msg { m := new(dns.Msg); m.SetQuestion("i1.", dns.TypeA); return m }().Pack()
	hostile := [][]byte{
		{0xde, 0xad},                                                 // shorter than a header
		{0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0},                         // five questions, none there
		{0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c},             // a name pointing at itself
		append([]byte{0, 3, 0x80, 0}, valid[4:]...),                  // a response
		append(valid[:len(valid):len(valid)], make([]byte, 4000)...), // oversized
		make([]byte, 65000),
	}
	for _, b := range hostile {
		_, _ = conn.Write(b)
	}
	for range 5000 { // a flood, far above the per-source rate
		_, _ = conn.Write(valid)
	}
	// Another container is answered at once; the flooder again soon.
	b0.await("i1", dns.TypeA, "10.5.0.74")
	a.await("i1", dns.TypeA, "10.5.0.74")
	select {
	case <-c.Tenetds[0].Daemon.Done():
		t.Error("tenetd on h0 exited during the attack")
	default:
	}
}

// TestDockerNetworksResolveWithoutTenetd (issue 14): containers on
// Docker's own networks, which get the engine's dns setting too, resolve
// external names through it (docker0 from resolv.conf, a user-defined
// bridge through the embedded DNS), also while tenetd is stopped: their
// queries are translated to the upstream server in the host, not served
// by tenetd. A Tenet container resolves them too while tenetd is stopped:
// the resolver's port is closed, and Docker asks its next server.
func TestDockerNetworksResolveWithoutTenetd(t *testing.T) {
	c := e2e.NewCluster(t, 1)
	ds := c.StartTenetds(t)
	e2e.ServeUpstreamDNS(t, c.Testbed, map[string]string{"example.test": "203.0.113.80"})
	ctx := t.Context()
	h0 := c.Engine(0)
	if _, err := h0.Docker(ctx, "network", "create", "-d", "bridge", "--subnet", "10.8.0.0/24", "localbr"); err != nil {
		t.Fatal(err)
	}
	runWith(t, h0, "brc", "localbr", "10.8.0.10")
	if _, err := h0.Docker(ctx, "run", "-d", "--name", "d0c", e2e.ImageName, "sleep", "3600"); err != nil {
		t.Fatal(err)
	}
	if _, err := h0.Docker(ctx, "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant=acme",
		"-o", "tenant=acme", "-o", "network=web", "--subnet", "10.1.0.0/24", "acme-web"); err != nil {
		t.Fatal(err)
	}
	runWith(t, h0, "tc0", "acme-web", "10.1.0.10")
	ns, err := h0.ContainerNetns(ctx, "d0c")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := e2e.DialUDPIn(ns, netip.MustParseAddrPort("169.254.53.53:53"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	docker0 := &asker{t: t, name: "d0c", conn: conn}
	bridge, tenet := newAsker(t, h0, "brc"), newAsker(t, h0, "tc0")
	for _, a := range []*asker{docker0, bridge, tenet} {
		a.await("example.test", dns.TypeA, "203.0.113.80")
	}
	if out, err := h0.Docker(ctx, "exec", "d0c", "cat", "/etc/resolv.conf"); err != nil || !strings.Contains(out, "nameserver 169.254.53.53") {
		t.Errorf("docker0 container's resolv.conf: %v %s", err, out)
	}
	if err := ds[0].Daemon.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*asker{docker0, bridge, tenet} {
		start := time.Now()
		got, rcode, err := a.lookup("example.test", dns.TypeA)
		if err != nil || !slices.Equal(got, []string{"203.0.113.80"}) {
			t.Errorf("%s with tenetd stopped: %v %s %v", a.name, got, dns.RcodeToString[rcode], err)
		}
		t.Logf("%s resolved an external name with tenetd stopped in %v", a.name, time.Since(start).Round(time.Microsecond))
	}
}
