package core_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// The remote-event path, driven by event transcripts: what another host
// does reaches the core as gossip events, and must end as the right scope
// and the right desired state, with nothing else touched.

var vni = rules.DeriveVNI("acme/web")

func remote(id string, last byte, host string) core.Remote {
	return core.Remote{ID: id, Network: "acme/web", Host: host, VTEP: netip.AddrFrom4([4]byte{198, 51, 100, 11}),
		IP: netip.AddrFrom4([4]byte{10, 1, 0, last}), MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, last}}
}

// passAfter waits for a datapath pass after the first n whose scope
// satisfies want, and returns it.
func passAfter(t *testing.T, dp *coretest.Datapath, n int, what string, want func(coretest.Call) bool) coretest.Call {
	t.Helper()
	var got coretest.Call
	eventually(t, what, func() bool {
		for _, c := range dp.Calls()[n:] {
			if want(c) {
				got = c
				return true
			}
		}
		return false
	})
	return got
}

func hasRemote(s overlay.State, mac string) bool {
	return slices.ContainsFunc(s.Remotes, func(r overlay.Remote) bool { return r.MAC.String() == mac })
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRemoteEventsBecomeScopedPasses(t *testing.T) {
	var log syncBuffer
	cfg := config(t, t.TempDir())
	cfg.HiddenGrace = 300 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
	dp, cl := &coretest.Datapath{}, coretest.NewCluster("h0")
	h := start(t, dp, cl, cfg)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}

	// A put: that entry only.
	n := len(dp.Calls())
	cl.AddHost("h1", vtep1)
	cl.AddRemote(remote("r9", 9, "h1"))
	c := passAfter(t, dp, n, "a pass for r9", func(c coretest.Call) bool { return len(c.Scope.Remotes) > 0 })
	if c.Scope.All || len(c.Scope.Endpoints) > 0 || !slices.Equal(c.Scope.Remotes, []core.RemoteKey{{VNI: vni, MAC: "02:7e:0a:01:00:09"}}) {
		t.Errorf("scope of a remote put: %+v", c.Scope)
	}
	if !hasRemote(c.State, "02:7e:0a:01:00:09") {
		t.Errorf("state lacks r9: %+v", c.State.Remotes)
	}

	// An attachment: the network's own objects (its flood list).
	n = len(dp.Calls())
	cl.AddPeer("acme/web", core.Peer{Host: "h1", VTEP: vtep1})
	c = passAfter(t, dp, n, "a pass for the attachment", func(c coretest.Call) bool { return len(c.Scope.Networks) > 0 })
	if !slices.Equal(c.Scope.Networks, []uint32{vni}) || len(c.State.Networks) != 1 || !slices.Equal(c.State.Networks[0].Peers, []netip.Addr{vtep1}) {
		t.Errorf("attachment pass: scope %+v, networks %+v", c.Scope, c.State.Networks)
	}

	// A remote claiming a local address is left out, logged once.
	n = len(dp.Calls())
	cl.AddRemote(remote("thief", 5, "h1"))
	c = passAfter(t, dp, n, "a pass for the thief", func(c coretest.Call) bool { return len(c.Scope.Remotes) > 0 })
	if hasRemote(c.State, "02:7e:0a:01:00:05") && slices.ContainsFunc(c.State.Remotes, func(r overlay.Remote) bool {
		return r.VTEP == vtep1 && r.MAC.String() == "02:7e:0a:01:00:05"
	}) {
		t.Error("a remote claiming a local address was programmed")
	}
	eventually(t, "the conflict is logged", func() bool { return strings.Contains(log.String(), "claims a taken address") })

	// While a claim conflicts, a change to one entry covers the
	// network's every entry (which claim wins may change with it).
	n = len(dp.Calls())
	cl.DeleteRemote("thief")
	c = passAfter(t, dp, n, "a pass for the thief's delete", func(c coretest.Call) bool { return len(c.Scope.Remotes) > 0 })
	if !slices.Equal(c.Scope.RemoteNets, []uint32{vni}) {
		t.Errorf("a delete in a contested network: scope %+v", c.Scope)
	}
	// A delete carries the entry's last value: that entry only, once no
	// claim conflicts.
	n = len(dp.Calls())
	cl.DeleteRemote("r9")
	c = passAfter(t, dp, n, "a pass for the delete", func(c coretest.Call) bool { return !hasRemote(c.State, "02:7e:0a:01:00:09") })
	if !slices.Equal(c.Scope.Remotes, []core.RemoteKey{{VNI: vni, MAC: "02:7e:0a:01:00:09"}}) || len(c.Scope.RemoteNets) != 0 {
		t.Errorf("delete pass: scope %+v", c.Scope)
	}
	// One without it (an old peer): the network's remote entries.
	n = len(dp.Calls())
	cl.Emit(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: "gone", Host: "h1",
		Endpoint: &gossip.Endpoint{ID: "gone", Network: "acme/web"}})
	c = passAfter(t, dp, n, "a pass for a bare delete", func(c coretest.Call) bool { return len(c.Scope.RemoteNets) > 0 })
	if !slices.Equal(c.Scope.RemoteNets, []uint32{vni}) {
		t.Errorf("bare delete pass: scope %+v", c.Scope)
	}

	// A host going down: its entries stay for the grace, then go.
	cl.AddRemote(remote("r7", 7, "h1"))
	passAfter(t, dp, n, "r7 programmed", func(c coretest.Call) bool { return hasRemote(c.State, "02:7e:0a:01:00:07") })
	n = len(dp.Calls())
	down := time.Now()
	cl.HostDown("h1", down)
	c = passAfter(t, dp, n, "a pass without r7 once the grace is over", func(c coretest.Call) bool {
		return !hasRemote(c.State, "02:7e:0a:01:00:07")
	})
	if since := time.Since(down); since < cfg.HiddenGrace {
		t.Errorf("r7 withdrawn %v after its host went down; the grace is %v", since, cfg.HiddenGrace)
	}
	if len(c.State.Networks[0].Peers) != 0 {
		t.Errorf("the down host is still a flood peer: %v", c.State.Networks[0].Peers)
	}
	for _, c := range dp.Calls()[n:] {
		if c.Scope.All {
			t.Errorf("a cluster change made a full pass: %+v", c.Scope)
		}
	}

	// Events of a network this host does not have change nothing.
	n = len(dp.Calls())
	other := remote("x1", 3, "h1")
	other.Network = "globex/db"
	cl.AddRemote(other)
	cl.AddRemote(remote("marker", 33, "h2")) // a pass after it proves it was seen
	passAfter(t, dp, n, "the marker's pass", func(c coretest.Call) bool { return hasRemote(c.State, "02:7e:0a:01:00:21") })
	for _, c := range dp.Calls()[n:] {
		for _, r := range c.Scope.Remotes {
			if r.MAC == "02:7e:0a:01:00:03" {
				t.Errorf("an event of another network made a pass: %+v", c.Scope)
			}
		}
	}
}

