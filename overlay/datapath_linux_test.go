package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay"
	"github.com/tenet-net/tenet/overlay/nstest"
)

// host is one simulated host of the e2e testbed (namespaces only, no Docker
// engine) with a Datapath programming it.
type host struct {
	name  string
	netns string // the host's network namespace
	vtep  netip.Addr
	dp    *overlay.Datapath
}

// newHosts brings up n simulated hosts on an underlay and opens a Datapath
// on each. Everything is removed when t ends.
func newHosts(t testing.TB, n int) []*host {
	t.Helper()
	nstest.RequireRoot(t)
	tb, err := e2e.Up(t.Context(), e2e.Options{Hosts: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Down(context.Background()); err != nil {
			t.Error(err)
		}
	})
	var hs []*host
	for _, h := range tb.Hosts {
		cfg := overlay.DefaultConfig()
		cfg.VTEP = h.Underlay().Addr()
		cfg.HostNetns = "/run/netns/" + h.Netns()
		cfg.NetnsPrefix = h.Netns() + "-"
		dp, err := overlay.New(cfg)
		nstest.SkipIfNotSupported(t, err, overlay.ErrNotSupported)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = dp.Close() })
		hs = append(hs, &host{name: h.Name(), netns: h.Netns(), vtep: cfg.VTEP, dp: dp})
	}
	return hs
}

// container is a network namespace standing in for a container: it holds
// the endpoint's container-side veth end, moved there as Docker would.
type container struct {
	ns  string
	ip  netip.Addr
	mac net.HardwareAddr
}

// attach moves endpoint ep's container end from h's namespace into a new
// namespace, names it eth0 and gives it ep's first address with prefix bits.
func attach(t testing.TB, h *host, ep overlay.Endpoint, bits int) *container {
	t.Helper()
	name := nstest.NewNetNS(t)
	hostNS, err := netns.GetFromName(h.netns)
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()
	cNS, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer cNS.Close()
	hh, err := netlink.NewHandleAt(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	ch, err := netlink.NewHandleAt(cNS)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// No IPv6 in IPv4 test containers: its DAD, MLD and router
	// solicitations would muddy the captures the isolation checks read.
	// IPv6 ones skip DAD, so their address is usable at once.
	sysctls := []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
	if ep.IPs[0].Is6() {
		sysctls = []string{"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=0"}
	}
	for _, kv := range sysctls {
		if out, err := exec.Command("ip", "netns", "exec", name, "sysctl", "-qw", kv).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s in %s: %v: %s", kv, name, err, out)
		}
	}
	link, err := hh.LinkByName(overlay.ContainerVeth(ep.ID))
	if err != nil {
		t.Fatalf("container end of %s on %s: %v", ep.ID, h.name, err)
	}
	if err := hh.LinkSetNsFd(link, int(cNS)); err != nil {
		t.Fatal(err)
	}
	link, err = ch.LinkByName(overlay.ContainerVeth(ep.ID))
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.LinkSetName(link, "eth0"); err != nil {
		t.Fatal(err)
	}
	ip := ep.IPs[0]
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, ip.BitLen())}}
	if ip.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := ch.AddrAdd(link, addr); err != nil {
		t.Fatalf("add %v to the container of %s: %v", ip, ep.ID, err)
	}
	for _, l := range []string{"lo", "eth0"} {
		ll, err := ch.LinkByName(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.LinkSetUp(ll); err != nil {
			t.Fatal(err)
		}
	}
	return &container{ns: name, ip: ip, mac: link.Attrs().HardwareAddr}
}

// in runs a command inside the container's namespace.
func (c *container) in(ctx context.Context, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.ns}, argv...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), c.ns, err, out)
	}
	return string(out), nil
}

func (c *container) ping(ctx context.Context, ip netip.Addr) error {
	_, err := c.in(ctx, "ping", "-c1", "-W2", ip.String())
	return err
}

