package gossip

// Repair. Direct sends (send.go) carry every change once; repair finds and
// fills what they missed, by digests (digest.go: per scope, per owner, a
// count and a hash sum of the live entries), so that two hosts that agree
// exchange a few bytes and two that differ exchange only what differs:
//
//   - Gap repair, from the writer. Once a writer's scope is quiet, it sends
//     its digest of its own entries there (the trail, see send.go). A
//     receiver whose copy differs asks the writer for its entries of that
//     scope (a msgEntries with a want) and gets them, tombstones included,
//     but only once it has caught up with its own input (nothing queued, no
//     stream being read, for gapWait): a host short of CPU is slow, not
//     missing entries, and pulling then would only add load. A lost packet
//     costs about trailDelay + gapWait + one round trip after its burst.
//   - Anti-entropy, between any two hosts. Every SyncInterval (stretched
//     like memberlist's push/pull above 32 hosts) a host sends each scope
//     it keeps, by root digest, to one random host that keeps it too
//     (msgDigest; one packet per chosen host). Where the roots differ the
//     other answers with its per-owner digests (msgOwners); the first asks
//     for the owners that differ (msgEntries with wants; for a large owner,
//     with its digests of 64 buckets of the owner's entries, so that only
//     the buckets that differ come back) and gets them. Repair is pull-only:
//     each host mends itself in the rounds it starts. A scope takes part
//     only once synced and quiet for quietFor. A host that comes back from
//     down is sent our roots at once, and again after each of healAgain,
//     so a healed partition repairs without waiting for the round (a heal;
//     one that only one side needed is answered one-sidedly, see
//     answerDigest).

import (
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
	// quietFor is how long a scope must have had no traffic before it takes
	// part in an anti-entropy round.
	quietFor = 2 * time.Second
	// unsyncedGapLife bounds how long a gap on a scope still in its first
	// sync waits to be judged.
	unsyncedGapLife = 30 * time.Second
)

// gap is a writer's digest that differs from our copy of its entries.
type gap struct {
	adv      digest
	seen     time.Time
	pulledAt time.Time
	pulls    int
}

// noteDigest compares a writer's digest of its entries with our copy and
// records a gap if they differ.
func (n *Node) noteDigest(d digest, now time.Time) {
	if !n.store.keeps(d.scope, d.owner) {
		return
	}
	// A scope still syncing records the gap too, but judges it only once
	// synced (checkGaps): its first sync may come from a host that lacks
	// the writer's latest entries.
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
		if ss := n.syncs[k.scope]; ss == nil || !ss.synced {
			// Judged once the first sync is done; forgotten if it never
			// is (the network was detached).
			if now.Sub(g.seen) > unsyncedGapLife {
				delete(n.gaps, k)
			} else {
				due(now.Add(pullEvery / 4))
			}
			continue
		}
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
// we both keep, and, if back is set (it came back from down, not seen for
// the first time), our digests of our own entries there (none is a digest
// too: it tells a deletion of all of them). The own digests mark the
// message as a heal of a return (anti-entropy and a first meeting send
// roots only; a host of an older build ignores them), which the other host
// may answer one-sidedly, and let it pull what it missed of ours
// (noteDigest). A host we see for the first time may have restarted
// faster than the others noticed; it gets the full answer.
func (n *Node) heal(name string, back bool) {
	addr, ok := n.store.peerAddr(name)
	if !ok {
		return
	}
	var ds []digest
	for _, s := range n.store.sharedScopes(name) {
		if t, ok := n.store.root(s); ok && n.isSynced(s) {
			ds = append(ds, digest{scope: s, count: t.count, sum: t.sum})
			if back {
				own, asOf := n.store.ownTally(s)
				ds = append(ds, digest{scope: s, owner: n.cfg.NodeName, count: own.count, sum: own.sum, asOf: asOf})
			}
		}
	}
	n.send(peer{name, addr}, &message{typ: msgDigest, sender: n.cfg.NodeName, digests: ds})
}

// steadyFor is how long a host must have been seen alive without a break
// before a heal from it is answered one-sidedly (answerDigest): longer
// than the last of healAgain, so that every heal of a return both sides
// saw (a healed partition, a restart seen as a down) is answered in full.
// A restart nobody saw comes as a first meeting, whose heal carries no
// own digests (heal). A variable for tests.
var steadyFor = 30 * time.Second

// healAgain is when, after a host came back, the heal exchange is made
// again: the first is one packet each way, sent the moment membership says
// the host is back, which is when a healed link loses packets most (the
// underlay's neighbour entries are still being resolved: "no route to
// host"). A repeat costs one packet, and nothing more where the first
// worked (the roots then agree).
var healAgain = []time.Duration{2 * time.Second, 6 * time.Second, 15 * time.Second}

// healLater queues the repeats of a heal with name.
func (n *Node) healLater(name string) {
	for _, d := range healAgain {
		time.AfterFunc(d, func() {
			select {
			case n.reheal <- name:
			case <-n.quit:
			default: // a burst of hosts back: the anti-entropy round covers the rest
			}
		})
	}
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

// answerDigest compares root digests with ours: a scope the asker has
// nothing of gets all our live entries; another that differs gets our
// per-owner digests, from which the asker pulls what it lacks.
//
// A heal of a return (the sender's own digests come with its roots) from
// a host this host has seen alive without a break for steadyFor is
// one-sided: the sender counted this host down, this host did not count
// the sender down, in that time or since well before it.
// That is what a host slow enough to miss its probes sees (a CPU stall),
// not a partition, where both sides see the other go and come back. Then
// the sender missed nothing this host sent (it was never left out of this
// host's sends), and this host missed what the sender and others wrote
// while they counted it down: it answers a differing root with its digest
// of its own entries only, one packet, and each side pulls the other's
// entries that differ (noteDigest) once it has caught up with its input;
// the others that counted it down heal with it in the same way. The full
// answer mended only the sender, and in a ring of hundreds cost a slow
// host an exchange with every host at once, each pulling whatever was in
// flight (gossip/DESIGN.md, "A CPU stall").
func (n *Node) answerDigest(m *message, from netip.AddrPort) {
	heal := slices.ContainsFunc(m.digests, func(d digest) bool { return d.owner == m.sender })
	oneSided := heal && n.store.upFor(m.sender) >= steadyFor
	if oneSided {
		n.stats.healsOneSided.Add(1)
		now := time.Now()
		for _, d := range m.digests {
			if d.owner == m.sender {
				n.noteDigest(d, now)
			}
		}
	}
	var full []string
	owners := &message{typ: msgOwners, sender: n.cfg.NodeName}
	ours := &message{typ: msgUpdate, sender: n.cfg.NodeName}
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
		if oneSided {
			own, asOf := n.store.ownTally(d.scope)
			ours.digests = append(ours.digests, digest{scope: d.scope, owner: n.cfg.NodeName, count: own.count, sum: own.sum, asOf: asOf})
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
	if len(ours.digests) > 0 {
		n.reply(m.sender, from, ours)
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
		// An owner the other host lists nothing of, while we hold live
		// entries of it, differs too: it deleted them (the other is the
		// owner, or has its markers) where we did not hear of it, as
		// across a healed partition. Its markers come with the pull.
		for o, mt := range mine {
			if _, listed := theirs[s][o]; !listed && mt.count > 0 {
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
