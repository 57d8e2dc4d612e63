package gossip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestWritesReturnOnceStored: with every send stuck (a peer unreachable
// but not yet declared down), every kind of write still returns, and the
// changes wait in the send queue until the network moves again.
func TestWritesReturnOnceStored(t *testing.T) {
	n := newTestNode(t, "me")
	stuck := make(chan struct{})
	n.fake().block = stuck
	var once sync.Once
	unstick := func() { once.Do(func() { close(stuck) }) }
	t.Cleanup(unstick) // before the node's cleanup runs
	n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
	n.store.merge(&entry{table: tableAttachments, owner: "h2", key: "net-a", version: 1}, false)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			for i := range 200 {
				if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i))); err != nil {
					return err
				}
				if err := n.KV().Put(fmt.Sprintf("k-%d", i), []byte("v")); err != nil {
					return err
				}
				nw := fmt.Sprintf("net-%d", i)
				if err := n.Attachments().Attach(nw); err != nil {
					return err
				}
				n.Attachments().Detach(nw)
				n.Endpoints().Delete(fmt.Sprintf("ep-%d", i/2))
			}
			return nil
		}()
	}()
	eventually(t, 10*time.Second, "writes done while every send is stuck", func() error {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return nil
		default:
			return errors.New("writes still running")
		}
	})
	eventually(t, 10*time.Second, "the sender stuck", func() error {
		if n.fake().blocked.Load() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	if err := n.KV().Put("late", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if q := n.Stats().SendQueue; q == 0 {
		t.Fatal("send queue empty while the sender is stuck")
	}
	unstick()
	eventually(t, 10*time.Second, "queue drained", func() error {
		if q := n.Stats().SendQueue; q != 0 {
			return fmt.Errorf("%d waiting", q)
		}
		return nil
	})
	// The latest of each endpoint reached h2, once the sender could move.
	n.fake().await(t, func(s sentMsg) bool {
		for _, e := range s.m.entries {
			if e.key == "ep-199" && s.to == addrOf("h2").String() {
				return true
			}
		}
		return false
	})
}

// TestStatsCounts checks the per-table sizes and member counts.
func TestStatsCounts(t *testing.T) {
	n := newTestNode(t, "me")
	for i := range 3 {
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	n.Endpoints().Delete("ep-0")
	if err := n.KV().Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
	n.store.setMember("h3", addrOf("h3"), netip.Addr{}, wireVersion, true, false)
	n.store.merge(&entry{table: tableAttachments, owner: "h3", key: "net-a", version: uint64(time.Now().UnixMicro())}, false)
	n.store.setMember("h3", netip.AddrPort{}, netip.Addr{}, 0, false, false)
	n.store.setMember("h4", addrOf("h4"), netip.Addr{}, wireVersion, true, false)
	n.store.setMember("h4", netip.AddrPort{}, netip.Addr{}, 0, false, true)
	st := n.Stats()
	want := map[Table]TableStats{
		TableEndpoints:   {Entries: 2, Tombstones: 1},
		TableKV:          {Entries: 1},
		TableAttachments: {Entries: 2, Hidden: 1},
		TableNetworks:    {},
	}
	if diff := cmp.Diff(want, st.Tables); diff != "" {
		t.Errorf("tables (-want +got):\n%s", diff)
	}
	if st.MembersAlive != 2 || st.MembersFailed != 1 || st.MembersLeft != 1 {
		t.Errorf("members alive/failed/left = %d/%d/%d, want 2/1/1", st.MembersAlive, st.MembersFailed, st.MembersLeft)
	}
}

// TestStaleOwnEntryIsRetired: once caught up, a host that meets a copy of
// an entry of its own that it does not hold (deleted long ago, its marker
// expired) ends it with a fresh tombstone; while still catching up after a
// start, it takes the entry back instead.
func TestStaleOwnEntryIsRetired(t *testing.T) {
	ep := testEndpoint("old", "net-a", 1)
	stale := entry{table: tableEndpoints, owner: "me", key: "old", version: uint64(time.Now().Add(-time.Hour).UnixMicro()), value: encodeEndpoint(&ep)}
	msg := encodeMessage(nil, &message{typ: msgEntries, sender: "r", scopes: []string{"net-a"}, entries: []entry{stale}})
	setup := func(t *testing.T) *Node {
		n := newTestNode(t, "me")
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		n.store.setMember("r", addrOf("r"), netip.Addr{}, wireVersion, true, false)
		n.store.merge(&entry{table: tableAttachments, owner: "r", key: "net-a", version: 1}, false)
		return n
	}
	t.Run("caught up", func(t *testing.T) {
		n := setup(t)
		n.caughtUp("net-a")
		n.handle(msg, netip.AddrPort{})
		if _, ok := n.Endpoints().Get("old"); ok {
			t.Fatal("stale own entry taken back")
		}
		sent := n.fake().await(t, func(s sentMsg) bool {
			return s.m.typ == msgUpdate && len(s.m.entries) == 1 && s.m.entries[0].key == "old"
		})
		if e := sent.m.entries[0]; e.key != "old" || !e.deleted || e.version <= stale.version || sent.to != addrOf("r").String() {
			t.Fatalf("sent %+v to %s, want a fresh tombstone of old to r", e, sent.to)
		}
		if n.Stats().EntriesRetired != 1 {
			t.Fatalf("stats %+v", n.Stats())
		}
	})
	t.Run("catching up", func(t *testing.T) {
		n := setup(t)
		n.handle(msg, netip.AddrPort{})
		if got, ok := n.Endpoints().Get("old"); !ok || got.Host != "me" {
			t.Fatalf("own entry not adopted while catching up: %+v %v", got, ok)
		}
	})
	t.Run("never caught up, older than the TTL", func(t *testing.T) {
		n := setup(t)
		n.store.born = time.Now().Add(-31 * time.Minute) // the test node's TTL is 30 minutes
		n.handle(msg, netip.AddrPort{})
		if _, ok := n.Endpoints().Get("old"); ok {
			t.Fatal("own entry taken back though this life's markers may have expired")
		}
		if n.Stats().EntriesRetired != 1 {
			t.Fatalf("stats %+v", n.Stats())
		}
	})
}

// TestMixedWireVersions: a host whose metadata says it speaks wire version
// 1 is a member, but is sent no table traffic (it could not read it).
func TestMixedWireVersions(t *testing.T) {
	n := newTestNode(t, "me")
	vtep := netip.MustParseAddr("203.0.113.7")
	oldMeta := appendAddr([]byte{metaVersion}, vtep) // what a version 1 host advertises
	if v, wire := decodeMeta(oldMeta); v != vtep || wire != 1 {
		t.Fatalf("old metadata decodes to %s, wire %d", v, wire)
	}
	if v, wire := decodeMeta(nodeMeta(vtep)); !v.IsValid() || wire != wireVersion {
		t.Fatalf("our metadata decodes to %s, wire %d", v, wire)
	}
	// A leaving host's metadata: the flag after the wire version, which
	// the decoder (and a version 1 one) reads past.
	leaving := append(nodeMeta(vtep), metaLeaving)
	if v, wire := decodeMeta(leaving); v != vtep || wire != wireVersion {
		t.Fatalf("a leaving host's metadata decodes to %s, wire %d", v, wire)
	}
	for _, m := range [][]byte{oldMeta, nodeMeta(vtep), append(nodeMeta(vtep), 0), {metaVersion}, nil} {
		if metaLeft(m) {
			t.Errorf("metadata %x reads as leaving", m)
		}
	}
	if !metaLeft(leaving) {
		t.Errorf("metadata %x does not read as leaving", leaving)
	}
	n.store.setMember("old", addrOf("old"), vtep, 1, true, false)
	n.store.setMember("new", addrOf("news"), vtep, wireVersion, true, false)
	if err := n.KV().Put("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	n.fake().await(t, func(s sentMsg) bool { return s.to == addrOf("news").String() && len(s.m.entries) == 1 })
	n.fake().await(t, func(s sentMsg) bool { return s.to == addrOf("news").String() && len(s.m.entries) == 0 }) // the trailing digest
	n.fake().mu.Lock()
	defer n.fake().mu.Unlock()
	for _, s := range n.fake().sent {
		if s.to == addrOf("old").String() {
			t.Fatalf("sent %+v to a version 1 host", s.m)
		}
	}
}

// TestHiddenReadsAndHosts: while a host is down, its entries are left out
// of the plain reads but listed, with the time it went down, by the
// reads that ask for hidden entries; Hosts keeps it with its VTEP.
func TestHiddenReadsAndHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for failure detection")
	}
	c := newTestCluster(t)
	nodes := c.startN(3)
	awaitMembers(t, nodes, 3, 15*time.Second)
	for i, n := range nodes {
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, nodes, 6, 15*time.Second)
	killed := time.Now()
	c.kill(nodes[2])
	h0 := nodes[0]
	eventually(t, hideBound(h0.cfg, 3), "h2 hidden on h0", func() error {
		if _, ok := h0.Endpoints().Get("ep-2"); ok {
			return errors.New("still shown")
		}
		return nil
	})
	if got := h0.Endpoints().ListNetwork("net-a", false); len(got) != 2 {
		t.Errorf("plain read lists %d endpoints, want 2: %+v", len(got), got)
	}
	all := h0.Endpoints().ListNetwork("net-a", true)
	if len(all) != 3 || all[2].ID != "ep-2" || all[2].Host != "h2" || all[2].DownSince.Before(killed) || !all[0].DownSince.IsZero() {
		t.Errorf("hidden read = %+v, want ep-2 of h2 down since the kill, and the others up", all)
	}
	rem := h0.Endpoints().ListRemote("net-a", true)
	slices.SortFunc(rem, func(a, b Endpoint) int { return strings.Compare(a.Host, b.Host) }) // in no particular order
	if len(rem) != 2 || rem[0].Host != "h1" || rem[1].Host != "h2" || rem[1].DownSince.Before(killed) {
		t.Errorf("remote read with hidden = %+v, want ep-1 of h1 and ep-2 of h2, not h0's own", rem)
	}
	if rem := h0.Endpoints().ListRemote("net-a", false); len(rem) != 1 || rem[0].ID != "ep-1" {
		t.Errorf("plain remote read = %+v, want ep-1 of h1 only", rem)
	}
	att := h0.Attachments().ListNetwork("net-a", true)
	if len(att) != 3 || att[2].Host != "h2" || att[2].DownSince.IsZero() || len(h0.Attachments().ListNetwork("net-a", false)) != 2 {
		t.Errorf("attachments with hidden = %+v", att)
	}
	var h2 HostState
	for _, h := range h0.Hosts() {
		if h.Name == "h2" {
			h2 = h
		}
	}
	if h2.Alive || h2.DownSince.Before(killed) || h2.VTEP != nodes[2].cfg.VTEP {
		t.Errorf("Hosts() says %+v of h2, want down since the kill with VTEP %s", h2, nodes[2].cfg.VTEP)
	}
	if st := h0.Stats(); st.MembersFailed != 1 || st.Tables[TableEndpoints].Hidden != 1 {
		t.Errorf("stats: %d failed, %+v", st.MembersFailed, st.Tables[TableEndpoints])
	}
}

// TestSynced follows Synced through the cases the host core relies on.
func TestSynced(t *testing.T) {
	t.Run("alone", func(t *testing.T) {
		c := newTestCluster(t)
		n := c.startN(1)[0]
		if err := n.Attachments().Attach("net-x"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := n.WaitSynced(ctx, "net-x"); err != nil {
			t.Fatalf("a host with no seeds never synced a network nobody else has: %v", err)
		}
		if !n.Synced("") {
			t.Fatal("global tables not synced on a host with no seeds")
		}
	})
	t.Run("new host", func(t *testing.T) {
		c := newTestCluster(t)
		nodes := c.startN(2)
		awaitMembers(t, nodes, 2, 15*time.Second)
		const count = 500
		for i := range count {
			if err := nodes[i%2].Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i))); err != nil {
				t.Fatal(err)
			}
		}
		awaitSameView(t, nodes, 2+count, 15*time.Second)

		n := newHostAttached(t, c, nodes[0], "net-a", "net-z")
		if n.Synced("net-a") || n.Synced("") {
			t.Fatal("synced before joining anyone")
		}
		runNode(t, n)
		wctx, wcancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer wcancel()
		if err := n.WaitSynced(wctx, "net-a"); err != nil {
			t.Fatal(err)
		}
		// Synced means merged: everything is there the moment it is true.
		if got := len(n.Endpoints().List("net-a")); got != count {
			t.Fatalf("synced with %d of %d endpoints", got, count)
		}
		if err := n.WaitSynced(wctx, "net-z"); err != nil {
			t.Fatalf("a network no other host has: %v", err)
		}
		n.Attachments().Detach("net-a")
		if n.Synced("net-a") {
			t.Fatal("still synced after detaching")
		}
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.WaitSynced(wctx, "net-a"); err != nil {
			t.Fatal(err)
		}
		if got := len(n.Endpoints().List("net-a")); got != count {
			t.Fatalf("synced again with %d of %d endpoints", got, count)
		}
	})
}

// newHostAttached makes a host "new" of c, seeded with seed, that has
// attached networks; it is not running yet.
func newHostAttached(t *testing.T, c *testCluster, seed *Node, networks ...string) *Node {
	t.Helper()
	cfg := testConfig(t, "new", c.key)
	cfg.Seeds = []string{seed.Addr()}
	cfg.WrapTransport = c.net.Wrap
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, nw := range networks {
		if err := n.Attachments().Attach(nw); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// runNode runs n until the test ends.
func runNode(t *testing.T, n *Node) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = n.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestANewHostAsksEachNetworkOfADifferentHost: a host attaching several
// networks before it joins asks each of another host that keeps it, not
// all of one host, which would stream every network alone (issue 12: a
// new host waited up to 2.2 s for one host's 100,000 endpoints).
func TestANewHostAsksEachNetworkOfADifferentHost(t *testing.T) {
	c := newTestCluster(t)
	nodes := c.startN(4)
	awaitMembers(t, nodes, 4, 15*time.Second)
	nets := []string{"net-a", "net-b", "net-c"}
	const per = 40
	for i := range per * len(nets) {
		nw := nets[i%len(nets)]
		if err := nodes[i%len(nodes)].Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), nw, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		for _, nw := range nets {
			if err := n.Attachments().Attach(nw); err != nil {
				t.Fatal(err)
			}
		}
	}
	awaitSameView(t, nodes, len(nodes)*len(nets)+per*len(nets), 15*time.Second)

	n := newHostAttached(t, c, nodes[0], nets...)
	runNode(t, n)
	wctx, wcancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer wcancel()
	for _, nw := range nets {
		if err := n.WaitSynced(wctx, nw); err != nil {
			t.Fatal(err)
		}
		if got := len(n.Endpoints().List(nw)); got != per {
			t.Errorf("%s synced with %d of %d endpoints", nw, got, per)
		}
	}
	if got := n.Stats().SyncRequests; got < uint64(len(nets)) {
		t.Errorf("%d sync requests for %d networks kept by %d hosts each: some host was asked for several", got, len(nets), len(nodes))
	}
}

// TestGapRepairFromWriter: a change whose packets are all lost is
// repaired from its writer as soon as the writer's next packet shows its
// digest, without waiting for anti-entropy (turned off here).
func TestGapRepairFromWriter(t *testing.T) {
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.SyncInterval = time.Hour
		cfg.PushPullInterval = time.Hour
	}
	nodes := c.startN(2)
	h0, h1 := nodes[0], nodes[1]
	awaitMembers(t, nodes, 2, 15*time.Second)
	for _, n := range nodes {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "h1 sees h0 attached", func() error {
		if len(h1.Attachments().Hosts("net-a")) != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	// Both first syncs must be over, or a retried one would bring the
	// lost endpoint and no pull would be needed.
	awaitSynced(t, nodes, "net-a", 15*time.Second)
	c.net.Partition([]string{h0.Addr()}, []string{h1.Addr()})
	sent := h0.Stats().MessagesSent
	if err := h0.Endpoints().Put(testEndpoint("lost", "net-a", 1)); err != nil {
		t.Fatal(err)
	}
	awaitSent(t, h0, sent+2) // the update and its trailing digest, both lost
	c.net.Heal()
	if err := h0.Endpoints().Put(testEndpoint("next", "net-a", 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "h1 has the lost endpoint", func() error {
		if _, ok := h1.Endpoints().Get("lost"); !ok {
			return errors.New("missing")
		}
		return nil
	})
	if st := h1.Stats(); st.Pulls == 0 {
		t.Errorf("repaired without a pull: %+v", st)
	}
}

// TestStreamQueueBoundedInBytes: with every stream stuck (a peer that
// accepts nothing), large answers queue up to maxQueuedBytes and the rest
// are dropped and counted, so a host asked for much at once cannot grow
// without limit (issue 12: a repair storm in a 50-host ring holding
// 100,000 endpoints grew the process past 24 GiB). One answer larger than
// the bound still goes when nothing waits (a first sync of a big network).
// Once the peer moves again, every queued answer arrives whole.
func TestStreamQueueBoundedInBytes(t *testing.T) {
	n := newTestNode(t, "me")
	stuck := make(chan struct{})
	n.fake().block = stuck
	n.fake().discard = true
	var once sync.Once
	unstick := func() { once.Do(func() { close(stuck) }) }
	t.Cleanup(unstick)
	p := peer{name: "h2", addr: addrOf("h2")}
	answer := func(entries int) *message {
		m := &message{typ: msgEntries, sender: "me", scopes: []string{"net"}}
		for i := range entries {
			m.entries = append(m.entries, entry{table: tableEndpoints, owner: "me", key: fmt.Sprintf("%064x", i), version: uint64(i + 1), value: make([]byte, 200)})
		}
		return m
	}
	huge := answer(maxQueuedBytes/200 + 1000)
	n.send(p, huge) // chunked: more than the bound, alone in the queue
	eventually(t, 5*time.Second, "workers stuck on the peer", func() error {
		if n.fake().blocked.Load() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	big := answer(4000) // about 1 MiB
	errs0 := n.Stats().SendErrors
	for range 200 {
		n.send(p, big)
	}
	// Every worker has taken its job and is stuck on the peer: a worker
	// that has started but not yet taken one would count twice.
	eventually(t, 5*time.Second, "every worker stuck", func() error {
		if b := n.fake().blocked.Load(); b != maxOutStreams {
			return fmt.Errorf("%d of %d workers stuck", b, maxOutStreams)
		}
		return nil
	})
	n.streamMu.Lock()
	queued, bytes, writing := len(n.streamQ), n.streamBytes, n.streamWorkers-1 // one worker holds huge
	n.streamMu.Unlock()
	dropped := n.Stats().SendErrors - errs0
	if bytes > maxQueuedBytes {
		t.Fatalf("%d streams hold %d bytes queued, bound %d", queued, bytes, maxQueuedBytes)
	}
	if dropped == 0 || queued == 0 || queued+writing+int(dropped) != 200 {
		t.Fatalf("of 200 answers of 1 MiB, %d queued, %d being written, %d dropped: want some queued and some dropped, none lost uncounted", queued, writing, dropped)
	}
	unstick()
	eventually(t, 30*time.Second, "queue drained", func() error {
		if st := n.Stats(); st.StreamQueue+st.StreamsOut != 0 {
			return fmt.Errorf("%d queued, %d being written", st.StreamQueue, st.StreamsOut)
		}
		return nil
	})
	n.streamMu.Lock()
	defer n.streamMu.Unlock()
	if n.streamBytes != 0 {
		t.Fatalf("empty queue counts %d bytes", n.streamBytes)
	}
}

// TestRejoinTargetsBounded: a rejoin round joins the seeds that are not
// alive members and at most rejoinFailed failed peers, never one that is
// alive again or went down less than a RejoinInterval ago; round after
// round, every other failed peer gets its turn.
func TestRejoinTargetsBounded(t *testing.T) {
	n := newTestNode(t, "me")
	n.cfg.Seeds = []string{"198.51.100.9:7946"}
	n.cfg.RejoinInterval = 10 * time.Second
	long := time.Now().Add(-time.Minute)
	down := map[string]bool{}
	for i := range 9 {
		a := fmt.Sprintf("198.51.100.%d:7946", 20+i)
		n.failed[fmt.Sprintf("f%d", i)] = failed{addr: a, since: long}
		down[a] = true
	}
	n.store.setMember("back", addrOf("back"), netip.Addr{}, wireVersion, true, false)
	n.failed["back"] = failed{addr: addrOf("back").String(), since: long}
	n.failed["just-down"] = failed{addr: "198.51.100.40:7946", since: time.Now()}
	n.failed["seed"] = failed{addr: n.cfg.Seeds[0], since: long} // joined as a seed, not twice
	seen := map[string]bool{}
	for range 50 {
		targets := n.rejoinTargets()
		if len(targets) != 1+rejoinFailed || targets[0] != n.cfg.Seeds[0] {
			t.Fatalf("targets %v: want the seed, then %d failed peers", targets, rejoinFailed)
		}
		round := map[string]bool{}
		for _, a := range targets[1:] {
			if !down[a] || round[a] {
				t.Fatalf("targets %v: %s is alive, unknown or repeated", targets, a)
			}
			round[a], seen[a] = true, true
		}
	}
	if len(seen) != len(down) {
		t.Fatalf("50 rounds reached %d of %d failed peers", len(seen), len(down))
	}
}