// capture runs tcpdump on dev in namespace ns with a filter. Packets are
// handed over at once (--immediate-mode); seen returns those printed so far.
type capture struct {
	cancel context.CancelFunc
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func startCapture(t *testing.T, ns, dev, filter string) *capture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &capture{cancel: cancel}
	c.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-l", "-nn", "-e", "-i", dev, filter)
	c.cmd.Stdout = c
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	t.Cleanup(func() { c.stop() })
	ready := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var seen strings.Builder
		for {
			n, err := stderr.Read(buf)
			seen.Write(buf[:n])
			if strings.Contains(seen.String(), "listening on") || err != nil {
				ready <- seen.String()
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
	}()
	select {
	case msg := <-ready:
		if !strings.Contains(msg, "listening on") {
			t.Fatalf("tcpdump in %s: %s", ns, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not start")
	}
	return c
}

func (c *capture) seen() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var pkts []string
	for _, l := range strings.Split(c.out.String(), "\n") {
		if strings.TrimSpace(l) != "" {
			pkts = append(pkts, l)
		}
	}
	return pkts
}

// stop ends tcpdump and returns every packet it printed.
func (c *capture) stop() []string {
	c.cancel()
	_ = c.cmd.Wait()
	return c.seen()
}

// await polls until the capture has printed a packet containing want.
func (c *capture) await(t *testing.T, want string) {
	t.Helper()
	e2e.Eventually(t, 5*time.Second, func() error {
		for _, p := range c.seen() {
			if strings.Contains(p, want) {
				return nil
			}
		}
		return fmt.Errorf("no packet with %q captured; saw %q", want, c.seen())
	})
}

func matching(pkts []string, want string) []string {
	var out []string
	for _, p := range pkts {
		if strings.Contains(p, want) {
			out = append(out, p)
		}
	}
	return out
}

func ep(id string, vni uint32, ip string) overlay.Endpoint {
	return overlay.Endpoint{ID: id, VNI: vni, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
}

func remoteOf(e overlay.Endpoint, on *host) overlay.Remote {
	return overlay.Remote{VNI: e.VNI, MAC: overlay.DeriveMAC(e.IPs, e.ID), IPs: e.IPs, VTEP: on.vtep}
}

// cluster is a small control plane for tests: it gives each host the
// networks it has, its own endpoints, and everybody else's as remotes.
type cluster struct {
	hosts    []*host
	networks []overlay.Network
	eps      map[*host][]overlay.Endpoint
}

func (c *cluster) state(h *host) overlay.State {
	var s overlay.State
	present := map[uint32]bool{}
	for _, e := range c.eps[h] {
		present[e.VNI] = true
	}
	for _, n := range c.networks {
		if !present[n.VNI] {
			continue
		}
		for _, o := range c.hosts {
			if o == h {
				continue
			}
			for _, e := range c.eps[o] {
				if e.VNI == n.VNI {
					n.Peers = append(n.Peers, o.vtep)
					break
				}
			}
		}
		s.Networks = append(s.Networks, n)
	}
	s.Endpoints = c.eps[h]
	for _, o := range c.hosts {
		if o == h {
			continue
		}
		for _, e := range c.eps[o] {
			if present[e.VNI] {
				s.Remotes = append(s.Remotes, remoteOf(e, o))
			}
		}
	}
	return s
}

func (c *cluster) reconcile(t *testing.T) {
	t.Helper()
	for _, h := range c.hosts {
		if err := h.dp.Reconcile(t.Context(), c.state(h)); err != nil {
			t.Fatalf("%s: %v", h.name, err)
		}
	}
}

func TestEveryEndpointReachesEveryOtherAcrossHosts(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{
			hs[0]: {ep("e1", 4097, "10.1.0.1"), ep("e2", 4097, "10.1.0.2")},
			hs[1]: {ep("e3", 4097, "10.1.0.3"), ep("e4", 4097, "10.1.0.4")},
		}}
	c.reconcile(t)
	var all []*container
	for _, h := range hs {
		for _, e := range c.eps[h] {
			all = append(all, attach(t, h, e, 24))
		}
	}
	for _, a := range all {
		if got, want := a.mac.String(), overlay.DeriveMAC([]netip.Addr{a.ip}, "").String(); got != want {
			t.Errorf("container %s has mac %s, want %s (derived from its ip)", a.ip, got, want)
		}
		for _, b := range all {
			if a != b {
				if err := a.ping(ctx, b.ip); err != nil {
					t.Errorf("%s -> %s: %v", a.ip, b.ip, err)
				}
			}
		}
	}

	// ARP for a remote IP is answered by h0's VXLAN device from its
	// neighbour table: no ARP crosses the underlay. The capture sees any
	// VXLAN datagram whose inner frame is ARP (ethertype at UDP offset 28).
	if _, err := all[0].in(ctx, "ip", "neigh", "flush", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	arp := startCapture(t, hs[0].netns, "eth0", "udp port 4789 and udp[28:2] = 0x0806")
	out, err := all[0].in(ctx, "busybox", "arping", "-c", "3", "-w", "3", "-I", "eth0", "10.1.0.3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Received 3 response") || !strings.Contains(out, overlay.DeriveMAC(c.eps[hs[1]][0].IPs, "").String()) {
		t.Errorf("arping 10.1.0.3 from h0 got no answer with e3's MAC:\n%s", out)
	}
	if pkts := arp.stop(); len(pkts) > 0 {
		t.Errorf("ARP crossed the underlay during arping:\n%s", strings.Join(pkts, "\n"))
	}
	// The same filter with IPv4's ethertype does see tunnelled traffic, so
	// the empty capture above means something.
	ipv4 := startCapture(t, hs[0].netns, "eth0", "udp port 4789 and udp[28:2] = 0x0800")
	if err := all[0].ping(ctx, all[2].ip); err != nil {
		t.Fatal(err)
	}
	ipv4.await(t, "4789")
}

func TestTenantsWithTheSameSubnetReachOnlyTheirOwn(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	a0, a1 := ep("a0", 4097, "10.1.0.1"), ep("a1", 4097, "10.1.0.2")
	g0, g1 := ep("g0", 4098, "10.1.0.1"), ep("g1", 4098, "10.1.0.3")
	c := &cluster{hosts: hs, networks: []overlay.Network{
		{Tenant: "acme", Name: "web", VNI: 4097}, {Tenant: "globex", Name: "web", VNI: 4098}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {a0, g0}, hs[1]: {a1, g1}}}
	c.reconcile(t)
	ca0, ca1 := attach(t, hs[0], a0, 24), attach(t, hs[1], a1, 24)
	cg0, cg1 := attach(t, hs[0], g0, 24), attach(t, hs[1], g1, 24)

	for _, p := range [][2]*container{{ca0, ca1}, {ca1, ca0}, {cg0, cg1}, {cg1, cg0}} {
		if err := p[0].ping(ctx, p[1].ip); err != nil {
			t.Errorf("own tenant: %v", err)
		}
	}
	// acme's a0 tries globex's g1, first by IP, then with a forged ARP entry
	// naming g1's MAC; globex's g0 tries acme's a1. None gets through, and
	// the victims receive nothing.
	// Attack pings have a size per tenant (ICMP length 1309 from acme, 1310
	// from globex), so a capture tells whose packet arrived: both tenants
	// use 10.1.0.1 and the same derived MAC. Unknown unicast is flooded
	// within the sender's own network, so the attacker's own peers may see
	// it; the other tenant's endpoints must not.
	const fromAcme, fromGlobex = "length 1309", "length 1310"
	attack := func(from *container, size string, to netip.Addr) error {
		_, err := from.in(ctx, "ping", "-c1", "-W1", "-s", size, to.String())
		return err
	}
	capG1, capA1 := startCapture(t, cg1.ns, "eth0", "icmp"), startCapture(t, ca1.ns, "eth0", "icmp")
	if err := attack(ca0, "1301", cg1.ip); err == nil {
		t.Error("acme reached globex's 10.1.0.3")
	}
	if _, err := ca0.in(ctx, "ip", "neigh", "replace", cg1.ip.String(), "lladdr", cg1.mac.String(), "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := attack(ca0, "1301", cg1.ip); err == nil {
		t.Error("acme reached globex's 10.1.0.3 with a forged neighbour entry")
	}
	if _, err := cg0.in(ctx, "ip", "neigh", "replace", ca1.ip.String(), "lladdr", ca1.mac.String(), "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := attack(cg0, "1302", ca1.ip); err == nil {
		t.Error("globex reached acme's 10.1.0.2 with a forged neighbour entry")
	}
	// Legitimate traffic of the same shapes still flows, and is seen.
	if err := attack(ca0, "1301", ca1.ip); err != nil {
		t.Errorf("acme's own ping: %v", err)
	}
	if err := attack(cg0, "1302", cg1.ip); err != nil {
		t.Errorf("globex's own ping: %v", err)
	}
	capA1.await(t, fromAcme)
	capG1.await(t, fromGlobex)
	if pkts := matching(capG1.stop(), fromAcme); len(pkts) > 0 {
		t.Errorf("globex's g1 received acme's packets:\n%s", strings.Join(pkts, "\n"))
	}
	if pkts := matching(capA1.stop(), fromGlobex); len(pkts) > 0 {
		t.Errorf("acme's a1 received globex's packets:\n%s", strings.Join(pkts, "\n"))
	}
}

func TestNetworksOfOneTenantStaySeparate(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	w0, w1 := ep("w0", 4097, "10.1.0.1"), ep("w1", 4097, "10.1.0.2")
	d1 := ep("d1", 4099, "10.2.0.1")
	c := &cluster{hosts: hs, networks: []overlay.Network{
		{Tenant: "acme", Name: "web", VNI: 4097}, {Tenant: "acme", Name: "db", VNI: 4099}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {w0}, hs[1]: {w1, d1}}}
	c.reconcile(t)
	cw0, cw1, cd1 := attach(t, hs[0], w0, 24), attach(t, hs[1], w1, 24), attach(t, hs[1], d1, 24)
	if err := cw0.ping(ctx, cw1.ip); err != nil {
		t.Fatalf("same network: %v", err)
	}
	// w0 claims db's subnet is on its link and knows d1's MAC: frames for
	// d1 still have no way from web's bridge to db's.
	for _, cmd := range [][]string{
		{"ip", "route", "add", "10.2.0.0/24", "dev", "eth0"},
		{"ip", "neigh", "replace", cd1.ip.String(), "lladdr", cd1.mac.String(), "dev", "eth0"},
	} {
		if _, err := cw0.in(ctx, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	capD1 := startCapture(t, cd1.ns, "eth0", "icmp")
	if err := cw0.ping(ctx, cd1.ip); err == nil {
		t.Error("web's w0 reached db's d1")
	}
	if pkts := capD1.stop(); len(pkts) > 0 {
		t.Errorf("db's d1 received packets from web:\n%s", strings.Join(pkts, "\n"))
	}
}

func TestReconcileIsIdempotentAdoptsAfterRestartAndCleansUp(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	e1, e2 := ep("e1", 4097, "10.1.0.1"), ep("e2", 4097, "10.1.0.2")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	c.reconcile(t)
	c1, c2 := attach(t, hs[0], e1, 24), attach(t, hs[1], e2, 24)
	first, err := hs[0].dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := hs[0].dp.Desired(c.state(hs[0]))
	if err != nil {
		t.Fatal(err)
	}
	if first.String() != want.String() {
		t.Fatalf("kernel state:\n%s\nwant:\n%s", first, want)
	}
	t.Logf("h0 kernel state:\n%s", first)
	if out, err := exec.Command("ip", "-n", hs[0].netns+"-acme", "-6", "addr").CombinedOutput(); err != nil || strings.Contains(string(out), "scope link") || strings.Contains(string(out), "scope global") {
		t.Errorf("the tenant namespace has IPv6 addresses (it must stay quiet on tenant networks): %v\n%s", err, out)
	}
	for i := range 3 {
		c.reconcile(t)
		again, err := hs[0].dp.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if again.String() != first.String() {
			t.Fatalf("reconcile %d changed the kernel:\n%s\nbefore:\n%s", i+2, again, first)
		}
	}

	// A restart: the old Datapath is gone, a new one adopts the kernel state
	// while c1 pings c2 every 10 ms. Not one reply may be lost.
	ping := exec.CommandContext(ctx, "ip", "netns", "exec", c1.ns, "ping", "-c", "200", "-i", "0.01", "-W", "1", c2.ip.String())
	var out strings.Builder
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	_ = hs[0].dp.Close()
	cfg := overlay.DefaultConfig()
	cfg.VTEP, cfg.HostNetns, cfg.NetnsPrefix = hs[0].vtep, "/run/netns/"+hs[0].netns, hs[0].netns+"-"
	dp, err := overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	hs[0].dp = dp
	observed, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ops := overlay.Plan(want, observed); len(ops) != 0 {
		t.Errorf("after restart, plan is not empty: %v", ops)
	}
	c.reconcile(t)
	if err := ping.Wait(); err != nil || !strings.Contains(out.String(), " 0% packet loss") {
		t.Errorf("ping during restart: %v\n%s", err, out.String())
	}

	// Repair: remove an FDB entry, a neighbour entry and the bridge port by
	// hand, add a stale entry; reconcile puts it right.
	tenantNS := hs[0].netns + "-acme"
	for _, cmd := range [][]string{
		{"bridge", "fdb", "del", remoteOf(e2, hs[1]).MAC.String(), "dev", "vx4097", "dst", hs[1].vtep.String()},
		{"ip", "neigh", "del", "10.1.0.2", "dev", "vx4097"},
		{"ip", "link", "set", "vx4097", "nomaster"},
		{"ip", "neigh", "add", "10.1.0.99", "lladdr", "02:00:00:00:00:99", "dev", "vx4097", "nud", "permanent"},
		{"bridge", "fdb", "append", "02:00:00:00:00:99", "dev", "vx4097", "dst", "198.51.100.99", "self", "permanent"},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", tenantNS}, cmd...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd, err, out)
		}
	}
	c.reconcile(t)
	repaired, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if repaired.String() != first.String() {
		t.Errorf("after repair:\n%s\nwant:\n%s", repaired, first)
	}
	if err := c1.ping(ctx, c2.ip); err != nil {
		t.Errorf("after repair: %v", err)
	}

	// Delete: nothing of Tenet's is left on the host.
	if err := dp.Reconcile(ctx, overlay.State{}); err != nil {
		t.Fatal(err)
	}
	empty, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := empty.String(); s != "" {
		t.Errorf("after deleting everything, the kernel still holds:\n%s", s)
	}
	if _, err := netns.GetFromName(tenantNS); err == nil {
		t.Errorf("namespace %s still exists", tenantNS)
	}
}

func TestThousandEndpointCyclesLeaveNothingBehind(t *testing.T) {
	hs := newHosts(t, 1)
	if testing.Short() {
		t.Skip("slow")
	}
	ctx := t.Context()
	h := hs[0]
	peer := netip.MustParseAddr("198.51.100.99")
	base := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097, Peers: []netip.Addr{peer}}}}
	if err := h.dp.Reconcile(ctx, base); err != nil {
		t.Fatal(err)
	}
	before, err := h.dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 1000 {
		s := base
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		rip := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		s.Endpoints = []overlay.Endpoint{{ID: fmt.Sprintf("ep-%d", i), VNI: 4097, IPs: []netip.Addr{ip}}}
		s.Remotes = []overlay.Remote{{VNI: 4097, MAC: overlay.DeriveMAC([]netip.Addr{rip}, ""), IPs: []netip.Addr{rip}, VTEP: peer}}
		if err := h.dp.Reconcile(ctx, s); err != nil {
			t.Fatalf("cycle %d add: %v", i, err)
		}
		if err := h.dp.Reconcile(ctx, base); err != nil {
			t.Fatalf("cycle %d remove: %v", i, err)
		}
	}
	t.Logf("1000 add/remove cycles in %v", time.Since(start).Round(time.Millisecond))
	after, err := h.dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.String() != before.String() {
		t.Errorf("after 1000 cycles:\n%s\nbefore:\n%s", after, before)
	}
	out, err := exec.Command("ip", "-n", h.netns, "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "\n"); n != 2 { // lo and eth0
		t.Errorf("host namespace has %d links, want lo and eth0:\n%s", n, out)
	}
	tn := h.netns + "-acme"
	for _, cmd := range [][]string{{"-o", "link"}, {"neigh", "show", "nud", "permanent"}} {
		out, err := exec.Command("ip", append([]string{"-n", tn}, cmd...)...).CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "tv") || strings.Contains(string(out), "10.2.") {
			t.Errorf("ip %v in %s still lists cycled objects:\n%s", cmd, tn, out)
		}
	}
	out, err = exec.Command("ip", "netns", "exec", tn, "bridge", "fdb", "show", "dev", "vx4097").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; lines > 3 {
		t.Errorf("fdb of vx4097 has %d entries after cycling:\n%s", lines, out)
	}
}

