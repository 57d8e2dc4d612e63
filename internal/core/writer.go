package core

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/tenet-net/tenet/overlay"
)

// Datapath is what the core needs of the kernel side: overlay.Datapath (see
// OverlayDatapath), or a fake in unit tests.
type Datapath interface {
	// Apply makes the kernel match s for the objects scope names (all of
	// them when scope.All), touching nothing else.
	Apply(ctx context.Context, s overlay.State, scope Scope) error
	// MaxMTU is the largest network MTU the underlay carries.
	MaxMTU() (int, error)
}

// Scope names what changed, so that only that is reconciled.
type Scope struct {
	All bool // everything: start-up, repair, retry after a failure
	// Tenants whose namespace-wide objects changed (namespace, uplink,
	// egress rules). An endpoint's own objects (veth pair, port guard,
	// published ports) are its Endpoints entry's: naming its tenant too
	// would read every link of the tenant, a cost that grows with them.
	Tenants []string
	// Networks (VNIs) whose own objects changed: bridge, VXLAN device,
	// gateway, flood entries to peers.
	Networks []uint32
	// Endpoints: local endpoint IDs added, changed or removed.
	Endpoints []string
	// Remotes: remote entries (by VNI and MAC) added, changed or removed.
	Remotes []RemoteKey
	// RemoteNets: every remote entry of these networks.
	RemoteNets []uint32
	// Infra: what keeps tenants from the cluster's infrastructure (the
	// members' underlay addresses changed).
	Infra bool
	// Crypt: this host's WireGuard key and peers (a peer's key changed).
	Crypt bool
}

// RemoteKey names one remote entry.
type RemoteKey struct {
	VNI uint32
	MAC string // net.HardwareAddr.String()
}

func remoteKey(vni uint32, mac net.HardwareAddr) RemoteKey { return RemoteKey{vni, mac.String()} }

// Empty says whether the scope names nothing.
func (s Scope) Empty() bool {
	return !s.All && !s.Infra && !s.Crypt && len(s.Tenants)+len(s.Networks)+len(s.Endpoints)+len(s.Remotes)+len(s.RemoteNets) == 0
}

// setsCrypt says whether a pass over s sets the WireGuard device and
// peers: overlay.Scope does with Crypt, Tenants or Networks, and
// OverlayDatapath.Apply passes RemoteNets as Networks.
func (s Scope) setsCrypt() bool {
	return s.All || s.Crypt || len(s.Tenants) > 0 || len(s.Networks) > 0 || len(s.RemoteNets) > 0
}

// merge returns the union of s and o, each list sorted and without repeats.
func (s Scope) merge(o Scope) Scope {
	out := Scope{All: s.All || o.All, Infra: s.Infra || o.Infra, Crypt: s.Crypt || o.Crypt}
	if out.All {
		return out
	}
	out.Tenants = union(s.Tenants, o.Tenants)
	out.Networks = union(s.Networks, o.Networks)
	out.Endpoints = union(s.Endpoints, o.Endpoints)
	out.RemoteNets = union(s.RemoteNets, o.RemoteNets)
	out.Remotes = append(slices.Clone(s.Remotes), o.Remotes...)
	slices.SortFunc(out.Remotes, func(a, b RemoteKey) int {
		return cmp.Or(cmp.Compare(a.VNI, b.VNI), cmp.Compare(a.MAC, b.MAC))
	})
	out.Remotes = slices.Compact(out.Remotes)
	return out
}

