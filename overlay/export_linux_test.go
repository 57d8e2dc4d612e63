package overlay

import (
	"context"
	"math/rand/v2"
	"slices"
)

// Internals the root tests (package overlay_test) use.

var (
	RandomStateForTest = randomState
	DiffScopeForTest   = diffScope
	TenantsOfForTest   = tenantsOf
)

// ObserveScopeForTest reads the objects of sc as ReconcileScope would, and
// also the whole kernel restricted to the same view: the two must agree.
func (d *Datapath) ObserveScopeForTest(ctx context.Context, s State, sc Scope) (scoped, restricted Snapshot, err error) {
	nets, err := s.validateScope(sc, nil)
	if err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	v, err := d.viewLocked(s, nets, sc)
	if err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	if scoped, err = d.observeLocked(v, addrs); err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	all, err := d.observeLocked(viewAll, addrs)
	if err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	v2, err := d.viewLocked(s, nets, sc)
	if err != nil {
		return Snapshot{}, Snapshot{}, err
	}
	return scoped, restrict(all, v2), nil
}

// WithoutEncryptionForTest is s with every network in clear and no
// WireGuard key or peers: what a kernel without WireGuard can carry.
func WithoutEncryptionForTest(s State) State {
	s.Networks = slices.Clone(s.Networks)
	for i := range s.Networks {
		s.Networks[i].Encrypted = false
	}
	s.Crypt = Crypt{}
	return s
}

// NewRandForTest is a seeded source for RandomStateForTest.
func NewRandForTest(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }
