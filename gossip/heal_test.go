package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestOneSidedHealAnswersWithOwnDigests: a heal from a host this host has
// seen alive without a break for steadyFor (it counted this host down,
// this host never counted it down: this host was slow) is answered with
// this host's digest of its own entries only, and the sender's own digest
// is noted, so that each side pulls the other's entries; a heal from a host
// just back here (a return both sides saw, as after a partition) and an
// anti-entropy round (roots only) get the per-owner digests, from which
// the sender pulls every owner that differs, as before.
func TestOneSidedHealAnswersWithOwnDigests(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upFor    time.Duration
		heal     bool
		oneSided bool
	}{
		{"heal from a host up without a break", time.Minute, true, true},
		{"heal from a host just back", time.Second, true, false},
		{"heal from a host up just under steadyFor", steadyFor - 5*time.Second, true, false},
		{"anti-entropy from a host up without a break", time.Minute, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, "me")
			n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
			n.store.merge(&entry{table: tableAttachments, owner: "h2", key: "net-a", version: 1}, false)
			// Written to the store alone: nothing is sent but the answer.
			n.store.put(tableAttachments, "net-a", nil)
			theirs := testEndpoint("ep-h2", "net-a", 3)
			if r := n.store.merge(&entry{table: tableEndpoints, owner: "h2", key: theirs.ID, version: 2, value: encodeEndpoint(&theirs)}, false); r != mergeApplied {
				t.Fatalf("h2's endpoint: merge result %v, want applied", r)
			}
			mine := testEndpoint("ep-me", "net-a", 2)
			n.store.put(tableEndpoints, mine.ID, encodeEndpoint(&mine))
			n.markSynced("", "net-a")
			n.store.mu.Lock()
			n.store.owners["h2"].upAt = n.store.stamp(time.Now().Add(-tc.upFor))
			n.store.mu.Unlock()

			// h2's view differs: it holds two endpoints of its own (it
			// wrote one while it counted this host down), and nothing of
			// this host's.
			ds := []digest{{scope: "net-a", count: 2, sum: 12345}}
			if tc.heal {
				ds = append(ds, digest{scope: "net-a", owner: "h2", count: 2, sum: 12345, asOf: 10})
			}
			before := n.Stats().HealsOneSided
			n.handle(encodeMessage(nil, &message{typ: msgDigest, sender: "h2", digests: ds}), netip.AddrPort{})

			answer := n.fake().await(t, func(s sentMsg) bool {
				return s.to == addrOf("h2").String() && (s.m.typ == msgOwners || s.m.typ == msgUpdate)
			})
			n.mu.Lock()
			_, gap := n.gaps[want{"net-a", "h2"}]
			n.mu.Unlock()
			oneSided := n.Stats().HealsOneSided - before
			if !tc.oneSided {
				if answer.m.typ != msgOwners {
					t.Fatalf("answered with message type %d, want the per-owner digests (%d)", answer.m.typ, msgOwners)
				}
				owners := map[string]bool{}
				for _, d := range answer.m.digests {
					owners[d.owner] = true
				}
				if !owners["me"] || !owners["h2"] {
					t.Errorf("per-owner digests of %v, want me and h2", owners)
				}
				if gap || oneSided != 0 {
					t.Errorf("gap on h2's entries %v, one-sided heals %d: want neither", gap, oneSided)
				}
				return
			}
			if answer.m.typ != msgUpdate || len(answer.m.entries) != 0 {
				t.Fatalf("answered with message type %d and %d entries, want an update with no entries (%d)", answer.m.typ, len(answer.m.entries), msgUpdate)
			}
			own, _ := n.store.ownTally("net-a")
			if !slices.ContainsFunc(answer.m.digests, func(d digest) bool {
				return d.scope == "net-a" && d.owner == "me" && d.count == own.count && d.sum == own.sum
			}) || len(answer.m.digests) != 1 {
				t.Errorf("answer's digests %+v, want only this host's own of net-a (%+v)", answer.m.digests, own)
			}
			if !gap {
				t.Error("h2's own digest differs from this host's copy, but no gap was noted")
			}
			if oneSided != 1 {
				t.Errorf("one-sided heals counted %d, want 1", oneSided)
			}
			n.fake().mu.Lock()
			defer n.fake().mu.Unlock()
			for _, s := range n.fake().sent {
				if s.m.typ == msgOwners {
					t.Errorf("sent per-owner digests to %s as well", s.to)
				}
			}
		})
	}
}

