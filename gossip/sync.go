package gossip

// First sync, and Synced. A host that starts, or attaches a network, asks
// one host that keeps the scope for all of it (msgSyncReq; several scopes
// go to different hosts where they can, so that they arrive side by side
// rather than one after another from one host) and gets every
// live entry in one answer (msgEntries, flagged done): one copy, whatever
// order it attached and joined in, and no tombstones, so what a new host
// receives does not grow with the deletions ever made. Without progress
// for firstSyncRetry it asks another host. The global tables come with
// memberlist's push/pull at the join. Synced reports when a scope has been
// merged this way, or when no other host keeps it; until then the scope
// takes no part in repair (what it lacks is on its way).
//
// A host's own entries met in an answer are adopted until the scope has
// been merged in full from another host since start (a restarted host
// takes back what it wrote before); after that an own entry this host does
// not hold is stale, and it answers with a fresh tombstone (Node.mergeOwn).

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

const (
	// firstSyncRetry is how long a first sync waits without progress
	// before it asks another host.
	firstSyncRetry = 3 * time.Second
)

// scopeSync is the first-sync state of one scope.
type scopeSync struct {
	synced   bool
	caughtUp bool          // merged in full from another host since start: own entries are no longer adopted
	ch       chan struct{} // closed once synced
	asked    string        // the host asked, if any
	askedAt  time.Time
	tried    map[string]bool
}

func newScopeSync() *scopeSync {
	return &scopeSync{ch: make(chan struct{}), tried: make(map[string]bool)}
}

// syncStateLocked returns the first-sync state of scope, creating it
// (unsynced) if new; n.mu must be held.
func (n *Node) syncStateLocked(scope string) *scopeSync {
	ss := n.syncs[scope]
	if ss == nil {
		ss = newScopeSync()
		n.syncs[scope] = ss
	}
	return ss
}

// wantSync marks scope as needing a first sync (again) and kicks the
// housekeeping, which asks a host that keeps it.
func (n *Node) wantSync(scope string) {
	n.mu.Lock()
	if ss := n.syncs[scope]; ss != nil && ss.synced {
		fresh := newScopeSync()
		fresh.caughtUp = ss.caughtUp
		n.syncs[scope] = fresh
	} else {
		n.syncStateLocked(scope)
	}
	n.mu.Unlock()
	n.kickNow()
}

// resetSync makes scope unsynced again (it was detached).
func (n *Node) resetSync(scope string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ss := n.syncs[scope]; ss != nil && ss.synced {
		fresh := newScopeSync()
		fresh.caughtUp = ss.caughtUp
		n.syncs[scope] = fresh
	}
}

// markSynced records that scopes were merged from another host (or that no
// other host keeps them).
func (n *Node) markSynced(scopes ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range scopes {
		ss := n.syncStateLocked(s)
		if !ss.synced {
			ss.synced = true
			close(ss.ch)
			if s != "" {
				n.log.Debug("network synced", "network", s)
			}
		}
	}
}

// caughtUp records that scopes were merged in full from another host.
func (n *Node) caughtUp(scopes ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range scopes {
		n.syncStateLocked(s).caughtUp = true
	}
}

