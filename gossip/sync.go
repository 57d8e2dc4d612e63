package gossip

// Repair. Direct sends (send.go) carry every change once; repair finds and
// fills what they missed, by digests (store.go: per scope, per owner, a
// count and a hash sum of the live entries), so that two hosts that agree
// exchange a few bytes and two that differ exchange only the owners that
// differ:
//
//   - Gap repair, from the writer. Once a writer's scope is quiet, it sends
//     its digest of its own entries there (the trail, see send.go). A
//     receiver whose copy differs, still after gapWait (a large entry on a
//     stream may still be on its way), asks the writer for its entries of
//     that scope (a msgEntries with a want) and gets them, tombstones
//     included. A lost packet costs about trailDelay + gapWait + one round
//     trip after the burst it was part of.
//   - Anti-entropy, between any two hosts. Every SyncInterval (stretched
//     like memberlist's push/pull above 32 hosts) a host sends each scope
//     it keeps, by root digest, to one random host that keeps it too
//     (msgDigest; one packet per chosen host). Where the roots differ the
//     other answers with its per-owner digests (msgOwners); the first asks
//     for the owners that differ (msgEntries with wants; for a large owner,
//     with its digests of 64 buckets of the owner's entries, so that only
//     the buckets that differ come back) and gets them. Repair is pull-only:
//     each host mends itself in the rounds it starts. A host that comes back from down is sent the same at
//     once, so a healed partition repairs without waiting for the round.
//   - First sync. A host that starts, or attaches a network, asks one host
//     that keeps the scope for all of it (msgSyncReq) and gets every live
//     entry in one answer (msgEntries, flagged done): one copy, whatever
//     order it attached and joined in, and no tombstones, so what a new
//     host receives does not grow with the deletions ever made. Without an
//     answer within firstSyncRetry it asks another host. The global tables
//     come with memberlist's push/pull at the join. Synced reports when a
//     scope has been merged this way, or when no other host keeps it.
//
// A host's own entries met in an answer are adopted while the scope is not
// yet synced (a restarted host takes back what it wrote before); after that
// an own entry this host does not hold is stale, and it answers with a
// fresh tombstone (store.retire), which ends it everywhere.

