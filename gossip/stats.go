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
	dropFlags
	dropNonCanonical
	dropTable
	dropValue
	dropKey
	dropOwnership
	dropFuture
	dropScope
	dropOther
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"truncated", "wire-version", "message-type", "too-long", "trailing-bytes", "owner-index",
	"flags", "non-canonical", "unknown-table", "bad-value", "key-mismatch", "ownership", "future-version", "scope", "other",
}

func reasonOf(err error) dropReason {
	for _, c := range []struct {
		err error
		r   dropReason
	}{
		// Entry-level reasons first: a bad value also wraps the reader's error.
		{errOwnership, dropOwnership}, {errFuture, dropFuture}, {errScope, dropScope}, {errTable, dropTable}, {errBadValue, dropValue}, {errKey, dropKey},
		{errTruncated, dropTruncated}, {errWireVersion, dropVersion}, {errMsgType, dropType},
		{errTooLong, dropTooLong}, {errTrailing, dropTrailing}, {errBadOwner, dropOwnerIndex},
		{errBadFlags, dropFlags}, {errNonCanonical, dropNonCanonical},
	} {
		if errors.Is(err, c.err) {
			return c.r
		}
	}
	return dropOther
}

// Stats are counters since the node started.
type Stats struct {
	MessagesReceived uint64 // decoded messages: updates, push/pull states, syncs
	EntriesApplied   uint64 // remote entries that changed the state
	EntriesStale     uint64 // remote entries we already had
	EntriesUnscoped  uint64 // endpoints of networks this host does not have, ignored
	MessagesSent     uint64 // direct sends that memberlist accepted
	SendErrors       uint64
	// Dropped counts refused messages and entries by reason
	// (truncated, wire-version, unknown-table, ownership, ...).
	Dropped map[string]uint64
}

type counters struct {
	received, applied, stale, unscoped, sent, sendErrors atomic.Uint64
	dropped                                              [numDropReasons]atomic.Uint64
	lastDropLog                                          atomic.Int64 // unix nanoseconds; rate-limits warnings
}

func (c *counters) snapshot() Stats {
	s := Stats{
		MessagesReceived: c.received.Load(),
		EntriesApplied:   c.applied.Load(),
		EntriesStale:     c.stale.Load(),
		EntriesUnscoped:  c.unscoped.Load(),
		MessagesSent:     c.sent.Load(),
		SendErrors:       c.sendErrors.Load(),
		Dropped:          make(map[string]uint64),
	}
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