func TestIPv6EndpointsGetNDPEntriesAndNetworkMTUApplies(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	v6 := func(id, ip string) overlay.Endpoint {
		return overlay.Endpoint{ID: id, VNI: 4097, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	}
	e1, e2 := v6("e1", "fd00:1::1"), v6("e2", "fd00:1::2")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097, MTU: 1400}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	c.reconcile(t)
	c1 := attach(t, hs[0], e1, 64)
	c2 := attach(t, hs[1], e2, 64)

	out, err := exec.Command("ip", "-n", hs[0].netns+"-acme", "-6", "neigh", "show", "dev", "vx4097", "nud", "permanent").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "fd00:1::2 lladdr "+overlay.DeriveMAC(e2.IPs, "").String()) {
		t.Errorf("h0 has no NDP entry for fd00:1::2: %v\n%s", err, out)
	}
	// Inner frame at UDP offset 16 (after VXLAN's 8 bytes): ethertype at
	// 28, IPv6 header at 30, ICMPv6 type at 70 (135: neighbour
	// solicitation, 128: echo request).
	ns := startCapture(t, hs[0].netns, "eth0", "udp port 4789 and udp[28:2] = 0x86dd and udp[70] = 135")
	echo := startCapture(t, hs[0].netns, "eth0", "udp port 4789 and udp[28:2] = 0x86dd and udp[70] = 128")
	if _, err := c1.in(ctx, "ping", "-6", "-c1", "-W2", "fd00:1::2"); err != nil {
		t.Error(err)
	}
	if _, err := c2.in(ctx, "ping", "-6", "-c1", "-W2", "fd00:1::1"); err != nil {
		t.Error(err)
	}
	echo.await(t, "ICMP6")
	if pkts := ns.stop(); len(pkts) > 0 {
		t.Errorf("neighbour solicitations crossed the underlay:\n%s", strings.Join(pkts, "\n"))
	}
	// The network's MTU is on the container's end too, and a full-size
	// packet passes unfragmented.
	mtu, err := c1.in(ctx, "cat", "/sys/class/net/eth0/mtu")
	if err != nil || strings.TrimSpace(mtu) != "1400" {
		t.Errorf("container mtu %q (%v), want 1400", mtu, err)
	}
	if _, err := c1.in(ctx, "ping", "-6", "-c1", "-W2", "-M", "do", "-s", "1352", "fd00:1::2"); err != nil {
		t.Errorf("1400-byte packet: %v", err)
	}
}