// TestOneSidedHealStillSendsAllToAnEmptyAsker: a one-sided heal from a
// host that holds nothing of a scope (its root count is zero) still gets
// every live entry of it, as any asker with nothing does: its own digest
// alone would let it pull only this host's entries.
func TestOneSidedHealStillSendsAllToAnEmptyAsker(t *testing.T) {
	n := newTestNode(t, "me")
	n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
	n.store.setMember("h3", addrOf("h3"), netip.Addr{}, wireVersion, true, false)
	n.store.merge(&entry{table: tableAttachments, owner: "h2", key: "net-a", version: 1}, false)
	n.store.put(tableAttachments, "net-a", nil)
	third := testEndpoint("ep-h3", "net-a", 3)
	n.store.merge(&entry{table: tableEndpoints, owner: "h3", key: third.ID, version: 2, value: encodeEndpoint(&third)}, false)
	mine := testEndpoint("ep-me", "net-a", 2)
	n.store.put(tableEndpoints, mine.ID, encodeEndpoint(&mine))
	n.markSynced("", "net-a")
	n.store.mu.Lock()
	n.store.owners["h2"].upAt = n.store.stamp(time.Now().Add(-time.Minute))
	n.store.mu.Unlock()

	n.handle(encodeMessage(nil, &message{typ: msgDigest, sender: "h2", digests: []digest{
		{scope: "net-a"}, {scope: "net-a", owner: "h2", asOf: 10},
	}}), netip.AddrPort{})
	got := n.fake().await(t, func(s sentMsg) bool { return s.m.typ == msgEntries })
	keys := map[string]bool{}
	for _, e := range got.m.entries {
		keys[e.key] = true
	}
	if !keys[mine.ID] || !keys[third.ID] || got.m.flags&flagDone == 0 {
		t.Errorf("sent entries %v (flags %#x), want this host's and h3's, complete", keys, got.m.flags)
	}
	if n.Stats().HealsOneSided != 1 {
		t.Errorf("one-sided heals %d, want 1 (the case under test)", n.Stats().HealsOneSided)
	}
}

// TestHealCarriesOwnDigests: a heal of a host back from down sends the
// roots of every scope both hosts keep and this host's digests of its own
// entries there, an empty one included (it tells the other host that they
// were all deleted); the heal of a host seen for the first time sends the
// roots alone, so that it is answered in full (it may have restarted
// faster than anyone saw it go).
func TestHealCarriesOwnDigests(t *testing.T) {
	for _, back := range []bool{true, false} {
		t.Run(fmt.Sprintf("back %v", back), func(t *testing.T) {
			n := newTestNode(t, "me")
			n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
			for _, nw := range []string{"net-a", "net-b"} {
				n.store.merge(&entry{table: tableAttachments, owner: "h2", key: nw, version: 1}, false)
				n.store.put(tableAttachments, nw, nil)
			}
			mine := testEndpoint("ep-me", "net-a", 2)
			n.store.put(tableEndpoints, mine.ID, encodeEndpoint(&mine))
			n.markSynced("", "net-a", "net-b")
			n.heal("h2", back)
			got := n.fake().await(t, func(s sentMsg) bool { return s.m.typ == msgDigest })
			for _, s := range []string{"", "net-a", "net-b"} {
				root, _ := n.store.root(s)
				own, _ := n.store.ownTally(s)
				if !slices.ContainsFunc(got.m.digests, func(d digest) bool {
					return d.scope == s && d.owner == "" && d.count == root.count && d.sum == root.sum
				}) {
					t.Errorf("scope %q: no root digest %+v in %+v", s, root, got.m.digests)
				}
				hasOwn := slices.ContainsFunc(got.m.digests, func(d digest) bool {
					return d.scope == s && d.owner == "me" && d.count == own.count && d.sum == own.sum
				})
				if hasOwn != back {
					t.Errorf("scope %q: own digest %+v sent %v, want %v; digests %+v", s, own, hasOwn, back, got.m.digests)
				}
			}
			if own, _ := n.store.ownTally("net-b"); own.count != 0 {
				t.Fatalf("net-b holds %d of this host's entries, want none (the empty digest's case)", own.count)
			}
			if want := map[bool]int{true: 6, false: 3}[back]; len(got.m.digests) != want {
				t.Errorf("%d digests, want %d", len(got.m.digests), want)
			}
		})
	}
}