func TestStaleOwnEntriesAreWithdrawn(t *testing.T) {
	h := newHarness(t)
	// The ring hands back an endpoint and a network this host had before a
	// restart, which are gone now.
	h.cl.PutEndpoint(gossip.Endpoint{ID: "old", Network: "acme/web", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, IP: netip.MustParseAddr("10.1.0.9")})
	h.cl.PutNetwork(gossip.Network{ID: "acme/old", Tenant: "acme", Name: "old", VNI: 77, Subnet: netip.MustParsePrefix("10.9.0.0/24")})
	h.cl.Emit(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "old", Host: "h0"})
	h.cl.Emit(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableNetworks, Key: "acme/old", Host: "h0"})
	eventually(t, "the stale endpoint is withdrawn", func() bool { _, ok := h.cl.Own("old"); return !ok })
	eventually(t, "the stale network is withdrawn", func() bool { _, ok, _ := h.cl.OwnNetwork("acme/old"); return !ok })
	// One it has is kept.
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	h.cl.Emit(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableNetworks, Key: "acme/web", Host: "h0"})
	h.cl.AddRemote(remote("marker", 33, "h1"))
	eventually(t, "the marker is seen", func() bool { s, _ := h.dp.Last(); return hasRemote(s, "02:7e:0a:01:00:21") })
	if _, ok, _ := h.cl.OwnNetwork("acme/web"); !ok {
		t.Fatal("a network this host has was withdrawn")
	}
}