// withoutHostRules is a snapshot's text without the host's rule set.
func withoutHostRules(s overlay.Snapshot) string {
	var out []string
	for _, l := range strings.Split(s.String(), "\n") {
		if !strings.HasPrefix(l, "host: rules ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestKernelErrorNamesTheNetworkAndLeavesNothing(t *testing.T) {
	hs := newHosts(t, 1)
	h := hs[0]
	// Something else already holds VNI 4097 on the VXLAN port.
	if out, err := exec.Command("ip", "-n", h.netns, "link", "add", "squat", "type", "vxlan", "id", "4097", "dstport", "4789",
		"local", h.vtep.String()).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	before, err := h.dp.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	err = h.dp.Reconcile(t.Context(), overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}}})
	want := "create vxlan vx4097 for network acme/web (vni 4097): file exists"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reconcile = %v, want an error containing %q", err, want)
	}
	after, err := h.dp.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The host's rules (which keep the tunnels from conntrack) are the
	// host's, wanted as long as the state has a network; the tenant's
	// objects must all be gone.
	if withoutHostRules(after) != withoutHostRules(before) {
		t.Errorf("a failed Reconcile left:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := netns.GetFromName(h.netns + "-acme"); err == nil {
		t.Error("the tenant namespace made by the failed Reconcile is still there")
	}
	// One tenant's failure does not keep another from being programmed.
	err = h.dp.Reconcile(t.Context(), overlay.State{Networks: []overlay.Network{
		{Tenant: "acme", Name: "web", VNI: 4097}, {Tenant: "globex", Name: "web", VNI: 5000}}})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Reconcile with a squatted VNI = %v, want %q", err, want)
	}
	if out, err := exec.Command("ip", "-n", h.netns+"-globex", "-o", "link").CombinedOutput(); err != nil || !strings.Contains(string(out), "vx5000") {
		t.Errorf("globex was not programmed next to acme's failure: %v\n%s", err, out)
	}
	if err := h.dp.Reconcile(t.Context(), overlay.State{}); err != nil {
		t.Fatal(err)
	}
	// A VTEP that is not this host's is refused when the datapath opens.
	cfg := overlay.DefaultConfig()
	cfg.VTEP, cfg.HostNetns = netip.MustParseAddr("198.51.100.99"), "/run/netns/"+h.netns
	if _, err := overlay.New(cfg); err == nil || !strings.Contains(err.Error(), "vtep 198.51.100.99: not an address of any interface") {
		t.Errorf("New with a foreign VTEP = %v", err)
	}
	// Bad input is refused before any change.
	err = h.dp.Reconcile(t.Context(), overlay.State{Networks: []overlay.Network{{Tenant: "Acme!", Name: "web", VNI: 1}}})
	if !errors.Is(err, overlay.ErrInvalid) {
		t.Errorf("bad tenant: %v, want ErrInvalid", err)
	}
}