// adopting reports whether this host still takes back its own entries of
// scope from other hosts: until it has merged the scope in full from
// another host since it started, and for one TombstoneTTL after its start
// at most. A seed host that restarts counts as synced at once (it has
// nobody to wait for), but still adopts.
//
// The bound keeps adoption from bringing back what this life deleted. Until
// born+TTL every marker this life wrote is still held (its version is at
// least the start's time, and it is reaped TTL after its version), so a
// stale copy of an entry deleted in this life meets its marker and is
// refused. After it, a missed delete's copy may arrive with its marker
// gone: a host that never caught up (it attached the scope first) took it
// back as a previous life's entry, for good (TestDeleteMissedPastTTLIsNotTakenBack).
// Now it is retired.
func (n *Node) adopting(scope string) bool {
	if !n.store.young() {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	ss := n.syncs[scope]
	return ss == nil || !ss.caughtUp
}

// isSynced reports whether scope has had its first sync.
func (n *Node) isSynced(scope string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	ss := n.syncs[scope]
	return ss != nil && ss.synced
}

// Synced reports whether this host has caught up with network since it
// started (or since it last attached the network): it has merged the
// network's endpoints from a host attached to it, or it knows the global
// tables and no other alive host has the network. Until then a reader
// should not take a missing remote endpoint for a deleted one. The empty
// network asks about the global tables (networks, attachments, kv):
// merged from a host at the join, or no seeds to join.
func (n *Node) Synced(network string) bool {
	return n.isSynced(network) && (network == "" || n.store.isAttached(network))
}

// WaitSynced waits until Synced(network) or ctx is done. It waits for a
// network this host has not attached until it attaches it and syncs.
func (n *Node) WaitSynced(ctx context.Context, network string) error {
	for {
		n.mu.Lock()
		ch := n.syncStateLocked(network).ch
		n.mu.Unlock()
		select {
		case <-ch:
			if n.Synced(network) {
				return nil
			}
			// Synced, then detached: wait for the next attach.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond): // poll interval while detached
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// firstSyncs asks for the scopes that still need a first sync, one host
// per scope, spread over the hosts (one request per host asked), and
// marks synced those no other host keeps. It returns when it next needs
// to run (zero: not until something changes).
func (n *Node) firstSyncs(now time.Time) time.Time {
	n.mu.Lock()
	var pending []string
	for s, ss := range n.syncs {
		if !ss.synced {
			pending = append(pending, s)
		}
	}
	globalSynced := n.syncs[""] != nil && n.syncs[""].synced
	n.mu.Unlock()
	slices.Sort(pending)

	var next time.Time
	asks := make(map[peer][]string)
	var order []peer
	inOrder := map[string]int{} // name: index in order
	for _, s := range pending {
		if s != "" && !n.store.isAttached(s) {
			continue
		}
		if s == "" && n.rejoining.Load() {
			continue // a join under way brings the global tables
		}
		peers := n.store.audience(s)
		if len(peers) == 0 {
			if s != "" && globalSynced {
				n.markSynced(s) // no other host has the network
			}
			continue
		}
		n.mu.Lock()
		ss := n.syncStateLocked(s)
		if ss.asked != "" && now.Sub(ss.askedAt) < firstSyncRetry && slices.ContainsFunc(peers, func(p peer) bool { return p.name == ss.asked }) {
			if due := ss.askedAt.Add(firstSyncRetry); next.IsZero() || due.Before(next) {
				next = due
			}
			n.mu.Unlock()
			continue
		}
		// Spread the scopes over the hosts that keep them: one host asked
		// for every scope streams them all alone (a host attaching 10
		// networks of 10,000 endpoints each waited 0.4-2.2 s for one
		// host's 6.8 MB). A host already asked for another scope is asked
		// again only when every untried host keeping this one is.
		fresh := slices.DeleteFunc(slices.Clone(peers), func(p peer) bool { return ss.tried[p.name] })
		if len(fresh) == 0 {
			clear(ss.tried)
			fresh = peers
		}
		idle := slices.DeleteFunc(slices.Clone(fresh), func(p peer) bool {
			_, asked := inOrder[p.name]
			return asked
		})
		var pick *peer
		if len(idle) > 0 {
			p := idle[rand.IntN(len(idle))]
			inOrder[p.name] = len(order)
			order = append(order, p)
			pick = &order[len(order)-1]
		} else {
			pick = &order[inOrder[fresh[rand.IntN(len(fresh))].name]]
		}
		ss.asked, ss.askedAt, ss.tried[pick.name] = pick.name, now, true
		n.mu.Unlock()
		asks[*pick] = append(asks[*pick], s)
		if due := now.Add(firstSyncRetry); next.IsZero() || due.Before(next) {
			next = due
		}
	}
	for _, p := range order {
		n.stats.syncRequests.Add(1)
		n.send(p, &message{typ: msgSyncReq, sender: n.cfg.NodeName, scopes: asks[p]})
	}
	return next
}

// progress notes that an answer for a first sync is arriving from sender,
// so the scopes are not asked of another host while it does.
func (n *Node) progress(sender string, scopes []string, now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range scopes {
		if ss := n.syncs[s]; ss != nil && !ss.synced && ss.asked == sender {
			ss.askedAt = now
		}
	}
}

// answerSyncReq sends every live entry of the asked scopes this host keeps.
func (n *Node) answerSyncReq(m *message, from netip.AddrPort) {
	entries, have := n.store.scopeEntries(m.scopes, false)
	if len(have) == 0 {
		return
	}
	n.reply(m.sender, from, &message{typ: msgEntries, flags: flagDone, sender: n.cfg.NodeName, scopes: have, entries: entries})
}
