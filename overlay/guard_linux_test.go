package overlay_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenet-net/tenet/overlay"
)

// inNetns runs fn on a thread of its own inside the named namespace;
// sockets fn opens stay in it.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err) // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// sendFrames writes raw Ethernet frames on dev inside namespace ns, as a
// container with CAP_NET_RAW can (an AF_PACKET socket).
func sendFrames(t *testing.T, ns, dev string, frames [][]byte) {
	t.Helper()
	err := inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, f := range frames {
			to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
			copy(to.Addr[:], f[:6])
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return fmt.Errorf("send %d-byte frame: %w", len(f), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw frames from %s: %v", ns, err)
	}
}

// icmpEcho is an IPv4 ICMP echo request from src to dst carrying payload.
func icmpEcho(src, dst netip.Addr, payload string) []byte {
	icmp := append([]byte{8, 0, 0, 0, 0, 1, 0, 1}, payload...)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, icmp...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// frame builds an Ethernet frame: dst, src, then the tags (TPID, VID
// pairs), the ethertype and the payload.
func frame(dst, src net.HardwareAddr, tags [][2]uint16, etherType uint16, payload []byte) []byte {
	f := append(append([]byte{}, dst...), src...)
	for _, tg := range tags {
		f = binary.BigEndian.AppendUint16(f, tg[0])
		f = binary.BigEndian.AppendUint16(f, tg[1])
	}
	f = binary.BigEndian.AppendUint16(f, etherType)
	return append(f, payload...)
}

// TestTaggedFramesAreDroppedAtThePort sends, from a real endpoint with an
// AF_PACKET socket, frames with the endpoint's own MAC and IPv4 address
// inside an 802.1Q tag, an 802.1ad tag, 802.1ad over 802.1Q (QinQ), and a
// tagged ARP. Victims on the same network, on the same host (across the
// bridge) and on another host (across VXLAN), receive none of them; the
// same frame untagged arrives. (Before the port guards read the frame as
// sent, the bridge's check saw the inner headers only, so every tagged
// frame here reached the victims still tagged.)
func TestTaggedFramesAreDroppedAtThePort(t *testing.T) {
	hs := newHosts(t, 2)
	ctx := t.Context()
	att, local, remote := ep("att", 4097, "10.1.0.1"), ep("loc", 4097, "10.1.0.2"), ep("rem", 4097, "10.1.0.3")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {att, local}, hs[1]: {remote}}}
	c.reconcile(t)
	ca, cl, cr := attach(t, hs[0], att, 24), attach(t, hs[0], local, 24), attach(t, hs[1], remote, 24)
	for _, v := range []*container{cl, cr} {
		if err := ca.ping(ctx, v.ip); err != nil {
			t.Fatalf("legitimate ping to %s: %v", v.ip, err)
		}
	}
	tagged := func(v *container) [][]byte {
		ip := icmpEcho(ca.ip, v.ip, "TAGGED")
		arp := make([]byte, 28) // a gratuitous ARP reply, in a tag
		copy(arp, []byte{0, 1, 8, 0, 6, 4, 0, 2})
		copy(arp[8:], ca.mac)
		a4 := ca.ip.As4()
		copy(arp[14:], a4[:])
		copy(arp[18:], v.mac)
		copy(arp[24:], a4[:])
		return [][]byte{
			frame(v.mac, ca.mac, [][2]uint16{{0x8100, 5}}, 0x0800, ip),
			frame(v.mac, ca.mac, [][2]uint16{{0x88a8, 5}}, 0x0800, ip),
			frame(v.mac, ca.mac, [][2]uint16{{0x88a8, 5}, {0x8100, 6}}, 0x0800, ip),
			frame(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ca.mac, [][2]uint16{{0x8100, 7}}, 0x0806, arp),
		}
	}
	const anyTag = "vlan or ether proto 0x8100 or ether proto 0x88a8"
	var caps []*capture
	for _, v := range []*container{cl, cr} {
		caps = append(caps, startCapture(t, v.ns, "eth0", anyTag))
	}
	control := []*capture{startCapture(t, cl.ns, "eth0", "icmp and ether src "+ca.mac.String()),
		startCapture(t, cr.ns, "eth0", "icmp and ether src "+ca.mac.String())}
	for _, v := range []*container{cl, cr} {
		sendFrames(t, ca.ns, "eth0", tagged(v))
		// The same echo request untagged: it arrives, so the sender and
		// the captures work.
		sendFrames(t, ca.ns, "eth0", [][]byte{frame(v.mac, ca.mac, nil, 0x0800, icmpEcho(ca.ip, v.ip, "UNTAGGED"))})
	}
	for _, cp := range control {
		cp.await(t, "ICMP echo request")
	}
	for i, cp := range caps {
		if pkts := cp.stop(); len(pkts) > 0 {
			t.Errorf("victim %d received tagged frames from the attacker:\n%s", i, strings.Join(pkts, "\n"))
		}
	}
	// The attacker's port still passes its legitimate traffic.
	for _, v := range []*container{cl, cr} {
		if err := ca.ping(ctx, v.ip); err != nil {
			t.Errorf("legitimate ping to %s after the attack: %v", v.ip, err)
		}
	}
	// A guard removed by hand is back after a full reconcile, and works.
	if out, err := runIn(hs[0].netns+"-acme", "tc", "qdisc", "del", "dev", overlay.BridgeVeth("att"), "clsact"); err != nil {
		t.Fatalf("remove the attacker's guard: %v: %s", err, out)
	}
	c.reconcile(t)
	again := startCapture(t, cl.ns, "eth0", anyTag)
	ctl := startCapture(t, cl.ns, "eth0", "icmp and ether src "+ca.mac.String())
	sendFrames(t, ca.ns, "eth0", tagged(cl))
	sendFrames(t, ca.ns, "eth0", [][]byte{frame(cl.mac, ca.mac, nil, 0x0800, icmpEcho(ca.ip, cl.ip, "UNTAGGED"))})
	ctl.await(t, "ICMP echo request")
	if pkts := again.stop(); len(pkts) > 0 {
		t.Errorf("after repair, the victim received tagged frames:\n%s", strings.Join(pkts, "\n"))
	}
}