func TestEgressReachesTheUnderlayButNeverAnotherNetwork(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	gw := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	w0, w1 := ep("w0", 4097, "10.1.0.10"), ep("w1", 4097, "10.1.0.11")
	d1 := ep("d1", 4099, "10.2.0.11")
	i0 := ep("i0", 4100, "10.3.0.10")
	c := &cluster{hosts: hs, networks: []overlay.Network{
		{Tenant: "acme", Name: "web", VNI: 4097, Gateway: gw("10.1.0.1/24"), Egress: true},
		{Tenant: "acme", Name: "db", VNI: 4099, Gateway: gw("10.2.0.1/24"), Egress: true},
		{Tenant: "acme", Name: "internal", VNI: 4100, Gateway: gw("10.3.0.1/24")},
		{Tenant: "globex", Name: "web", VNI: 5001, Gateway: gw("10.1.0.1/24"), Egress: true},
	}, eps: map[*host][]overlay.Endpoint{hs[0]: {w0, i0, ep("g0", 5001, "10.1.0.50")}, hs[1]: {w1, d1}}}
	c.reconcile(t)
	withRoute := func(h *host, e overlay.Endpoint, gateway string) *container {
		ct := attach(t, h, e, 24)
		if _, err := ct.in(ctx, "ip", "route", "add", "default", "via", gateway); err != nil {
			t.Fatal(err)
		}
		return ct
	}
	cw0, cw1 := withRoute(hs[0], w0, "10.1.0.1"), withRoute(hs[1], w1, "10.1.0.1")
	cd1, ci0 := withRoute(hs[1], d1, "10.2.0.1"), withRoute(hs[0], i0, "10.3.0.1")
	cg0 := withRoute(hs[0], c.eps[hs[0]][2], "10.1.0.1")

	// Reconcile is still idempotent with egress, and the kernel matches.
	for _, h := range hs {
		want, err := h.dp.Desired(c.state(h))
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.dp.Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("%s kernel:\n%s\nwant:\n%s", h.name, got, want)
		}
		if ops := overlay.Plan(want, got); len(ops) != 0 {
			t.Errorf("%s: second plan not empty: %v", h.name, ops)
		}
	}
	// Egress: the containers reach the other host's underlay address,
	// through the gateway on their own host; their own host itself (its
	// services, its VXLAN socket) they never reach.
	for _, p := range []struct {
		c  *container
		to netip.Addr
	}{{cw0, hs[1].vtep}, {cw1, hs[0].vtep}, {cd1, hs[0].vtep}, {cg0, hs[1].vtep}} {
		if err := p.c.ping(ctx, p.to); err != nil {
			t.Errorf("egress from %s to %s: %v", p.c.ip, p.to, err)
		}
	}
	for _, p := range []struct {
		c  *container
		to string
	}{{cw0, hs[0].vtep.String()}, {cw0, "169.254.0.5"}, {cw1, hs[1].vtep.String()}} {
		if err := p.c.ping(ctx, netip.MustParseAddr(p.to)); err == nil {
			t.Errorf("%s reached its own host at %s", p.c.ip, p.to)
		}
	}
	// If br_netfilter is loaded (Docker loads it) and bridged frames are
	// sent through the router's rules after all, they still pass.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		for _, h := range hs {
			if out, err := exec.Command("ip", "netns", "exec", h.netns+"-acme", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		if err := cw0.ping(ctx, cw1.ip); err != nil {
			t.Errorf("bridged traffic through br_netfilter: %v", err)
		}
	} else {
		t.Log("br_netfilter not loaded: bridged frames never meet the router's rules here")
	}
	// A container cannot inject VXLAN into the underlay (NATed by its host,
	// it would come from a real VTEP): datagrams to the VXLAN port never
	// reach another host; the same to another port do.
	inject := func(port string) {
		if _, err := cw0.in(ctx, "bash", "-c", "echo INJECTED > /dev/udp/"+hs[1].vtep.String()+"/"+port); err != nil {
			t.Fatal(err)
		}
	}
	vx := startCapture(t, hs[1].netns, "eth0", "udp dst port 4789 and udp[8:4] = 0x494e4a45")
	other := startCapture(t, hs[1].netns, "eth0", "udp dst port 4790 and udp[8:4] = 0x494e4a45")
	inject("4789")
	inject("4790")
	other.await(t, "4790")
	if pkts := vx.stop(); len(pkts) > 0 {
		t.Errorf("a container injected VXLAN datagrams into the underlay:\n%s", strings.Join(pkts, "\n"))
	}
	// Nor into its own host's VXLAN socket: the host's input chain drops
	// everything from tenant uplinks (shown above by the pings to the own
	// host, which the same rule stops).
	// Each reaches its own network's gateway on its host's router.
	if err := cw0.ping(ctx, netip.MustParseAddr("10.1.0.1")); err != nil {
		t.Errorf("w0 to its gateway: %v", err)
	}
	// The internal network's container reaches nothing outside.
	if err := ci0.ping(ctx, hs[0].vtep); err == nil {
		t.Error("a container of an internal network reached the underlay")
	}
	// With routing on in the tenant's router, web still never reaches db,
	// nor the internal network, nor another tenant, nor another tenant's
	// uplink: the router forwards only out to the host.
	capD1 := startCapture(t, cd1.ns, "eth0", "icmp")
	capI0 := startCapture(t, ci0.ns, "eth0", "icmp")
	for _, to := range []netip.Addr{cd1.ip, ci0.ip, netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("169.254.0.6")} {
		if err := cw1.ping(ctx, to); err == nil {
			t.Errorf("web's w1 reached %s", to)
		}
	}
	if err := cw0.ping(ctx, ci0.ip); err == nil {
		t.Errorf("web's w0 reached the internal network's i0")
	}
	if pkts := capD1.stop(); len(pkts) > 0 {
		t.Errorf("db's d1 received packets from web:\n%s", strings.Join(pkts, "\n"))
	}
	if pkts := capI0.stop(); len(pkts) > 0 {
		t.Errorf("internal i0 received packets from web:\n%s", strings.Join(pkts, "\n"))
	}
	// Turning egress off removes the uplink and the rules.
	for i := range c.networks {
		c.networks[i].Egress = false
	}
	c.reconcile(t)
	if err := cw0.ping(ctx, hs[0].vtep); err == nil {
		t.Error("egress still works after it was turned off")
	}
	snap, err := hs[0].dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := snap.String(); strings.Contains(s, "uplink ") || strings.Contains(s, "host: element") || strings.Contains(s, " addr ") || strings.Contains(s, "tnu") {
		t.Errorf("egress objects left after turning it off:\n%s", s)
	}
}

