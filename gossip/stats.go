package gossip

import (
	"errors"
	"sync/atomic"
	"time"
)

// dropReason classifies a message or entry that was refused.
type dropReason int

const (
	dropTruncated dropReason = iota
	dropVersion
	dropType
	dropTooLong
	dropTrailing
	dropOwnerIndex
	dropScopeIndex
	dropFlags
	dropNonCanonical
	dropTable
	dropValue
	dropKey
	dropOwnership
	dropFuture
	dropScope
	dropDecrypt
	dropQueueFull
	dropRefused
	dropOther
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"truncated", "wire-version", "message-type", "too-long", "trailing-bytes", "owner-index", "scope-index",
	"flags", "non-canonical", "unknown-table", "bad-value", "key-mismatch", "ownership", "future-version", "scope",
	"decrypt", "queue-full", "stream-refused", "other",
}

func reasonOf(err error) dropReason {
	for _, c := range []struct {
		err error
		r   dropReason
	}{
		// Entry-level reasons first: a bad value also wraps the reader's error.
		{errOwnership, dropOwnership}, {errFuture, dropFuture}, {errScope, dropScope}, {errTable, dropTable}, {errBadValue, dropValue}, {errKey, dropKey},
		{errTruncated, dropTruncated}, {errWireVersion, dropVersion}, {errMsgType, dropType},
		{errTooLong, dropTooLong}, {errTrailing, dropTrailing}, {errBadOwner, dropOwnerIndex}, {errBadScope, dropScopeIndex},
		{errBadFlags, dropFlags}, {errNonCanonical, dropNonCanonical},
		{errDecrypt, dropDecrypt}, {errQueueFull, dropQueueFull}, {errRefused, dropRefused},
	} {
		if errors.Is(err, c.err) {
			return c.r
		}
	}
	return dropOther
}

// Stats are the node's counters since it started and its current sizes.
// Cheap to call: counters are atomics, sizes are kept as the state changes
// (Hidden and the member counts walk the hosts, not the entries).
type Stats struct {
	// Hosts known, by state as this host sees them (this host is alive).
	MembersAlive  int
	MembersFailed int // declared dead by the failure detector
	// MembersLeft counts hosts that left the ring gracefully (stopped
	// with Run's context). memberlist's callbacks do not tell a leave from
	// a failure; a leaving host flags its meta first (see
	// events.NotifyLeave), and a peer that missed the flag counts the
	// host in MembersFailed.
	MembersLeft int

	MessagesReceived uint64 // decoded messages: updates, states, syncs, repairs
	MessagesSent     uint64 // packets and stream messages sent (one per receiver)
	BytesReceived    uint64 // sealed bytes of our frames received
	BytesSent        uint64 // sealed bytes of our frames sent
	SendErrors       uint64 // sends that failed or were dropped (too many streams)
	SendQueue        int    // this host's changes waiting for the sender
	StreamQueue      int    // streams (large messages) waiting to be written
	StreamsOut       int    // outgoing TCP streams being written now

	EntriesApplied  uint64 // remote entries that changed the state
	EntriesStale    uint64 // remote entries we already had (or newer)
	EntriesUnscoped uint64 // endpoints of networks this host does not have, ignored
	EntriesRetired  uint64 // stale copies of this host's own entries ended with a fresh tombstone
	SyncRequests    uint64 // first syncs asked for
	Pulls           uint64 // repairs asked for: entries of owners whose digest differed
	// HealsOneSided counts heals taken one-sidedly, as they arrive: from
	// a host that counted this host down while this host did not count it
	// down (this host was slow, not cut off; see answerDigest). Where the
	// roots differ they are answered with this host's own digests only;
	// where they agree, with nothing, as any heal.
	HealsOneSided uint64
	// Join admission (admit.go): joins this host, as a seed, let go ahead
	// or told to wait; and the times this host was told to wait.
	JoinsAdmitted, JoinsDeferred, JoinWaits uint64

	// Dropped counts refused messages and entries by reason (truncated,
	// wire-version, decrypt, queue-full, unknown-table, ownership, ...).
	Dropped map[string]uint64
	// Tables has, per table, the live entries held (hidden ones included),
	// those hidden because their host is down, and the tombstones.
	Tables map[Table]TableStats
}

// TableStats are one table's sizes.
type TableStats struct {
	Entries    int // live entries, hidden ones included
	Hidden     int // live entries of hosts now down
	Tombstones int // deletion markers not yet past TombstoneTTL
}

type counters struct {
	received, applied, stale, unscoped, retired atomic.Uint64
	sent, sendErrors, bytesSent, bytesReceived  atomic.Uint64
	syncRequests, pulls, healsOneSided          atomic.Uint64
	joinsAdmitted, joinsDeferred, joinWaits     atomic.Uint64
	dropped                                     [numDropReasons]atomic.Uint64
	lastDropLog                                 atomic.Int64 // unix nanoseconds; rate-limits warnings
}

// Stats returns the node's counters and sizes.
func (n *Node) Stats() Stats {
	c := &n.stats
	s := Stats{
		MessagesReceived: c.received.Load(),
		MessagesSent:     c.sent.Load(),
		BytesReceived:    c.bytesReceived.Load(),
		BytesSent:        c.bytesSent.Load(),
		SendErrors:       c.sendErrors.Load(),
		SendQueue:        n.out.depth(),

		EntriesApplied:  c.applied.Load(),
		EntriesStale:    c.stale.Load(),
		EntriesUnscoped: c.unscoped.Load(),
		EntriesRetired:  c.retired.Load(),
		SyncRequests:    c.syncRequests.Load(),
		Pulls:           c.pulls.Load(),
		HealsOneSided:   c.healsOneSided.Load(),
		JoinsAdmitted:   c.joinsAdmitted.Load(),
		JoinsDeferred:   c.joinsDeferred.Load(),
		JoinWaits:       c.joinWaits.Load(),
		Dropped:         make(map[string]uint64),
		Tables:          n.store.tableStats(),
	}
	s.MembersAlive, s.MembersFailed, s.MembersLeft = n.store.memberCounts()
	n.streamMu.Lock()
	s.StreamQueue, s.StreamsOut = len(n.streamQ), n.streamWorkers
	n.streamMu.Unlock()
	for i := range c.dropped {
		if v := c.dropped[i].Load(); v > 0 {
			s.Dropped[dropNames[i]] = v
		}
	}
	return s
}

// shouldWarn allows one warning per second about dropped input, so a
// hostile sender cannot flood the log; the rest go to debug.
func (c *counters) shouldWarn(now time.Time) bool {
	last := c.lastDropLog.Load()
	if now.UnixNano()-last < int64(time.Second) {
		return false
	}
	return c.lastDropLog.CompareAndSwap(last, now.UnixNano())
}