// TestStaleOwnAttachmentsAndSettingsAreWithdrawn: the ring hands back,
// as this host's, an attachment and an encryption setting of a network it
// no longer has: both are withdrawn; those of a network it has are kept.
func TestStaleOwnAttachmentsAndSettingsAreWithdrawn(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	for _, network := range []string{"acme/old", "acme/web"} {
		if err := h.cl.Attach(network); err != nil {
			t.Fatal(err)
		}
		h.cl.Emit(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableAttachments, Key: network, Host: "h0"})
		key := crypt.NetworkKey(network)
		h.cl.AddKV("h0", key, []byte("clear"))
	}
	eventually(t, "the stale attachment is withdrawn", func() bool { return !h.cl.Attached("h0", "acme/old") })
	eventually(t, "the stale setting is withdrawn", func() bool { _, ok := h.cl.OwnKV(crypt.NetworkKey("acme/old")); return !ok })
	h.cl.AddRemote(remote("marker", 33, "h1"))
	eventually(t, "the marker is seen", func() bool { s, _ := h.dp.Last(); return hasRemote(s, "02:7e:0a:01:00:21") })
	if !h.cl.Attached("h0", "acme/web") {
		t.Error("the attachment of a network this host has was withdrawn")
	}
	if _, ok := h.cl.OwnKV(crypt.NetworkKey("acme/web")); !ok {
		t.Error("the setting of a network this host has was withdrawn")
	}
}

// restartedWithWeb is the state directory of a host that made acme/web
// and stopped.
func restartedWithWeb(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	h := start(t, &coretest.Datapath{}, coretest.NewCluster("h0"), config(t, dir))
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	h.stop()
	return dir
}

func TestARestartKeepsKernelRemotesUntilGossipSyncs(t *testing.T) {
	dir := restartedWithWeb(t)
	// The kernel holds two remote entries; gossip knows one of them so far.
	kernel := []overlay.Remote{
		{VNI: vni, MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 9}, VTEP: vtep1, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.9")}},
		{VNI: vni, MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 8}, VTEP: vtep1, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.8")}},
	}
	dp := &coretest.Datapath{Kernel: map[uint32][]overlay.Remote{vni: kernel}, KernelPeers: map[uint32][]netip.Addr{vni: {vtep1}}}
	cl := coretest.NewCluster("h0")
	cl.AddRemote(remote("r9", 9, "h1"))
	h2 := start(t, dp, cl, config(t, dir))
	eventually(t, "the first pass", func() bool { _, ok := dp.Last(); return ok })
	first := dp.Calls()[0]
	if !first.Scope.All || !hasRemote(first.State, "02:7e:0a:01:00:09") || !hasRemote(first.State, "02:7e:0a:01:00:08") ||
		!slices.Equal(first.State.Networks[0].Peers, []netip.Addr{vtep1}) {
		t.Fatalf("the first pass after a restart dropped kernel entries: %+v", first.State)
	}
	n := len(dp.Calls())
	cl.SetSynced("acme/web")
	c := passAfter(t, dp, n, "a pass once synced", func(c coretest.Call) bool { return !hasRemote(c.State, "02:7e:0a:01:00:08") })
	if c.Scope.All || !slices.Contains(c.Scope.RemoteNets, vni) || !hasRemote(c.State, "02:7e:0a:01:00:09") {
		t.Errorf("once synced: scope %+v, remotes %+v", c.Scope, c.State.Remotes)
	}
	_ = h2
}

