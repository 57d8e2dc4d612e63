package core

import (
	"math"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// Observer receives the core's measurements (package metrics implements
// it). Its methods are called on the core's goroutines and must return
// quickly.
type Observer interface {
	// Reconciled reports one datapath pass of the writer: a full one
	// (start-up, repair, retry) or a scoped one, how long it took (the
	// desired state built from the view, and the datapath's work), and
	// its error.
	Reconciled(full bool, took time.Duration, err error)
	// Converged reports that remote endpoint changes, published by their
	// owners at the times given, are programmed in this host's kernel now
	// (at). A time is the change's gossip version, which follows the
	// owner's wall clock (see published), so at minus it is as accurate
	// as the two hosts' clocks agree.
	Converged(published []time.Time, at time.Time)
}

// published appends to pub when ev, a change to another host's endpoint
// on a network this host has, was published by its owner, for
// Observer.Converged. Gossip versions are Lamport clocks floored at the
// owner's wall clock in microseconds, so a version is the publication time
// unless the owner had seen a higher version (from a host whose clock is
// ahead), which makes the figure smaller by that skew (never below zero).
// Changes published before this host had the network (and before this
// process started) are left out: they are the catch-up of a network or
// the replay of a restart, not a change converging.
func (c *Core) published(pub []time.Time, ev gossip.Event) []time.Time {
	if c.cfg.Observer == nil || ev.Table != gossip.TableEndpoints || ev.Hidden || ev.Host == c.cfg.Host ||
		ev.Endpoint == nil || ev.Version == 0 || ev.Version > math.MaxInt64 {
		return pub
	}
	t := time.UnixMicro(int64(ev.Version))
	c.mu.Lock()
	n := c.nets[ev.Endpoint.Network]
	since := c.start
	if n != nil && n.Created.After(since) {
		since = n.Created
	}
	c.mu.Unlock()
	if n == nil || t.Before(since) {
		return pub
	}
	return append(pub, t)
}

// Started is closed once Run has reconciled the saved state with the
// kernel (successfully or not: what failed is retried) and published it:
// from then on the datapath follows the cluster.
func (c *Core) Started() <-chan struct{} { return c.started }

// WriterState says what the datapath writer is doing, for health checks
// and metrics.
type WriterState struct {
	// Queued requests wait for the next pass.
	Queued int
	// Busy is how long the pass under way has run; zero when idle.
	Busy time.Duration
	// LastErr is the last pass's error; nil if it succeeded.
	LastErr error
	// RetryAt is when a failed reconcile is retried in full; zero if none
	// is due.
	RetryAt time.Time
}

// Writer reports the writer's state.
func (c *Core) Writer() WriterState {
	q, _, since := c.w.depth()
	var st WriterState
	st.Queued = q
	if !since.IsZero() {
		st.Busy = max(time.Since(since), time.Nanosecond)
	}
	c.mu.Lock()
	st.LastErr, st.RetryAt = c.lastErr, c.retryAt
	c.mu.Unlock()
	return st
}
