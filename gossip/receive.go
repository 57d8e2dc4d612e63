package gossip

// Receiving. Our packets come off the socket into a queue of their own
// (inbox, bounded, dropped and counted when full) drained by one receive
// worker; our streams are read on their connection's goroutine. Every
// message, whatever carried it (also memberlist's push/pull state at a
// join, and any user message a key holder sends through memberlist), goes
// through handle: one decoder, then admit for every entry, then the
// store's merge.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxAhead bounds how far an entry's version may be ahead of this host's
// wall clock. Versions track the wall clock in microseconds (see clock),
// so a much larger one comes from a broken or hostile sender; accepting
// it would drag every host's clock up to it, and near 2^64 the clock
// would wrap. A day tolerates badly set clocks (time zones) between hosts.
const maxAhead = 24 * time.Hour

// inboxDepth bounds the packets of ours waiting for the receive worker;
// beyond it they are dropped (counted as queue-full) and repaired.
const inboxDepth = 4096

var (
	errOwnership = errors.New("entry owned by another host")
	errFuture    = errors.New("version too far ahead of the clock")
	errScope     = errors.New("entry outside the message's scopes")
	errQueueFull = errors.New("receive queue full")
	errRefused   = errors.New("too many incoming streams")
)

type inPacket struct {
	frame []byte
	from  netip.AddrPort
}

// inbox queues our packets for the receive worker: a slice that grows
// only while packets wait (an idle node holds none), bounded by
// inboxDepth.
type inbox struct {
	mu    sync.Mutex // guards queue
	queue []inPacket
	wake  chan struct{}
}

func (q *inbox) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// onFrame queues a packet of ours for the receive worker; it runs on the
// socket reader and never blocks.
func (n *Node) onFrame(frame []byte, from netip.AddrPort) {
	q := &n.inbox
	q.mu.Lock()
	if len(q.queue) >= inboxDepth {
		q.mu.Unlock()
		n.drop(errQueueFull, "", "")
		return
	}
	q.queue = append(q.queue, inPacket{frame, from})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// receiver opens and handles queued packets until the node stops.
func (n *Node) receiver() {
	defer n.wg.Done()
	q := &n.inbox
	for {
		select {
		case <-n.quit:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			batch := q.queue
			q.queue = nil
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if len(batch) > 1 {
				n.backlogAt.Store(time.Now().UnixNano())
			}
			for _, p := range batch {
				n.stats.bytesReceived.Add(uint64(len(p.frame)))
				plain, err := n.seal.open(p.frame)
				if err != nil {
					n.drop(err, p.from.String(), "")
					continue
				}
				n.handle(plain, p.from)
			}
		}
	}
}

// onStream reads and handles the messages of one incoming stream of ours;
// r is nil if it was refused (too many at once).
func (n *Node) onStream(r io.Reader, from net.Addr) {
	if r == nil {
		n.drop(errRefused, from.String(), "")
		return
	}
	var sender string
	defer func() {
		if sender != "" {
			n.streaming(sender, -1)
		}
	}()
	for {
		frame, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				n.log.Debug("read stream", "from", from, "err", err)
			}
			return
		}
		n.stats.bytesReceived.Add(uint64(len(frame) + 4))
		plain, err := n.seal.open(frame)
		if err != nil {
			n.drop(err, from.String(), "")
			return
		}
		if sender == "" {
			// Known before the message is handled, so no gap is judged
			// while the rest of this stream is on its way.
			if s := peekSender(plain); s != "" {
				sender = s
				n.streaming(sender, 1)
			}
		}
		n.handle(plain, netip.AddrPort{})
	}
}

// streaming counts the incoming streams from sender being read.
func (n *Node) streaming(sender string, delta int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inFrom[sender] += delta; n.inFrom[sender] <= 0 {
		delete(n.inFrom, sender)
	}
}

// peekSender returns the sender of an encoded message, or "".
func peekSender(b []byte) string {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return ""
	}
	r.byte()
	r.byte()
	s := r.str(maxNameLen)
	if r.err != nil {
		return ""
	}
	return s
}

// handle decodes and applies one message from another host; from is the
// packet's source (invalid for streams and memberlist's channels).
func (n *Node) handle(b []byte, from netip.AddrPort) {
	m, err := decodeMessage(b)
	if err != nil {
		n.drop(err, "", "")
		return
	}
	if m.sender == "" || m.sender == n.cfg.NodeName {
		n.drop(fmt.Errorf("sender %q: %w", m.sender, errOwnership), m.sender, "")
		return
	}
	n.stats.received.Add(1)
	switch m.typ {
	case msgUpdate:
		n.apply(m)
		now := time.Now()
		for _, d := range m.digests {
			if d.owner == m.sender {
				n.noteDigest(d, now)
			}
		}
	case msgState:
		n.apply(m)
		n.markSynced("")
		n.caughtUp("")
		n.kickNow() // attachments are known now: first syncs can start
	case msgSyncReq:
		n.answerSyncReq(m, from)
	case msgDigest:
		n.answerDigest(m, from)
	case msgOwners:
		n.answerOwners(m, from)
	case msgEntries:
		n.progress(m.sender, m.scopes, time.Now())
		n.apply(m)
		if m.flags&flagDone != 0 {
			n.markSynced(m.scopes...)
			n.caughtUp(m.scopes...)
		}
		if len(m.wants) > 0 {
			n.answerWants(m, from)
		}
	case msgJoinAsk:
		n.answerJoinAsk(m, from)
	case msgJoinAnswer:
		n.onJoinAnswer(m)
	}
}