// TestAPassWithAdoptedEntriesReadsTheWholeNetwork: while kernel entries
// adopted at a restart fill in a network, a pass for a remote change
// plans from the network's whole listing, not from the claims of its
// MACs alone: whether an adopted entry stays depends on every gossip
// entry, not only those sharing its MAC or IP with the change.
func TestAPassWithAdoptedEntriesReadsTheWholeNetwork(t *testing.T) {
	dir := restartedWithWeb(t)
	kernel := []overlay.Remote{{VNI: vni, MAC: net.HardwareAddr{2, 0x7e, 10, 1, 0, 8}, VTEP: vtep1, IPs: []netip.Addr{netip.MustParseAddr("10.1.0.8")}}}
	dp := &coretest.Datapath{Kernel: map[uint32][]overlay.Remote{vni: kernel}}
	cl := coretest.NewCluster("h0")
	cl.AddRemote(remote("r9", 9, "h1"))
	start(t, dp, cl, config(t, dir))
	eventually(t, "the first pass", func() bool { _, ok := dp.Last(); return ok })
	reads, n := cl.RemoteReads("acme/web"), len(dp.Calls())
	// The container at 10.1.0.8 came back with a new MAC.
	moved := remote("r8", 18, "h1")
	moved.IP = netip.MustParseAddr("10.1.0.8")
	cl.AddRemote(moved)
	c := passAfter(t, dp, n, "a pass for r8", func(c coretest.Call) bool { return hasRemote(c.State, "02:7e:0a:01:00:12") })
	if got := cl.RemoteReads("acme/web"); got == reads {
		t.Error("a pass with adopted entries planned from the claims alone")
	}
	if !hasRemote(c.State, "02:7e:0a:01:00:09") {
		t.Errorf("r8's pass lacks r9: %+v", c.State.Remotes)
	}
	for _, r := range c.State.Remotes {
		if r.MAC.String() == "02:7e:0a:01:00:08" && slices.Contains(r.IPs, moved.IP) {
			t.Errorf("the adopted entry keeps 10.1.0.8 over gossip's claim: %+v", c.State.Remotes)
		}
	}
}

