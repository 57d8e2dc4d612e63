// Package overlaytest provides a fake datapath for tests of packages that
// drive the overlay (driver, ipam): Recorder validates and records each
// desired state instead of programming a kernel.
package overlaytest

import (
	"context"
	"sync"

	"github.com/tenet-net/tenet/overlay"
)

// Recorder is a fake datapath. Safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex // guards the fields below
	states []overlay.State
	// Fail, if set, is returned by the next Reconcile (and then cleared).
	Fail error
}

// Reconcile validates s as the real datapath does, then records it.
func (r *Recorder) Reconcile(ctx context.Context, s overlay.State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.Fail; err != nil {
		r.Fail = nil
		return err
	}
	r.states = append(r.states, s)
	return nil
}

// Last returns the last state reconciled, and whether there was one.
func (r *Recorder) Last() (overlay.State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return overlay.State{}, false
	}
	return r.states[len(r.states)-1], true
}

// SetFail makes the next Reconcile fail with err.
func (r *Recorder) SetFail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Fail = err
}