import (
	"context"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

const (
	gapWait   = 150 * time.Millisecond
	pullEvery = time.Second
	maxPulls  = 3
	// maxPullsInFlight bounds the pulls a host has asked for and not yet
	// had answered (within pullEvery), so repair cannot snowball.
	maxPullsInFlight = 4
	firstSyncRetry   = 3 * time.Second
	// quietFor is how long a scope must have had no traffic before it takes
	// part in an anti-entropy round.
	quietFor = 2 * time.Second
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

// gap is a writer's digest that differs from our copy of its entries.
type gap struct {
	adv      digest
	seen     time.Time
	pulledAt time.Time
	pulls    int
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
// another host since it started. A seed host that restarts counts as
// synced at once (it has nobody to wait for), but still adopts.
func (n *Node) adopting(scope string) bool {
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
// per scope (batched: one request per host asked), and marks synced those
// no other host keeps. It returns when it next needs to run (zero: not
// until something changes).
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
		// Prefer a host already being asked for another scope.
		var pick *peer
		for i := range order {
			if slices.ContainsFunc(peers, func(p peer) bool { return p.name == order[i].name }) {
				pick = &order[i]
				break
			}
		}
		if pick == nil {
			fresh := slices.DeleteFunc(slices.Clone(peers), func(p peer) bool { return ss.tried[p.name] })
			if len(fresh) == 0 {
				clear(ss.tried)
				fresh = peers
			}
			p := fresh[rand.IntN(len(fresh))]
			order = append(order, p)
			pick = &order[len(order)-1]
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

// noteDigest compares a writer's digest of its entries with our copy and
// records a gap if they differ.
func (n *Node) noteDigest(d digest, now time.Time) {
	if !n.store.keeps(d.scope, d.owner) || !n.isSynced(d.scope) {
		return // a scope still syncing gets everything from its first sync
	}
	mine := n.store.ownerTally(d.scope, d.owner)
	k := want{d.scope, d.owner}
	n.mu.Lock()
	defer n.mu.Unlock()
	g := n.gaps[k]
	if mine == (tally{d.count, d.sum}) {
		if g != nil && d.asOf >= g.adv.asOf {
			delete(n.gaps, k)
		}
		return
	}
	switch {
	case g == nil:
		n.gaps[k] = &gap{adv: d, seen: now}
		n.kickLocked()
	case d.asOf > g.adv.asOf:
		g.adv, g.seen, g.pulls = d, now, 0
	}
}

// active notes that entries of a message were applied: a scope with
// recent traffic is left out of anti-entropy (what it lacks is probably on
// its way), and a gap on a writer whose entries are still arriving is not
// judged yet.
func (n *Node) active(m *message) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range m.entries {
		e := &m.entries[i]
		scope := scopeOf(e.table, e.value)
		n.busy[scope] = now
		if g := n.gaps[want{scope, e.owner}]; g != nil {
			g.seen = now
		}
	}
}

// backlogged returns how long to wait before this host counts as caught
// up with its input: zero if nothing has been queued for its receive worker
// and no stream has been read for gapWait.
func (n *Node) backlogged(now time.Time) time.Duration {
	n.mu.Lock()
	streams := len(n.inFrom)
	n.mu.Unlock()
	if streams > 0 || n.inbox.len() > 0 {
		n.backlogAt.Store(now.UnixNano())
		return gapWait
	}
	if since := now.Sub(time.Unix(0, n.backlogAt.Load())); since < gapWait {
		return gapWait - since
	}
	return 0
}

// quiet reports whether scope has had no traffic for a while.
func (n *Node) quiet(scope string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.busy[scope]
	if ok && now.Sub(t) > quietFor {
		delete(n.busy, scope)
		return true
	}
	return !ok
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

// checkGaps pulls the entries of writers whose digest still differs from
// our copy; it returns when it next needs to run.
func (n *Node) checkGaps(now time.Time) time.Time {
	type pull struct {
		k  want
		to string
	}
	var pulls []pull
	var next time.Time
	due := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	// Judge gaps only once this host has caught up with what it was sent:
	// nothing queued for the receive worker, no stream being read, for
	// gapWait. A host short of CPU is slow, not missing entries; pulling
	// then would only add load.
	if wait := n.backlogged(now); wait > 0 {
		n.mu.Lock()
		has := len(n.gaps) > 0
		n.mu.Unlock()
		if has {
			return now.Add(wait)
		}
		return time.Time{}
	}
	n.mu.Lock()
	inFlight := 0
	for _, g := range n.gaps {
		if now.Sub(g.pulledAt) < pullEvery {
			inFlight++
		}
	}
	for k, g := range n.gaps {
		if now.Sub(g.seen) < gapWait {
			due(g.seen.Add(gapWait))
			continue
		}
		if mine := n.store.ownerTally(k.scope, k.owner); mine == (tally{g.adv.count, g.adv.sum}) || g.pulls >= maxPulls {
			delete(n.gaps, k)
			continue
		}
		if now.Sub(g.pulledAt) < pullEvery || inFlight >= maxPullsInFlight {
			due(now.Add(pullEvery / 4))
			continue
		}
		inFlight++
		g.pulledAt = now
		g.pulls++
		pulls = append(pulls, pull{k, k.owner})
		due(now.Add(pullEvery))
	}
	n.mu.Unlock()
	for _, p := range pulls {
		addr, ok := n.store.peerAddr(p.to)
		if !ok {
			continue
		}
		for _, msg := range n.pulls(p.k.scope, []string{p.k.owner}) {
			n.stats.pulls.Add(1)
			n.send(peer{p.to, addr}, msg)
		}
	}
	return next
}

// syncRound sends, for every scope this host keeps, its root digest to one
// random host that keeps it too (one message per host chosen). It returns
// the interval until the next round.
func (n *Node) syncRound() time.Duration {
	scopes := append([]string{""}, n.store.attachedNetworks()...)
	most := 0
	byPeer := make(map[peer][]digest)
	now := time.Now()
	backlogged := n.backlogged(now) > 0
	for _, s := range scopes {
		peers := n.store.audience(s)
		most = max(most, len(peers)+1)
		if len(peers) == 0 || !n.isSynced(s) || !n.quiet(s, now) || backlogged {
			continue
		}
		t, ok := n.store.root(s)
		if !ok {
			continue
		}
		p := peers[rand.IntN(len(peers))]
		byPeer[p] = append(byPeer[p], digest{scope: s, count: t.count, sum: t.sum})
	}
	for p, ds := range byPeer {
		n.send(p, &message{typ: msgDigest, sender: n.cfg.NodeName, digests: ds})
	}
	return scaleInterval(n.cfg.SyncInterval, most)
}

// heal sends a host that just came back our root digests of every scope
// we both keep.
func (n *Node) heal(name string) {
	addr, ok := n.store.peerAddr(name)
	if !ok {
		return
	}
	var ds []digest
	for _, s := range n.store.sharedScopes(name) {
		if t, ok := n.store.root(s); ok && n.isSynced(s) {
			ds = append(ds, digest{scope: s, count: t.count, sum: t.sum})
		}
	}
	n.send(peer{name, addr}, &message{typ: msgDigest, sender: n.cfg.NodeName, digests: ds})
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

// answerSyncReq sends every live entry of the asked scopes this host keeps.
func (n *Node) answerSyncReq(m *message, from netip.AddrPort) {
	entries, have := n.store.scopeEntries(m.scopes, false)
	if len(have) == 0 {
		return
	}
	n.reply(m.sender, from, &message{typ: msgEntries, flags: flagDone, sender: n.cfg.NodeName, scopes: have, entries: entries})
}

// answerDigest compares root digests with ours: a scope the asker has
// nothing of gets all our live entries; another that differs gets our
// per-owner digests.
func (n *Node) answerDigest(m *message, from netip.AddrPort) {
	var full []string
	owners := &message{typ: msgOwners, sender: n.cfg.NodeName}
	for _, d := range m.digests {
		if d.owner != "" {
			continue
		}
		mine, ok := n.store.root(d.scope)
		if !ok || mine == (tally{d.count, d.sum}) || !n.isSynced(d.scope) {
			continue // a scope still syncing takes part once it has all
		}
		if d.count == 0 {
			full = append(full, d.scope)
			continue
		}
		tallies, _ := n.store.ownerTallies(d.scope)
		owners.scopes = append(owners.scopes, d.scope)
		for o, t := range tallies {
			owners.digests = append(owners.digests, digest{scope: d.scope, owner: o, count: t.count, sum: t.sum})
		}
	}
	if len(full) > 0 {
		entries, have := n.store.scopeEntries(full, false)
		n.reply(m.sender, from, &message{typ: msgEntries, flags: flagDone, sender: n.cfg.NodeName, scopes: have, entries: entries})
	}
	if len(owners.scopes) > 0 {
		n.reply(m.sender, from, owners)
	}
}

// answerOwners compares per-owner digests with ours and pulls the owners
// that differ (repair is pull-only: the other host repairs itself when it
// starts a round of its own). This host's own entries are pulled too where
// the other's copy differs: a stale copy it finds there is one it ends
// (see Node.mergeOwn).
func (n *Node) answerOwners(m *message, from netip.AddrPort) {
	theirs := make(map[string]map[string]tally)
	for _, d := range m.digests {
		if d.owner == "" || d.bucket != 0 {
			continue
		}
		if theirs[d.scope] == nil {
			theirs[d.scope] = make(map[string]tally)
		}
		theirs[d.scope][d.owner] = tally{d.count, d.sum}
	}
	for _, s := range m.scopes {
		mine, ok := n.store.ownerTallies(s)
		if !ok || !n.isSynced(s) {
			continue
		}
		var differ []string
		for o, tt := range theirs[s] {
			if mine[o] != tt {
				differ = append(differ, o)
			}
		}
		for _, msg := range n.pulls(s, differ) {
			n.stats.pulls.Add(1)
			n.reply(m.sender, from, msg)
		}
	}
}

// bucketAbove is the size from which a pull names the buckets it has, so
// that only those that differ are sent back.
const bucketAbove = 128

// pulls builds the requests for the entries of owners in scope: owners
// this host holds nothing of are asked for their live entries only; of the
// others, large ones come with this host's bucket digests.
func (n *Node) pulls(scope string, owners []string) []*message {
	have := &message{typ: msgEntries, sender: n.cfg.NodeName, scopes: []string{scope}}
	none := &message{typ: msgEntries, flags: flagLiveOnly, sender: n.cfg.NodeName, scopes: []string{scope}}
	for _, o := range owners {
		t := n.store.ownerTally(scope, o)
		if t.count == 0 {
			none.wants = append(none.wants, want{scope, o})
			continue
		}
		have.wants = append(have.wants, want{scope, o})
		if t.count > bucketAbove {
			for b, bt := range n.store.bucketTallies(scope, o) {
				if bt.count > 0 {
					have.digests = append(have.digests, digest{scope: scope, owner: o, bucket: uint8(b + 1), count: bt.count, sum: bt.sum})
				}
			}
		}
	}
	var out []*message
	for _, msg := range []*message{have, none} {
		if len(msg.wants) > 0 {
			out = append(out, msg)
		}
	}
	return out
}

// answerWants sends our entries of the owners asked for: of the buckets
// whose digests differ from the asker's, if it sent bucket digests.
func (n *Node) answerWants(m *message, from netip.AddrPort) {
	theirs := make(map[want]*[numBuckets]tally)
	for _, d := range m.digests {
		if d.owner == "" || d.bucket == 0 {
			continue
		}
		k := want{d.scope, d.owner}
		if theirs[k] == nil {
			theirs[k] = new([numBuckets]tally)
		}
		theirs[k][d.bucket-1] = tally{d.count, d.sum}
	}
	out := &message{typ: msgEntries, sender: n.cfg.NodeName}
	for _, w := range m.wants {
		if _, ok := n.store.root(w.scope); !ok {
			continue
		}
		if !slices.Contains(out.scopes, w.scope) {
			out.scopes = append(out.scopes, w.scope)
		}
		var only *[numBuckets]bool
		if tb := theirs[w]; tb != nil {
			only = new([numBuckets]bool)
			for b, mt := range n.store.bucketTallies(w.scope, w.owner) {
				only[b] = mt != tb[b]
			}
		}
		out.entries = append(out.entries, n.store.ownerEntriesIn(w.scope, w.owner, only, m.flags&flagLiveOnly == 0)...)
	}
	if len(out.scopes) > 0 {
		n.reply(m.sender, from, out)
	}
}

// reply sends m to the host name: at its member address, or, for a host
// not yet a member here (a joiner's first request can come before its
// membership), back to the packet's source.
func (n *Node) reply(name string, from netip.AddrPort, m *message) {
	addr, ok := n.store.peerAddr(name)
	if !ok {
		if !from.IsValid() {
			n.log.Debug("no address to answer", "peer", name)
			return
		}
		addr = from
	}
	n.send(peer{name, addr}, m)
}
