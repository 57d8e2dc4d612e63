package main

// Figures that need the package's Stats and Synced (issue 12 and later).

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// extraJoinStats prints what a new host received to get a ring's
// endpoints: sync requests and bytes.
func extraJoinStats(endpoints int, order string, n *gossip.Node) {
	st := n.Stats()
	result("join", endpoints, "tenet", order+"_sync_requests", st.SyncRequests)
	result("join", endpoints, "tenet", order+"_KiB_received", float64(st.BytesReceived)/1024)
}

// runTombstones measures deletion markers: how many are left on every
// host at 1, 1.5 and 2 times their TTL after the last delete, through a
// partition, a heal and a host's restart; and how much a new host is sent
// for a network with and without many deletions made before.
func runTombstones(o *options) error {
	const hosts, perHost, ttl = 8, 50, 10 * time.Second
	r, err := newRing(o)
	if err != nil {
		return err
	}
	tune := func(cfg *gossip.Config) {
		cfg.TombstoneTTL = ttl
		cfg.ReapInterval = time.Second
		cfg.SyncInterval = 2 * time.Second
		cfg.RejoinInterval = time.Second
	}
	r.tune = tune
	if err := r.form(hosts, time.Second, "tombstones"); err != nil {
		return err
	}
	const nw = "net-t"
	for i, node := range r.nodes {
		for j := range perHost {
			ep := endpoint(fmt.Sprintf("t-%d-%d", i, j), i*perHost+j)
			ep.Network = nw
			if err := node.Endpoints().Put(ep); err != nil {
				return err
			}
		}
	}
	if _, err := eventually(time.Minute, 50*time.Millisecond, func() error {
		for i, node := range r.nodes {
			if c := len(node.Endpoints().List(nw)); c != hosts*perHost {
				return fmt.Errorf("%s has %d", r.names[i], c)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Cut three hosts off; both sides delete; heal; one host restarts.
	var cut []string
	for _, node := range r.nodes[5:] {
		cut = append(cut, node.Addr())
	}
	r.net.Partition(nil, cut)
	for _, name := range r.names {
		r.downs.expect(name) // downs here are the partition's, not false
	}
	time.Sleep(3 * time.Second) // the partition's first half: the scenario, not a wait for an outcome
	for i, node := range r.nodes {
		for j := range perHost / 2 {
			node.Endpoints().Delete(fmt.Sprintf("t-%d-%d", i, j))
		}
	}
	last := time.Now()
	time.Sleep(3 * time.Second) // the partition's second half
	r.net.Heal()
	healed := time.Now()
	// h1 restarts: stops for good, and a new node with its name joins.
	r.cancel[1]()
	time.Sleep(2 * time.Second) // down a while: the scenario
	if _, _, err := r.start(r.names[1], nil); err != nil {
		return err
	}
	all := append(append([]*gossip.Node{}, r.nodes[:1]...), r.nodes[2:]...)
	// How long after the heal every host shows exactly the live endpoints:
	// a delete that has not reached a host by its marker's expiry is ended
	// only by its owner's retirement.
	agreed := make(chan time.Duration, 1)
	go func() {
		for time.Since(last) < 4*ttl {
			if agree(all, nw, hosts*perHost/2, perHost/2) {
				agreed <- time.Since(healed)
				return
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		agreed <- -1
	}()
	count := func() (total int) {
		for _, node := range all {
			total += node.Stats().Tables[gossip.TableEndpoints].Tombstones
		}
		return total
	}
	for _, at := range []float64{1, 1.5, 2} {
		time.Sleep(time.Until(last.Add(time.Duration(at * float64(ttl))))) // sampling times
		c := count()
		log.Printf("tombstones on all %d hosts %.1fx TTL after the last delete: %d", len(all), at, c)
		result("tombstones", hosts, "tenet", fmt.Sprintf("left_at_%.1fx_ttl", at), c)
	}
	most := 0
	for time.Since(last) < 4*ttl {
		most = max(most, count())
		time.Sleep(250 * time.Millisecond) // sampling interval
	}
	result("tombstones", hosts, "tenet", "most_between_2x_and_4x_ttl", most)
	live, retired, pulls := 0, uint64(0), uint64(0)
	dropped := map[string]uint64{}
	for _, node := range all {
		live += len(node.Endpoints().List(nw))
		st := node.Stats()
		retired += st.EntriesRetired
		pulls += st.Pulls
		for why, k := range st.Dropped {
			dropped[why] += k
		}
	}
	result("tombstones", hosts, "tenet", "pulls", pulls)
	for why, k := range dropped {
		result("tombstones", hosts, "tenet", "dropped_"+why, k)
	}
	// Stale copies ended by their owner with a fresh marker: a delete that
	// missed a side of the partition until its marker had expired.
	result("tombstones", hosts, "tenet", "entries_retired", retired)
	if d := <-agreed; d >= 0 {
		result("tombstones", hosts, "tenet", "agreed_after_heal_ms", float64(d.Microseconds())/1000)
	} else {
		result("tombstones", hosts, "tenet", "agreed_after_heal_ms", "never")
	}
	result("tombstones", hosts, "tenet", "endpoints_everywhere_pct", 100*float64(live)/float64(len(all)*hosts*perHost/2))

	return syncSize(o)
}

// agree reports whether every node lists exactly want endpoints of nw and
// none of the deleted ones (t-<host>-<j> for j below deleted).
func agree(nodes []*gossip.Node, nw string, want, deleted int) bool {
	for _, node := range nodes {
		eps := node.Endpoints().List(nw)
		if len(eps) != want {
			return false
		}
		for _, ep := range eps {
			var h, j int
			if _, err := fmt.Sscanf(ep.ID, "t-%d-%d", &h, &j); err == nil && j < deleted {
				return false
			}
		}
	}
	return true
}

// syncSize has a new host sync a network of 1,000 endpoints, once where
// none were ever deleted and once after 20,000 deletions, and prints the
// bytes each received.
func syncSize(o *options) error {
	const live, deleted = 1000, 20_000
	r, err := newRing(o)
	if err != nil {
		return err
	}
	if err := r.form(3, time.Second, "tombstones"); err != nil {
		return err
	}
	h0 := r.nodes[0]
	for _, nw := range []string{"clean", "churned"} {
		for i := range live {
			ep := endpoint(fmt.Sprintf("%s-%d", nw, i), i)
			ep.Network = nw
			if err := h0.Endpoints().Put(ep); err != nil {
				return err
			}
		}
	}
	for i := range deleted {
		ep := endpoint(fmt.Sprintf("gone-%d", i), i)
		ep.Network = "churned"
		if err := h0.Endpoints().Put(ep); err != nil {
			return err
		}
		h0.Endpoints().Delete(ep.ID)
	}
	tombs := h0.Stats().Tables[gossip.TableEndpoints].Tombstones
	for _, nw := range []string{"clean", "churned"} {
		node, _, err := r.start("new-"+nw, func(n *gossip.Node) error { return n.Attachments().Attach(nw) })
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = node.WaitSynced(ctx, nw)
		cancel()
		if err != nil {
			return fmt.Errorf("new host never synced %s: %w", nw, err)
		}
		st := node.Stats()
		log.Printf("new host synced %s (%d live endpoints, %d deletions before): %d bytes, %d endpoints, %d tombstones",
			nw, live, map[string]int{"clean": 0, "churned": deleted}[nw], st.BytesReceived, len(node.Endpoints().List(nw)), st.Tables[gossip.TableEndpoints].Tombstones)
		result("tombstones", 3, "tenet", "sync_KiB_"+nw, float64(st.BytesReceived)/1024)
		result("tombstones", 3, "tenet", "sync_tombstones_"+nw, st.Tables[gossip.TableEndpoints].Tombstones)
	}
	result("tombstones", 3, "tenet", "tombstones_on_writer", tombs)
	return nil
}