func union[T interface{ ~string | ~uint32 }](a, b []T) []T {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// job is one request to the writer: reconcile scope, or (fn set) run fn
// after the pass, when nothing else writes the datapath; and report on done
// (buffered) unless nobody waits.
type job struct {
	scope Scope
	fn    func(ctx context.Context) error
	done  chan error
}

// writer is the one goroutine that writes the datapath. Requests queue
// while it works; it then takes them all at once, so a burst costs one
// pass. If a merged pass fails, each request is retried alone, so that an
// error reaches the caller whose change caused it.
type writer struct {
	c       *Core
	mu      sync.Mutex // guards q, busy, since and stopped
	q       []job
	busy    int       // requests in the pass under way
	since   time.Time // start of the pass under way
	stopped bool      // run returned: requests are answered errStopped at once
	wake    chan struct{}
}

var errStopped = errors.New("core: stopped")

func newWriter(c *Core) *writer { return &writer{c: c, wake: make(chan struct{}, 1)} }

// depth returns the requests waiting and those in the pass under way, and
// when that pass started.
func (w *writer) depth() (queued, busy int, since time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.q), w.busy, w.since
}

// submit queues a scope and returns the channel its result arrives on.
func (w *writer) submit(s Scope) <-chan error {
	return w.queue(job{scope: s, done: make(chan error, 1)})
}

// do runs fn on the writer's goroutine, between passes (so that it sees
// the datapath as no pass leaves it half done), and waits for its result
// or for ctx.
func (w *writer) do(ctx context.Context, fn func(ctx context.Context) error) error {
	done := w.queue(job{fn: fn, done: make(chan error, 1)})
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting for the datapath writer: %w", ctx.Err())
	}
}

func (w *writer) queue(j job) <-chan error {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		j.done <- errStopped
		return j.done
	}
	w.q = append(w.q, j)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return j.done
}

// apply queues a scope and waits for it to be reconciled, or for ctx.
func (w *writer) apply(ctx context.Context, s Scope) error {
	_, err := w.applyWatch(ctx, s)
	return err
}

// applyWatch is apply that, when ctx ends first, also returns the channel
// the pass's result still arrives on.
func (w *writer) applyWatch(ctx context.Context, s Scope) (pending <-chan error, err error) {
	done := w.submit(s)
	select {
	case err := <-done:
		return nil, err
	case <-ctx.Done():
		if _, busy, since := w.depth(); busy > 0 {
			// Say what it waited on: a pass that long under way is
			// mostly the kernel answering slowly (netlink waits on the
			// kernel's one RTNL lock, which any program may hold).
			return done, fmt.Errorf("gave up waiting for the datapath (a pass has been under way for %v): %w",
				time.Since(since).Round(100*time.Millisecond), ctx.Err())
		}
		return done, fmt.Errorf("gave up waiting for the datapath: %w", ctx.Err())
	}
}

// slowPass is how long a pass may take before it is logged as slow.
const slowPass = 2 * time.Second

// run serves the queue until ctx is done.
func (w *writer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			q := w.q
			w.q, w.stopped = nil, true
			w.mu.Unlock()
			for _, j := range q {
				j.done <- errStopped
			}
			return
		case <-w.wake:
		}
		w.mu.Lock()
		all := w.q
		w.q, w.busy, w.since = nil, len(all), time.Now()
		w.mu.Unlock()
		var q, fns []job
		for _, j := range all {
			if j.fn != nil {
				fns = append(fns, j)
			} else {
				q = append(q, j)
			}
		}
		if len(q) > 0 {
			var merged Scope
			for _, j := range q {
				merged = merged.merge(j.scope)
			}
			start := time.Now()
			err := w.c.reconcile(ctx, merged)
			if took := time.Since(start); took > slowPass {
				w.c.log.Warn("datapath pass was slow (the kernel answers netlink slowly while another program holds its RTNL lock)",
					"took", took.Round(time.Millisecond), "requests", len(q), "all", merged.All, "tenants", merged.Tenants)
			}
			if err != nil && len(q) > 1 {
				// Find whose change failed: try each alone.
				for _, j := range q {
					j.done <- w.c.reconcile(ctx, j.scope)
				}
			} else {
				for _, j := range q {
					j.done <- err
				}
			}
		}
		for _, j := range fns {
			j.done <- j.fn(ctx)
		}
		w.mu.Lock()
		w.busy, w.since = 0, time.Time{}
		w.mu.Unlock()
	}
}