// TestSlowHostGetsWhatWasWrittenWhileCountedDown: a host too slow to
// answer probes in time (everything sent to it arrives 5 s late, while
// it hears the others answer its own probes) is declared dead by the
// others and comes back, never having counted any of them down. A write
// and a delete made while it was counted down were not sent to it; with
// anti-entropy off, only the heal can bring them. The slow host answers
// the heals one-sidedly, and pulls what the writer holds of its own.
func TestSlowHostGetsWhatWasWrittenWhileCountedDown(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for a host to be declared dead and come back")
	}
	saved := steadyFor
	steadyFor = 2 * time.Second
	t.Cleanup(func() { steadyFor = saved })
	const lag = 5 * time.Second
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.SyncInterval = 10 * time.Minute // no anti-entropy round in this test
	}
	nodes := c.startN(3)
	cfg := testConfig(t, "slow", c.key)
	cfg.VTEP = netip.AddrFrom4([4]byte{203, 0, 113, 20})
	cfg.Seeds = []string{nodes[0].Addr()}
	// Its own probes wait long enough for the late answers: it never
	// counts the others down.
	cfg.tuneMemberlist = func(mc *memberlist.Config) {
		mc.ProbeInterval, mc.ProbeTimeout = 4*lag, 2*lag
	}
	slow := c.start(cfg)
	all := append(slices.Clone(nodes), slow)
	awaitMembers(t, all, 4, 15*time.Second)
	for i, n := range all {
		if err := n.Attachments().Attach("net-a"); err != nil {
			t.Fatal(err)
		}
		if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i), "net-a", byte(i+2))); err != nil {
			t.Fatal(err)
		}
	}
	awaitSameView(t, all, 8, 15*time.Second)
	awaitSynced(t, all, "net-a", 15*time.Second)
	eventually(t, 2*steadyFor, "the slow host has seen the others up for steadyFor", func() error {
		for _, n := range nodes {
			if up := slow.store.upFor(n.cfg.NodeName); up < steadyFor {
				return fmt.Errorf("%s up for %s", n.cfg.NodeName, up)
			}
		}
		return nil
	})

	slowFrom := time.Now()
	c.net.Slow(slow.Addr(), lag)
	h0 := nodes[0]
	eventually(t, 30*time.Second, "h0 counts the slow host down", func() error {
		if _, ok := h0.store.peerAddr("slow"); ok {
			return errors.New("still up")
		}
		return nil
	})
	// Not sent to the slow host: h0 counts it down.
	if err := h0.Endpoints().Put(testEndpoint("ep-during", "net-a", 40)); err != nil {
		t.Fatal(err)
	}
	h0.Endpoints().Delete("ep-0")
	eventually(t, 30*time.Second, "h0 sees the slow host back", func() error {
		if _, ok := h0.store.peerAddr("slow"); !ok {
			return errors.New("still down")
		}
		return nil
	})
	c.net.Slow(slow.Addr(), 0)

	eventually(t, 15*time.Second, "the slow host has h0's write and delete", func() error {
		if _, ok := slow.Endpoints().Get("ep-during"); !ok {
			return errors.New("ep-during missing")
		}
		if _, ok := slow.Endpoints().Get("ep-0"); ok {
			return errors.New("ep-0 still there")
		}
		return nil
	})
	awaitSameView(t, all, 8, 15*time.Second)
	for _, n := range nodes {
		if up := slow.store.upFor(n.cfg.NodeName); up < time.Since(slowFrom) {
			t.Errorf("the slow host counted %s down (up for %s): the scenario is not one-sided", n.cfg.NodeName, up)
		}
	}
	// The heals are late too (sent when h0 saw it back, before the lag
	// ended).
	eventually(t, 2*lag, "a heal answered one-sidedly", func() error {
		if st := slow.Stats(); st.HealsOneSided == 0 {
			return fmt.Errorf("none: %+v", st)
		}
		return nil
	})
}
