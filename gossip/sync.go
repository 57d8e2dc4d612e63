package gossip

// Per-network anti-entropy. memberlist's push/pull does not say which peer
// it talks to, so it cannot be scoped; it carries only the global tables
// (networks, blocks, attachments). Endpoints are repaired here instead,
// only between hosts attached to the endpoint's network:
//
//   - every SyncInterval (scaled like memberlist's push/pull above 32
//     attached hosts), for each network it has, a host sends its view of
//     that network's endpoints to one random attached peer (msgSyncReq);
//   - the peer merges it and answers with its own view (msgSyncResp);
//   - a host that has just attached (or adopted an attachment after a
//     restart) asks the first attached peer it learns of at once, so a
//     new host gets a network's endpoints in one round trip.
//
// Hosts keep only the endpoints of networks they have (and their own), so
// memory and repair traffic scale with a host's networks, not the cluster.

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// maxParked bounds the peers with sync jobs waiting for their membership.
const maxParked = 64

// unpark queues the sync jobs parked for peer, which just joined. Called
// from memberlist's NotifyJoin; it only sends on a channel without
// blocking.
func (n *Node) unpark(peer string) {
	n.mu.Lock()
	jobs := n.parked[peer]
	delete(n.parked, peer)
	n.mu.Unlock()
	for _, j := range jobs {
		n.requestSync(j.to, j.networks, j.reply)
	}
}

type syncJob struct {
	to       string
	networks []string
	reply    bool
}

// requestSync queues a sync of networks with host to; it never blocks (a
// full queue drops the job; the periodic round catches up).
func (n *Node) requestSync(to string, networks []string, reply bool) {
	if len(networks) == 0 {
		return
	}
	select {
	case n.syncJobs <- syncJob{to: to, networks: networks, reply: reply}:
	default:
		n.log.Debug("sync queue full", "networks", len(networks), "peer", to)
	}
}

// syncWorker sends queued syncs off memberlist's goroutines (a reliable
// send dials TCP). Jobs queued together for the same peer go in one
// message: a host that just joined asks for all its networks at once.
func (n *Node) syncWorker(ctx context.Context) {
	for {
		var batch []syncJob
		select {
		case <-ctx.Done():
			return
		case job := <-n.syncJobs:
			batch = append(batch, job)
		}
	drain:
		for len(batch) < cap(n.syncJobs) {
			select {
			case job := <-n.syncJobs:
				batch = append(batch, job)
			default:
				break drain
			}
		}
		type dest struct {
			to    string
			reply bool
		}
		groups := make(map[dest][]string)
		var order []dest
		for _, j := range batch {
			d := dest{j.to, j.reply}
			if _, ok := groups[d]; !ok {
				order = append(order, d)
			}
			for _, nw := range j.networks {
				if !slices.Contains(groups[d], nw) {
					groups[d] = append(groups[d], nw)
				}
			}
		}
		for _, d := range order {
			n.sendSync(d.to, groups[d], d.reply)
		}
	}
}

func (n *Node) sendSync(to string, networks []string, reply bool) {
	n.mu.Lock()
	peer := n.members[to]
	if peer == nil {
		// A peer can ask before we have merged its membership: memberlist
		// answers a join's push/pull before merging the joiner. Park the
		// job until NotifyJoin (bounded; the periodic round catches up).
		if len(n.parked) < maxParked {
			n.parked[to] = append(n.parked[to], syncJob{to: to, networks: networks, reply: reply})
		}
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	typ := byte(msgSyncReq)
	if reply {
		typ = msgSyncResp
	}
	msg := encodeMessage(nil, &message{typ: typ, sender: n.cfg.NodeName, networks: networks,
		entries: n.store.networkState(networks...)})
	if err := n.ml.SendReliable(peer, msg); err != nil {
		n.stats.sendErrors.Add(1)
		n.log.Debug("sync networks", "networks", len(networks), "peer", to, "err", err)
		return
	}
	n.stats.sent.Add(1)
}

// syncRound starts one sync per network this host has, each with a random
// attached peer. It returns the interval until the next round.
func (n *Node) syncRound() time.Duration {
	most := 0
	for _, e := range n.store.owned(tableAttachments) {
		peers := n.store.attached(e.key)
		most = max(most, len(peers)+1)
		if len(peers) == 0 {
			continue
		}
		n.requestSync(peers[rand.IntN(len(peers))], []string{e.key}, false)
	}
	return scaleInterval(n.cfg.SyncInterval, most)
}

// scaleInterval stretches interval above 32 hosts as memberlist does for
// push/pull, so repair traffic per host grows with log n, not n.
func scaleInterval(interval time.Duration, hosts int) time.Duration {
	if hosts <= 32 {
		return interval
	}
	mult := math.Ceil(math.Log2(float64(hosts))-5) + 1
	return time.Duration(mult) * interval
}

// wantSync marks network as needing a first sync and asks any attached
// peer already known.
func (n *Node) wantSync(network string) {
	n.mu.Lock()
	n.needSync[network] = true
	n.mu.Unlock()
	if peers := n.store.attached(network); len(peers) > 0 {
		n.requestSync(peers[rand.IntN(len(peers))], []string{network}, false)
	}
}

// synced records that network had a sync answer.
func (n *Node) synced(network string) {
	n.mu.Lock()
	delete(n.needSync, network)
	n.mu.Unlock()
}

// waitingSync reports whether this host still waits for a first sync of
// network; handle then asks the peer whose attachment it just merged.
func (n *Node) waitingSync(network string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.needSync[network]
}
