// Package overlaytest provides a fake datapath for tests of packages that
// drive the overlay (driver, ipam): Recorder validates and records each
// desired state instead of programming a kernel.
package overlaytest

import (
	"context"
	"sync"

	"github.com/tenet-net/tenet/overlay"
)

// Call is one recorded reconcile: the state, and for ReconcileScope the
// scope (Full is true for Reconcile).
type Call struct {
	State overlay.State
	Scope overlay.Scope
	Full  bool
}

// Recorder is a fake datapath. Safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex // guards the fields below
	calls []Call
	// Fail, if set, is returned by the next Reconcile or ReconcileScope
	// (and then cleared).
	Fail error
	// MTU is what MaxMTU returns; zero: 1450 (a 1500 underlay).
	MTU int
}

// Reconcile validates s as the real datapath does, then records it.
func (r *Recorder) Reconcile(ctx context.Context, s overlay.State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := s.ValidateMTU(r.maxMTU()); err != nil {
		return err
	}
	return r.record(Call{State: s, Full: true})
}

// ReconcileScope validates s and sc as the real datapath does, then records
// them.
func (r *Recorder) ReconcileScope(ctx context.Context, s overlay.State, sc overlay.Scope) error {
	if err := s.ValidateScope(sc); err != nil {
		return err
	}
	return r.record(Call{State: s, Scope: sc})
}

func (r *Recorder) record(c Call) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.Fail; err != nil {
		r.Fail = nil
		return err
	}
	r.calls = append(r.calls, c)
	return nil
}

// MaxMTU returns the largest network MTU the fake underlay carries.
func (r *Recorder) MaxMTU() (int, error) {
	return r.maxMTU(), nil
}

func (r *Recorder) maxMTU() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.MTU == 0 {
		return 1450
	}
	return r.MTU
}

// Last returns the last state reconciled (full or scoped), and whether
// there was one.
func (r *Recorder) Last() (overlay.State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return overlay.State{}, false
	}
	return r.calls[len(r.calls)-1].State, true
}

// Calls returns every recorded call, oldest first.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// SetFail makes the next Reconcile or ReconcileScope fail with err.
func (r *Recorder) SetFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Fail = err
}