// TestContainersCannotSpoof attacks from inside a container: a forged source
// IPv4 address, a forged source MAC, and gratuitous ARP claiming a
// neighbour's address. Victims on the same host (across the bridge) and on
// another host (across VXLAN) receive none of it; legitimate traffic flows.
// (The attacker's MAC and address have their high bits set where the
// guard compares 32 bits at a time: a sign-extended constant would not
// match them.)
func TestContainersCannotSpoof(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	att, local, remote, bystander := ep("att", 4097, "10.200.0.129"), ep("loc", 4097, "10.200.0.2"), ep("rem", 4097, "10.200.0.3"), ep("by", 4097, "10.200.0.4")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {att, local}, hs[1]: {remote, bystander}}}
	c.reconcile(t)
	ca, cl, cr := attach(t, hs[0], att, 24), attach(t, hs[0], local, 24), attach(t, hs[1], remote, 24)
	attach(t, hs[1], bystander, 24)
	for _, v := range []*container{cl, cr} {
		if err := ca.ping(ctx, v.ip); err != nil {
			t.Fatalf("legitimate ping to %s: %v", v.ip, err)
		}
	}
	watch := func(filter string) []*capture {
		return []*capture{startCapture(t, cl.ns, "eth0", filter), startCapture(t, cr.ns, "eth0", filter)}
	}
	expectNone := func(what string, caps []*capture) {
		t.Helper()
		for _, c := range caps {
			if pkts := c.stop(); len(pkts) > 0 {
				t.Errorf("%s reached a victim:\n%s", what, strings.Join(pkts, "\n"))
			}
		}
	}

	// Forged source IPv4: the bystander's address.
	caps := watch("icmp and src host 10.200.0.4")
	if _, err := ca.in(ctx, "ip", "addr", "add", "10.200.0.4/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*container{cl, cr} {
		_, _ = ca.in(ctx, "ping", "-c1", "-W1", "-I", "10.200.0.4", v.ip.String())
	}
	expectNone("a ping with a forged source address", caps)
	if _, err := ca.in(ctx, "ip", "addr", "del", "10.200.0.4/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}

	// Forged source MAC.
	const forged = "02:66:66:66:66:66"
	caps = watch("ether src " + forged)
	if _, err := ca.in(ctx, "ip", "link", "set", "eth0", "address", forged); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*container{cl, cr} {
		_, _ = ca.in(ctx, "ping", "-c1", "-W1", v.ip.String())
	}
	expectNone("a frame with a forged source MAC", caps)
	if _, err := ca.in(ctx, "ip", "link", "set", "eth0", "address", ca.mac.String()); err != nil {
		t.Fatal(err)
	}

	// Gratuitous ARP claiming the local victim's address; the victim on
	// the same host would take it, the remote one never sees ARP anyway.
	caps = watch("arp and arp[14:4] = 0x0ac80002 and not ether src " + cl.mac.String())
	own := startCapture(t, cl.ns, "eth0", "arp and arp[14:4] = 0x0ac80081")
	if _, err := ca.in(ctx, "ip", "addr", "add", "10.200.0.2/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.in(ctx, "busybox", "arping", "-U", "-c", "2", "-I", "eth0", "-s", "10.200.0.2", "10.200.0.2"); err != nil {
		t.Logf("arping: %v", err) // no answer expected
	}
	if _, err := ca.in(ctx, "ip", "addr", "del", "10.200.0.2/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	// The attacker's own gratuitous ARP is legitimate and arrives.
	if _, err := ca.in(ctx, "busybox", "arping", "-U", "-c", "2", "-I", "eth0", "-s", "10.200.0.129", "10.200.0.129"); err != nil {
		t.Logf("arping: %v", err)
	}
	own.await(t, "10.200.0.129")
	expectNone("gratuitous ARP claiming 10.200.0.2", caps)

	// Legitimate traffic is unaffected.
	for _, v := range []*container{cl, cr} {
		if err := ca.ping(ctx, v.ip); err != nil {
			t.Errorf("legitimate ping to %s after the attacks: %v", v.ip, err)
		}
	}
}

// TestTenantNamespaceRecreatedAtOnceAndAfterExternalDelete removes a
// tenant's last network and creates it again straight away, five times
// (the VNI must be free at once), then has an admin delete the namespace
// behind the datapath's back: the next reconcile builds it anew.
func TestTenantNamespaceRecreatedAtOnceAndAfterExternalDelete(t *testing.T) {
	hs := newHosts(t, 1)
	ctx := t.Context()
	dp := hs[0].dp
	s := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}}}
	for i := range 5 {
		if err := dp.Reconcile(ctx, s); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if err := dp.Reconcile(ctx, overlay.State{}); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "del", hs[0].netns+"-acme").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := dp.Reconcile(ctx, s); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "-n", hs[0].netns+"-acme", "-o", "link").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "vx4097") || !strings.Contains(string(out), "br4097") {
		t.Errorf("after an external delete, the re-created namespace holds: %v\n%s", err, out)
	}
}