func TestNewMembersAreKeptFromTenants(t *testing.T) {
	cfg := config(t, t.TempDir())
	cfg.Infra = overlay.Infra{Deny: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
		Ports: []overlay.L4Port{{Proto: overlay.TCP, Port: 7946}}, Allow: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32")}}
	dp, cl := &coretest.Datapath{}, coretest.NewCluster("h0")
	h := start(t, dp, cl, cfg)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	n := len(dp.Calls())
	cl.AddHost("h7", netip.MustParseAddr("203.0.113.50"))
	c := passAfter(t, dp, n, "an infra pass", func(c coretest.Call) bool { return c.Scope.Infra })
	in := c.State.Infra
	for _, want := range []string{"198.51.100.0/24", "198.51.100.10/32", "203.0.113.50/32"} {
		if !slices.Contains(in.Deny, netip.MustParsePrefix(want)) {
			t.Errorf("infra deny lacks %s: %v", want, in.Deny)
		}
	}
	if len(in.Allow) != 1 || len(in.Ports) != 1 {
		t.Errorf("infra: %+v", in)
	}
}

// TestAPassReadsOnlyTheNetworksItsScopeTouches: a pass for an endpoint, or
// for another host's endpoint, reads gossip's view of its own network
// only, so its cost does not grow with the host's other networks (issue
// 13); a full pass reads them all.
func TestAPassReadsOnlyTheNetworksItsScopeTouches(t *testing.T) {
	dp, cl := &coretest.Datapath{}, coretest.NewCluster("h0")
	h := start(t, dp, cl, config(t, t.TempDir()))
	db := web()
	db.Name, db.Ref, db.Subnet, db.Gateway = "db", "docker-n2", netip.MustParsePrefix("10.2.0.0/24"), netip.MustParseAddr("10.2.0.1")
	for _, spec := range []core.NetworkSpec{web(), db} {
		if _, err := h.c.CreateNetwork(ctx(t), spec); err != nil {
			t.Fatal(err)
		}
	}
	cl.AddHost("h1", vtep1)
	for i := range 3 {
		r := remote(fmt.Sprint("d", i), byte(20+i), "h1")
		r.Network, r.IP = "acme/db", netip.AddrFrom4([4]byte{10, 2, 0, byte(20 + i)})
		cl.AddRemote(r)
	}
	eventually(t, "a pass programs acme/db's remotes", func() bool {
		s, _ := dp.Last()
		return hasRemote(s, "02:7e:0a:01:00:16")
	})

	dbReads := cl.RemoteReads("acme/db")
	n := len(dp.Calls())
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	passAfter(t, dp, n, "the endpoint's pass", func(c coretest.Call) bool { return slices.Contains(c.Scope.Endpoints, "e1") })
	if got := cl.RemoteReads("acme/db"); got != dbReads {
		t.Errorf("an endpoint of acme/web read acme/db's remotes %d times", got-dbReads)
	}
	webReads := cl.RemoteReads("acme/web")
	n = len(dp.Calls())
	cl.AddRemote(remote("r9", 9, "h1"))
	c := passAfter(t, dp, n, "a pass for r9", func(c coretest.Call) bool { return len(c.Scope.Remotes) > 0 })
	if !hasRemote(c.State, "02:7e:0a:01:00:09") {
		t.Errorf("r9's pass lacks r9: %+v", c.State.Remotes)
	}
	// It reads the entries that claim r9's MAC or address, not the
	// whole network (core.ClaimReader).
	if got := cl.RemoteReads("acme/web"); got != webReads {
		t.Errorf("r9's pass listed all of acme/web's remotes (%d times)", got-webReads)
	}
	if got := cl.RemoteReads("acme/db"); got != dbReads {
		t.Errorf("a remote of acme/web read acme/db's remotes %d times", got-dbReads)
	}
	// A newer entry claiming r9's address: its pass finds the conflict
	// among the claims and plans from the whole network, where the newer
	// wins.
	n = len(dp.Calls())
	thief := remote("thief", 10, "h1")
	thief.IP, thief.Version = netip.AddrFrom4([4]byte{10, 1, 0, 9}), 100
	cl.AddRemote(thief)
	c = passAfter(t, dp, n, "a pass for the thief", func(c coretest.Call) bool {
		return slices.Contains(c.Scope.Remotes, core.RemoteKey{VNI: c.State.Networks[0].VNI, MAC: "02:7e:0a:01:00:0a"}) ||
			len(c.Scope.RemoteNets) > 0
	})
	if got := cl.RemoteReads("acme/web"); got == webReads {
		t.Error("a pass that found a conflict among the claims did not read the whole network")
	}
	eventually(t, "the newer claim of 10.1.0.9 wins", func() bool {
		s, _ := dp.Last()
		return hasRemote(s, "02:7e:0a:01:00:0a") && !hasRemote(s, "02:7e:0a:01:00:09")
	})
}

// TestEventsThatConcernNothingHereMakeNoPass: events of a network this
// host does not have, without the entry they name, of a table the core
// does not read, or of a WireGuard key while no network is encrypted,
// make no pass (a peer, confused or hostile, cannot make this host
// reconcile at will); the next event that matters is handled as usual.
func TestEventsThatConcernNothingHereMakeNoPass(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	h.cl.AddHost("h1", vtep1)
	n := len(h.dp.Calls())
	for _, ev := range []gossip.Event{
		{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "x", Host: "h1"},
		{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: "x", Host: "h1"},
		{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "x", Host: "h1", Endpoint: &gossip.Endpoint{ID: "x", Network: "globex/web"}},
		{Kind: gossip.EventPut, Table: gossip.TableAttachments, Key: "globex/web", Host: "h1"},
		{Kind: gossip.EventDelete, Table: gossip.TableAttachments, Key: "globex/web", Host: "h1"},
		{Kind: gossip.EventPut, Table: gossip.TableNetworks, Key: "globex/web", Host: "h1"},
		{Kind: gossip.EventPut, Table: gossip.Table("routes"), Key: "acme/web", Host: "h1"},
		{Kind: gossip.EventPut, Table: gossip.TableKV, Key: crypt.HostKey, Host: "h1"},
		{Kind: gossip.EventPut, Table: gossip.TableKV, Key: "something/else", Host: "h1"},
	} {
		h.cl.Emit(ev)
	}
	h.cl.AddRemote(remote("marker", 33, "h1"))
	c := passAfter(t, h.dp, n, "the marker's pass", func(c coretest.Call) bool { return hasRemote(c.State, "02:7e:0a:01:00:21") })
	calls := h.dp.Calls()[n:]
	if len(calls) != 1 || c.Scope.All || !slices.Equal(c.Scope.Remotes, []core.RemoteKey{{VNI: vni, MAC: "02:7e:0a:01:00:21"}}) ||
		len(c.Scope.Networks)+len(c.Scope.RemoteNets)+len(c.Scope.Tenants) > 0 || c.Scope.Crypt {
		for _, call := range calls {
			t.Errorf("pass with scope %+v", call.Scope)
		}
	}
}