// apply admits and merges a message's entries.
func (n *Node) apply(m *message) {
	if len(m.entries) == 0 {
		return
	}
	scopes := make(map[string]bool, len(m.scopes))
	for _, s := range m.scopes {
		scopes[s] = true
	}
	adopt := make(map[string]bool) // scope -> still adopting own entries
	var sends []pendKey
	var newcomers []want // (network, host) of attachments new to this host
	defer n.active(m)
	for i := range m.entries {
		e := &m.entries[i]
		if err := n.admit(m, e, scopes); err != nil {
			n.drop(err, m.sender, e.key)
			continue
		}
		scope := scopeOf(e.table, e.value)
		a, ok := adopt[scope]
		if !ok && e.owner == n.cfg.NodeName {
			a = n.adopting(scope)
			adopt[scope] = a
		}
		switch n.store.merge(e, a) {
		case mergeApplied:
			n.stats.applied.Add(1)
			if e.table == tableAttachments && !e.deleted {
				if n.store.isAttached(e.key) && !n.isSynced(e.key) {
					n.kickNow() // a host to sync the network with
				}
				if e.owner != n.cfg.NodeName {
					newcomers = append(newcomers, want{e.key, e.owner})
				}
			}
		case mergeAdopted:
			n.stats.applied.Add(1)
			switch {
			case e.table == tableEndpoints && !e.deleted:
				select {
				case n.vtepFix <- struct{}{}:
				default:
				}
			case e.table == tableAttachments && !e.deleted:
				n.wantSync(e.key) // restarted: fetch the network's endpoints
			}
		case mergeOwnStale:
			n.stats.stale.Add(1)
			if s, ok := n.mergeOwn(e); ok {
				sends = append(sends, s)
			}
		case mergeUnscoped:
			n.stats.unscoped.Add(1) // not ours to keep: this host lacks the network
		case mergeStale, mergeReaped:
			n.stats.stale.Add(1)
		}
	}
	for _, pk := range sends {
		n.out.add(pk)
	}
	for _, w := range newcomers {
		n.trailTo(w.owner, w.scope)
	}
}

// trailTo sends this host's digest of its own entries of network scope to
// a host just seen attaching it. Changes this host sent before it knew of
// the attachment did not go to that host, and the host's first sync may
// have come from one that did not have them yet either (all hosts
// attaching and writing at once): the digest lets it pull them from this
// host at once (noteDigest) rather than at an anti-entropy round, which at
// a few hundred hosts comes once a minute.
func (n *Node) trailTo(host, scope string) {
	t, asOf := n.store.ownTally(scope)
	if t.count == 0 {
		return
	}
	addr, ok := n.store.peerAddr(host)
	if !ok {
		return
	}
	d := digest{scope: scope, owner: n.cfg.NodeName, count: t.count, sum: t.sum, asOf: asOf}
	n.send(peer{host, addr}, &message{typ: msgUpdate, sender: n.cfg.NodeName, digests: []digest{d}})
}

// mergeOwn answers a live copy of one of this host's entries that this
// host does not hold, met once it has caught up after its start: deleted
// so long ago that its tombstone expired everywhere, yet kept by a host
// that missed the delete (cut off for longer than TombstoneTTL). A fresh
// tombstone ends it on every host.
func (n *Node) mergeOwn(e *entry) (pendKey, bool) {
	if e.deleted {
		return pendKey{}, false
	}
	scope := n.store.retire(e.table, e.key, e.value)
	n.stats.retired.Add(1)
	return pendKey{scope, e.table, e.key}, true
}

// admit checks one received entry: its owner (an update carries only its
// sender's entries; push/pull states and syncs relay other hosts'
// entries), its scope (a state or sync carries only entries of the scopes
// it names), the version's distance from the clock, then its table and
// value.
func (n *Node) admit(m *message, e *entry, scopes map[string]bool) error {
	switch {
	case e.owner == "":
		return fmt.Errorf("empty owner: %w", errOwnership)
	case m.typ == msgUpdate && e.owner != m.sender:
		return fmt.Errorf("update from %q for %q: %w", m.sender, e.owner, errOwnership)
	case m.typ == msgState && (e.table == tableEndpoints || !scopes[""]):
		return fmt.Errorf("state carries %s %q: %w", e.table.name(), e.key, errScope)
	case e.version > uint64(time.Now().Add(maxAhead).UnixMicro()):
		return fmt.Errorf("version %d: %w", e.version, errFuture)
	}
	if err := checkValue(e); err != nil {
		return err
	}
	if m.typ != msgUpdate && !scopes[scopeOf(e.table, e.value)] {
		return fmt.Errorf("message about %q carries %s %q: %w", m.scopes, e.table.name(), e.key, errScope)
	}
	return nil
}

func (n *Node) drop(err error, sender, key string) {
	r := reasonOf(err)
	n.stats.dropped[r].Add(1)
	level := slog.LevelDebug
	if n.stats.shouldWarn(time.Now()) {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, "dropped gossip input", "reason", dropNames[r], "from", sender, "key", key, "err", err)
}