// TestLinksOfOthersInTheHostNamespaceAreLeftAlone: an admin's vx100 and a
// link that merely looks like a container end are not Tenet's (they lack
// its ifalias), so no reconcile deletes them.
func TestLinksOfOthersInTheHostNamespaceAreLeftAlone(t *testing.T) {
	hs := newHosts(t, 1)
	h := hs[0]
	for _, args := range [][]string{
		{"link", "add", "vx100", "type", "vxlan", "id", "100", "dstport", "4790"},
		{"link", "add", "tc0123456789ab", "type", "veth", "peer", "name", "notours0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", h.netns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	s := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		Endpoints: []overlay.Endpoint{ep("e1", 4097, "10.1.0.1")}}
	for _, st := range []overlay.State{s, {}} {
		if err := h.dp.Reconcile(t.Context(), st); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("ip", "-n", h.netns, "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vx100", "tc0123456789ab"} {
		if !strings.Contains(string(out), name) {
			t.Errorf("reconcile deleted %s, which is not Tenet's:\n%s", name, out)
		}
	}
}

// TestGatewayMACStaysAsEndpointsComeAndGo: a bridge takes its lowest
// port's MAC unless it has one of its own, so with egress the gateway's
// MAC would change under the containers as endpoints come and go (their
// ARP caches then point at a MAC that no longer answers). Each bridge has
// a fixed MAC from its VNI, the same on every host.
func TestGatewayMACStaysAsEndpointsComeAndGo(t *testing.T) {
	hs := newHosts(t, 1)
	ctx := t.Context()
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	s := overlay.State{Networks: []overlay.Network{web}}
	brMAC := func() string {
		out, err := exec.Command("ip", "-n", hs[0].netns+"-acme", "-br", "link", "show", "br4097").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.Fields(string(out))[2]
	}
	for i := range 6 {
		e := ep(fmt.Sprintf("e%d", i), 4097, fmt.Sprintf("10.1.0.%d", 10+i))
		s.Endpoints = append(s.Endpoints, e)
		if i >= 3 {
			s.Endpoints = s.Endpoints[1:] // the oldest goes
		}
		if err := hs[0].dp.Reconcile(ctx, s); err != nil {
			t.Fatal(err)
		}
		if got := brMAC(); got != "02:7e:ff:00:10:01" {
			t.Fatalf("after change %d the gateway's MAC is %s, want 02:7e:ff:00:10:01", i, got)
		}
	}
}