// nftDel deletes a chain of Tenet's table of family in namespace ns (a
// port's guard: of the port's table), or with chain "" the table, as an
// admin might by hand.
func nftDel(t testing.TB, ns string, family nftables.TableFamily, chain string) {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: family, Name: "tenet"}
	if family == nftables.TableFamilyNetdev && chain != "" {
		tb.Name = "tenet-" + chain // a guard's own table
	}
	if chain == "" {
		c.DelTable(tb)
	} else {
		c.DelChain(&nftables.Chain{Name: chain, Table: tb})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("delete %q of table tenet in %s: %v", chain, ns, err)
	}
}

// TestGuardsKeptInNftablesMoveOntoTheirPorts: a namespace whose guards an
// older tenetd kept in nf_tables (one netdev table "tenet" for all, later
// a table "tenet-<port>" each, sometimes left without its chain) gets, at
// the next full reconcile, its guards as filters on their ports and no
// old table; a guard that does not read back (its rules lost their tags)
// is made anew.
func TestGuardsKeptInNftablesMoveOntoTheirPorts(t *testing.T) {
	hs := newHosts(t, 1)
	ctx := t.Context()
	var eps []overlay.Endpoint
	for i := range 4 {
		eps = append(eps, ep(fmt.Sprintf("g%d", i), 4097, fmt.Sprintf("10.1.0.%d", i+1)))
	}
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: eps}}
	c.reconcile(t)
	dp := hs[0].dp
	before, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns := hs[0].netns + "-acme"
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nc, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	// The old layouts: g0 and g1 (its rules untagged) in the single table,
	// g2 in a table of its own, g3's table without its chain; the ports'
	// own filters gone.
	netdev := nftables.TableFamilyNetdev
	single := nc.AddTable(&nftables.Table{Family: netdev, Name: "tenet"})
	for i, e := range eps {
		port := overlay.BridgeVeth(e.ID)
		if out, err := runIn(ns, "tc", "qdisc", "del", "dev", port, "clsact"); err != nil {
			t.Fatalf("remove %s's guard: %v: %s", port, err, out)
		}
		tb := single
		if i >= 2 {
			tb = nc.AddTable(&nftables.Table{Family: netdev, Name: "tenet-" + port})
		}
		if i == 3 {
			continue
		}
		policy := nftables.ChainPolicyAccept
		ch := nc.AddChain(&nftables.Chain{Name: port, Table: tb, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookIngress,
			Priority: nftables.ChainPriorityFilter, Policy: &policy, Device: port})
		for range 5 {
			tag := []byte(fmt.Sprintf("tenet-guard-v1 %s %s %s", port, overlay.DeriveMAC(e.IPs, e.ID), e.IPs[0]))
			if i == 1 {
				tag = nil
			}
			nc.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}, UserData: tag})
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("make the old layouts: %v", err)
	}
	netdevTables := func() []string {
		ts, err := nc.ListTablesOfFamily(netdev)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tb := range ts {
			names = append(names, tb.Name)
		}
		slices.Sort(names)
		return names
	}
	if got := netdevTables(); len(got) != 3 {
		t.Fatalf("old layouts made: netdev tables %v", got)
	}
	// Diagnose only reads: it finds the ports unguarded and moves nothing.
	fs, err := dp.Diagnose(ctx, c.state(hs[0]))
	if err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, f := range fs {
		if strings.HasPrefix(f.Problem+" "+f.Object, "missing guard ") {
			missing++
		}
	}
	if missing != len(eps) {
		t.Errorf("diagnose of the old layouts: %d missing guards, want %d: %v", missing, len(eps), fs)
	}
	if got := netdevTables(); len(got) != 3 {
		t.Errorf("diagnose changed the netdev tables: %v", got)
	}
	if err := dp.Reconcile(ctx, c.state(hs[0])); err != nil {
		t.Fatal(err)
	}
	if got := netdevTables(); len(got) != 0 {
		t.Errorf("after a reconcile: netdev tables %v, want none", got)
	}
	for _, e := range eps {
		port := overlay.BridgeVeth(e.ID)
		out, err := runIn(ns, "tc", "filter", "show", "dev", port, "ingress")
		if err != nil || !strings.Contains(out, "tenet-guard-v2 "+port+" "+overlay.DeriveMAC(e.IPs, e.ID).String()) {
			t.Errorf("%s has no guard after the move: %v\n%s", port, err, out)
		}
	}
	after, err := dp.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, a := before.String(), after.String(); a != b {
		t.Errorf("the kernel holds\n%s\nwant, as before the move,\n%s", a, b)
	}
	if fs, err := dp.Diagnose(ctx, c.state(hs[0])); err != nil || len(fs) != 0 {
		t.Errorf("after the move: findings %v, err %v", fs, err)
	}
}
