package core

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// Core owns this host's networks and endpoints. Safe for concurrent use.
type Core struct {
	cfg   Config
	log   *slog.Logger
	dp    Datapath
	cl    Cluster
	w     *writer
	saver *saver
	start time.Time

	mu    sync.Mutex           // guards the fields below; held only for memory work
	nets  map[string]*Network  // by key
	ready map[string]bool      // keys and endpoint IDs whose creation has committed
	eps   map[string]*Endpoint // by ID
	// byID is eps sorted by ID, as the last full copy found them; a copy
	// checks it still holds exactly eps before using it (sortedEpsLocked).
	byID []*Endpoint
	kept map[string]*keptNet // key -> a network given up on, kept for a retry (keepLocked)
	// dirty names what changed since the saver last took the state: the
	// IDs of endpoints added, changed or removed, and whether any
	// network did (touchLocked, takeChanges).
	dirty     map[string]bool
	netsDirty bool
	adopted   map[uint32]adoptedRemotes
	warned    map[string]uint64 // remote ID -> version of a conflict already logged
	// contested are the networks (VNIs) where remote entries claim what
	// another entry holds: there a pass over one entry may change which
	// claim wins, so it covers the network's every remote entry.
	contested map[uint32]bool
	// removed counts local endpoints taken out (delEpLocked): a pass that
	// finds a network newly contested and sees it changed since its read
	// passes over the network again (noteContested).
	removed uint64
	next    time.Time       // earliest end of a hidden entry's grace
	retryAt time.Time       // when to retry a failed reconcile (zero: no need)
	members string          // the members' addresses last programmed into Infra
	bg      context.Context // Run's context, for work after a caller gave up
	lastErr error           // of the last datapath pass
	started chan struct{}   // closed once Run has reconciled the saved state
	// key is this host's WireGuard key (zero until an encrypted network
	// needs one, or adopted from the kernel); wgPublished is the identity
	// last published (key, port, share); adoptedPeers are the WireGuard peers the kernel
	// held at start, kept until SyncWait (crypt.go).
	key          overlay.PrivateKey
	wgPublished  crypt.Host
	share        crypt.Share // this host's share of the preshared keys (crypt.go)
	adoptedPeers []overlay.CryptPeer
}

// New loads the local state saved by an earlier run. Run reconciles the
// datapath with it and serves the calls; calls made before Run wait for it.
func New(cfg Config, dp Datapath, cl Cluster) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg, log: cfg.Logger.With("component", "core"), dp: dp, cl: cl, start: time.Now(),
		ready: map[string]bool{}, kept: map[string]*keptNet{}, dirty: map[string]bool{}, adopted: map[uint32]adoptedRemotes{}, warned: map[string]uint64{}, contested: map[uint32]bool{}, started: make(chan struct{})}
	nets, eps, gen, err := loadState(cfg.StateDir, c.log.Warn)
	if err != nil {
		return nil, err
	}
	if c.share, err = crypt.NewShare(); err != nil {
		return nil, err
	}
	c.nets, c.eps = nets, eps
	for k := range nets {
		c.ready[k] = true
	}
	for id := range eps {
		c.ready[id] = true
	}
	c.w, c.saver = newWriter(c), newSaver(c, gen)
	return c, nil
}

// forbidden is what tenant subnets may not overlap on this host: the
// configured ranges and every known host's underlay address.
func (c *Core) forbidden() []rules.Forbidden {
	out := slices.Clone(c.cfg.Forbidden)
	for _, h := range c.cl.Hosts() {
		if h.VTEP.IsValid() && h.VTEP.Is4() {
			out = append(out, rules.Forbidden{Prefix: netip.PrefixFrom(h.VTEP, 32),
				What: fmt.Sprintf("the underlay address %s of host %s", h.VTEP, h.Name)})
		}
	}
	if c.cfg.VTEP.Is4() {
		out = append(out, rules.Forbidden{Prefix: netip.PrefixFrom(c.cfg.VTEP, 32),
			What: fmt.Sprintf("the underlay address %s of host %s", c.cfg.VTEP, c.cfg.Host)})
	}
	return out
}

// MaxMTU is the largest network MTU the underlay carries (0: unknown).
func (c *Core) MaxMTU() (int, error) { return c.dp.MaxMTU() }

// CheckSubnet applies the subnet rules of this host to p, for front ends
// that want to refuse a subnet early (Docker asks IPAM for the pool before
// it creates the network).
func (c *Core) CheckSubnet(p netip.Prefix) error {
	if err := rules.Subnet(p, c.forbidden()); err != nil {
		return kindErrorf(ErrInvalid, "%v", err)
	}
	return nil
}

// CreateNetwork creates a network on this host: checks it against the
// rules, this host's networks and the cluster's definition of the same
// tenant/name, builds it in the datapath, saves it and publishes it.
func (c *Core) CreateNetwork(ctx context.Context, spec NetworkSpec) (Network, error) {
	what := "create network " + spec.Key()
	if spec.Encrypted {
		// Never in clear: refused before anything else if this kernel
		// cannot encrypt.
		if err := c.CryptSupport(); err != nil {
			return Network{}, wrapKind(ErrInvalid, err, "%s: encrypted networks need WireGuard in the kernel of every host that has them", what)
		}
	}
	maxMTU, err := c.MaxMTUFor(spec.Encrypted)
	if err != nil {
		return Network{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := spec.normalize(c.forbidden(), maxMTU); err != nil {
		return Network{}, kindErrorf(ErrInvalid, "%s: %v", what, err)
	}
	if cn, ok := c.cl.Network(spec.Key()); ok && cn.Host != c.cfg.Host {
		if cn.Subnet != spec.Subnet {
			return Network{}, kindErrorf(ErrConflict, "%s: subnet %s differs from the cluster's %s (defined by host %s)", what, spec.Subnet, cn.Subnet, cn.Host)
		}
		if cn.VNI != spec.VNI {
			return Network{}, kindErrorf(ErrConflict, "%s: vni %d differs from the cluster's %d (defined by host %s)", what, spec.VNI, cn.VNI, cn.Host)
		}
	}
	if err := c.checkCrypt(spec); err != nil {
		return Network{}, kindErrorf(ErrConflict, "%s: %v", what, err)
	}
	if spec.Encrypted {
		if err := c.ensureKey(); err != nil {
			return Network{}, fmt.Errorf("%s: %w", what, err)
		}
	}
	var others []rules.Net
	for _, o := range c.cl.Networks() {
		others = append(others, rules.Net{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI, Subnet: o.Subnet})
	}
	n := &Network{NetworkSpec: spec, Created: time.Now().UTC()}
	scope := Scope{Tenants: []string{spec.Tenant}, Networks: []uint32{spec.VNI}}
	c.mu.Lock()
	if err := c.checkNewNetworkLocked(spec, others); err != nil {
		c.mu.Unlock()
		return Network{}, wrapKind(ErrConflict, err, "%s", what)
	}
	adopted := c.takeKeptLocked(spec, &scope)
	c.nets[spec.Key()] = n
	c.netsDirty = true
	c.mu.Unlock()
	if adopted {
		c.log.Info("adopting the datapath of a network whose creation was given up", "network", spec.Key())
	}

	if built, pending, err := c.commitWatch(ctx, scope); err != nil {
		c.mu.Lock()
		delete(c.nets, spec.Key())
		c.netsDirty = true
		var k *keptNet
		if ctx.Err() != nil && (built || pending != nil) {
			k = c.keepLocked(*n, scope)
		}
		c.mu.Unlock()
		if k != nil {
			// The kernel is slow, not failing: a retry must not start
			// over (nor wait for this one's removal first), or on a host
			// where a network takes longer than a call may wait, no
			// retry ever succeeds.
			c.log.Warn("network creation given up before the datapath finished it; keeping what is built for a retry",
				"network", spec.Key(), "keep", c.cfg.AbandonedKeep)
			c.undo(Scope{}) // the state file only: the datapath keeps it
			if pending != nil {
				go c.dropIfFailed(k, pending)
			}
		} else {
			c.undo(scope)
		}
		return Network{}, fmt.Errorf("%s: %w", what, err)
	}
	c.mu.Lock()
	c.ready[spec.Key()] = true
	c.mu.Unlock()
	c.publishNetwork(*n)
	c.log.Info("network created", "network", spec.Key(), "vni", spec.VNI, "subnet", spec.Subnet, "encrypted", spec.Encrypted, "ref", spec.Ref)
	return *n, nil
}

func (c *Core) checkNewNetworkLocked(spec NetworkSpec, others []rules.Net) error {
	if o := c.netByRefLocked(spec.Ref); spec.Ref != "" && o != nil {
		return fmt.Errorf("%.12s is already network %s here", spec.Ref, o.Key())
	}
	if o := c.nets[spec.Key()]; o != nil {
		return fmt.Errorf("already created on this host (as %.12s)", o.Ref)
	}
	for _, o := range c.nets {
		others = append(others, rules.Net{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI, Subnet: o.Subnet})
	}
	return rules.Conflict(rules.Net{Tenant: spec.Tenant, Name: spec.Name, VNI: spec.VNI, Subnet: spec.Subnet}, others)
}

// commit makes a change that is already in the local state real: the
// datapath holds it, the state file holds it, and the deadline has not
// passed (the commit point). On error the caller removes the change and
// calls undo (CreateNetwork may keep it instead: keepLocked).
func (c *Core) commit(ctx context.Context, scope Scope) error {
	_, _, err := c.commitWatch(ctx, scope)
	return err
}

// commitWatch is commit that also says, when it fails, whether the
// datapath pass succeeded (built), or, if ctx ended before the pass did,
// returns the channel the pass's result still arrives on (pending).
func (c *Core) commitWatch(ctx context.Context, scope Scope) (built bool, pending <-chan error, err error) {
	if pending, err := c.w.applyWatch(ctx, scope); err != nil {
		return false, pending, err
	}
	if err := c.saver.save(ctx); err != nil {
		return true, nil, err
	}
	if err := ctx.Err(); err != nil {
		return true, nil, fmt.Errorf("deadline passed before the change could be committed: %w", err)
	}
	return true, nil, nil
}

// keptNet is a network whose creation was given up, kept in the datapath
// (not in the local state) for a retry to adopt until its timer fires.
type keptNet struct {
	n     Network
	scope Scope // what removing it reconciles
	timer *time.Timer
}

// keepLocked keeps n in the datapath for cfg.AbandonedKeep, then removes
// it over scope unless a retry took it (takeKeptLocked). Nil: not kept
// (keeping is off, or the core is not running).
func (c *Core) keepLocked(n Network, scope Scope) *keptNet {
	if c.cfg.AbandonedKeep <= 0 || c.bg == nil || c.bg.Err() != nil {
		return nil
	}
	if old := c.kept[n.Key()]; old != nil {
		// Not reached today (a creation takes its key's kept network
		// first); if it were, removing the new one removes both.
		old.timer.Stop()
		scope = scope.merge(old.scope)
	}
	k := &keptNet{n: n, scope: scope}
	c.kept[n.Key()] = k
	k.timer = time.AfterFunc(c.cfg.AbandonedKeep, func() {
		if c.dropKept(k) {
			c.log.Info("removing a network whose creation was given up and not retried", "network", n.Key())
		}
	})
	return k
}

// dropIfFailed waits for the pass that was building k: if it failed, k
// is no network a retry should adopt, and it would fail every pass over
// its tenant while kept, so it goes at once.
func (c *Core) dropIfFailed(k *keptNet, pending <-chan error) {
	if err := <-pending; err != nil && c.dropKept(k) {
		c.log.Warn("removing a network whose creation was given up: its datapath pass failed", "network", k.n.Key(), "err", err)
	}
}

// dropKept ends k's keeping and removes it from the datapath, unless a
// retry took it or it was dropped already; it says whether it did.
func (c *Core) dropKept(k *keptNet) bool {
	c.mu.Lock()
	key := k.n.Key()
	mine := c.kept[key] == k
	if mine {
		k.timer.Stop()
		delete(c.kept, key)
		delete(c.contested, k.n.VNI)
	}
	running := c.bg.Err() == nil // else the next start's full pass removes it
	c.mu.Unlock()
	if mine && running {
		c.undo(k.scope)
	}
	return mine && running
}

// takeKeptLocked ends the keeping of the kept networks a new network
// spec replaces or conflicts with. It reports whether one is spec's own,
// built alike (adopted: the pass finds it made); the others' objects are
// added to scope, so that the pass removes them.
func (c *Core) takeKeptLocked(spec NetworkSpec, scope *Scope) (adopted bool) {
	for key, k := range c.kept {
		mine, was := spec, k.n.NetworkSpec
		mine.Ref, was.Ref = "", ""
		same := mine == was
		if !same && key != spec.Key() && rules.Conflict(rules.Net{Tenant: spec.Tenant, Name: spec.Name, VNI: spec.VNI, Subnet: spec.Subnet},
			[]rules.Net{{Tenant: was.Tenant, Name: was.Name, VNI: was.VNI, Subnet: was.Subnet}}) == nil {
			continue
		}
		k.timer.Stop()
		delete(c.kept, key)
		if same {
			adopted = true
			continue
		}
		if was.VNI != spec.VNI {
			delete(c.contested, was.VNI)
		}
		*scope = scope.merge(k.scope)
	}
	return adopted
}

// keptNetsLocked lists the kept networks, for the datapath's desired state.
func (c *Core) keptNetsLocked() []Network {
	out := make([]Network, 0, len(c.kept))
	for _, k := range c.kept {
		out = append(out, k.n)
	}
	return out
}

// undo removes what a failed change left in the datapath (over scope;
// nothing if it is empty, as for a kept network) and the state file, in
// the background: the change is already gone from the local state.
func (c *Core) undo(scope Scope) {
	c.mu.Lock()
	bg := c.bg
	c.mu.Unlock()
	if bg == nil {
		return
	}
	go func() {
		if !scope.Empty() {
			if err := <-c.w.submit(scope); err != nil {
				c.log.Error("undo a failed change", "err", err)
				c.scheduleRetry()
			}
		}
		if err := c.saver.save(bg); err != nil && bg.Err() == nil {
			c.log.Error("save state after undoing a failed change", "err", err)
		}
	}()
}

func (c *Core) scheduleRetry() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retryAt.IsZero() {
		c.retryAt = time.Now().Add(c.cfg.RetryInterval)
	}
}

func (c *Core) publishNetwork(n Network) {
	if err := c.cl.PutNetwork(gossip.Network{ID: n.Key(), Name: n.Name, Tenant: n.Tenant, VNI: n.VNI, Subnet: n.Subnet}); err != nil {
		c.log.Warn("publish network", "network", n.Key(), "err", err)
	}
	if err := c.cl.Attach(n.Key()); err != nil {
		c.log.Warn("publish attachment", "network", n.Key(), "err", err)
	}
	c.publishCrypt(n)
}

func (c *Core) publishEndpoint(e Endpoint) {
	if err := c.cl.PutEndpoint(gossip.Endpoint{ID: e.ID, Network: e.Network, MAC: e.MAC, IP: e.IP.Addr(), Names: e.Names}); err != nil {
		c.log.Warn("publish endpoint", "endpoint", e.ID, "err", err)
	}
}

// DeleteNetwork removes a network from this host, with any endpoint still
// on it. Deleting a network this host does not have is not an error.
func (c *Core) DeleteNetwork(ctx context.Context, key string) error {
	c.mu.Lock()
	n := c.nets[key]
	if n == nil {
		c.mu.Unlock()
		return nil
	}
	scope := Scope{Tenants: []string{n.Tenant}, Networks: []uint32{n.VNI}}
	var stale []string
	for id, e := range c.eps {
		if e.Network == key {
			stale = append(stale, id)
			c.delEpLocked(id)
			delete(c.ready, id)
			c.touchLocked(id)
			scope.Endpoints = append(scope.Endpoints, id)
		}
	}
	delete(c.nets, key)
	delete(c.ready, key)
	delete(c.contested, n.VNI)
	c.netsDirty = true
	c.mu.Unlock()
	for _, id := range stale {
		// Docker deletes a network only once it has no endpoints; these
		// are left by a call that failed half-way.
		c.log.Warn("deleting a stale endpoint with its network", "endpoint", id, "network", key)
		c.cl.DeleteEndpoint(id)
	}
	c.cl.Detach(key)
	c.cl.DeleteNetwork(key)
	c.cl.DeleteKV(crypt.NetworkKey(key))
	err := c.w.apply(ctx, scope)
	if serr := c.saver.save(ctx); err == nil {
		err = serr
	}
	if err != nil {
		c.scheduleRetry()
		return fmt.Errorf("delete network %s: %w", key, err)
	}
	c.log.Info("network deleted", "network", key, "ref", n.Ref)
	return nil
}

// CreateEndpoint creates a container's interface on one of this host's
// networks: a veth pair whose container end the front end hands over, and
// publishes it so that every other host with the network programs it.
func (c *Core) CreateEndpoint(ctx context.Context, spec EndpointSpec) (Endpoint, error) {
	what := fmt.Sprintf("create endpoint %.12s in network %s", spec.ID, spec.Network)
	c.mu.Lock()
	n := c.nets[spec.Network]
	var nspec NetworkSpec
	if n != nil {
		nspec = n.NetworkSpec
	}
	ready := c.ready[spec.Network]
	c.mu.Unlock()
	if n == nil {
		return Endpoint{}, kindErrorf(ErrNotFound, "%s: no such network on this host", what)
	}
	if !ready {
		return Endpoint{}, kindErrorf(ErrConflict, "%s: the network is still being created", what)
	}
	if err := spec.normalize(nspec); err != nil {
		return Endpoint{}, kindErrorf(ErrInvalid, "%s: %v", what, err)
	}
	remotes := c.cl.Remotes(spec.Network)
	e := &Endpoint{EndpointSpec: spec, Created: time.Now().UTC()}
	c.mu.Lock()
	if err := c.checkNewEndpointLocked(spec, remotes); err != nil {
		c.mu.Unlock()
		return Endpoint{}, wrapKind(ErrConflict, err, "%s", what)
	}
	c.putEpLocked(e)
	c.touchLocked(spec.ID)
	c.mu.Unlock()

	scope := Scope{Endpoints: []string{spec.ID}} // its veth pair, guard and ports: not the rest of its tenant
	if err := c.commit(ctx, scope); err != nil {
		c.mu.Lock()
		c.delEpLocked(spec.ID)
		c.touchLocked(spec.ID)
		scope.RemoteNets = c.claimsOnLocked(spec.Network)
		c.mu.Unlock()
		c.undo(scope)
		return Endpoint{}, fmt.Errorf("%s: %w", what, err)
	}
	c.mu.Lock()
	c.ready[spec.ID] = true
	c.mu.Unlock()
	c.publishEndpoint(*e)
	c.log.Info("endpoint created", "endpoint", spec.ID, "network", spec.Network, "ip", spec.IP, "mac", spec.MAC.String())
	return *e, nil
}

func (c *Core) checkNewEndpointLocked(spec EndpointSpec, remotes []Remote) error {
	if c.eps[spec.ID] != nil {
		return errors.New("already exists")
	}
	for _, o := range c.eps {
		if o.Network != spec.Network {
			continue
		}
		if o.IP.Addr() == spec.IP.Addr() {
			return fmt.Errorf("address %s is already used by endpoint %.12s on this host", spec.IP.Addr(), o.ID)
		}
		if bytes.Equal(o.MAC, spec.MAC) {
			return fmt.Errorf("mac %s is already used by endpoint %.12s on this host", spec.MAC, o.ID)
		}
	}
	for _, r := range remotes {
		if !r.DownSince.IsZero() || r.Host == c.cfg.Host {
			continue
		}
		if r.IP == spec.IP.Addr() {
			return fmt.Errorf("address %s is already used by endpoint %.12s on host %s", spec.IP.Addr(), r.ID, r.Host)
		}
		if bytes.Equal(r.MAC, spec.MAC) {
			return fmt.Errorf("mac %s is already used by endpoint %.12s on host %s", spec.MAC, r.ID, r.Host)
		}
	}
	return nil
}

// AttachEndpoint records the network namespace an endpoint's interface
// went to (Docker's Join), which garbage collection watches.
func (c *Core) AttachEndpoint(ctx context.Context, id, netns string) (Endpoint, Network, error) {
	c.mu.Lock()
	e := c.eps[id]
	if e == nil || !c.ready[id] {
		c.mu.Unlock()
		return Endpoint{}, Network{}, kindErrorf(ErrNotFound, "attach endpoint %.12s: no such endpoint", id)
	}
	n := *c.nets[e.Network]
	changed := netns != "" && e.Netns != netns
	if changed {
		e.Netns, e.NetnsSeen = netns, false
		c.touchLocked(id)
	}
	out := *e
	c.mu.Unlock()
	if changed {
		if err := c.saver.save(ctx); err != nil {
			return Endpoint{}, Network{}, fmt.Errorf("attach endpoint %.12s: %w", id, err)
		}
	}
	return out, n, nil
}

// SetEndpointNames records the names a local endpoint answers to (its
// container's name, then its aliases) and publishes them; the datapath is
// not involved. Setting the names it has already is a no-op.
func (c *Core) SetEndpointNames(ctx context.Context, id string, names []string) error {
	if err := checkNames(names); err != nil {
		return kindErrorf(ErrInvalid, "set names of endpoint %.12s: %v", id, err)
	}
	c.mu.Lock()
	e := c.eps[id]
	if e == nil || !c.ready[id] {
		c.mu.Unlock()
		return kindErrorf(ErrNotFound, "set names of endpoint %.12s: no such endpoint", id)
	}
	if slices.Equal(e.Names, names) {
		c.mu.Unlock()
		return nil
	}
	e.Names = slices.Clone(names)
	c.touchLocked(id)
	out := *e
	c.mu.Unlock()
	if err := c.saver.save(ctx); err != nil {
		return fmt.Errorf("set names of endpoint %.12s: %w", id, err)
	}
	c.publishEndpoint(out)
	c.log.Info("endpoint names", "endpoint", id, "names", names)
	return nil
}

// DeleteEndpoint removes an endpoint and withdraws it from the cluster.
// Deleting an unknown endpoint is not an error (Docker repeats calls when it
// rolls back).
func (c *Core) DeleteEndpoint(ctx context.Context, id string) error {
	c.mu.Lock()
	e := c.eps[id]
	if e == nil {
		c.mu.Unlock()
		return nil
	}
	c.delEpLocked(id)
	delete(c.ready, id)
	c.touchLocked(id)
	// The endpoint alone: the overlay finds what is left of it by its
	// port, also when the container's namespace took the veth pair with
	// it (as when the collector removes it). Naming its tenant would read
	// every port of the tenant: at 1,000 endpoints a removal took 5x the
	// first's (236 ms against 44). In a contested network a remote entry
	// may have been left out for claiming this endpoint's address or MAC:
	// the pass covers the network's remote entries too, or that entry
	// would stay out until the next full pass.
	scope := Scope{Endpoints: []string{id}, RemoteNets: c.claimsOnLocked(e.Network)}
	c.mu.Unlock()
	// Withdraw first: other hosts stop sending to it while it goes.
	c.cl.DeleteEndpoint(id)
	err := c.w.apply(ctx, scope)
	if serr := c.saver.save(ctx); err == nil {
		err = serr
	}
	if err != nil {
		c.scheduleRetry()
		return fmt.Errorf("delete endpoint %.12s: %w", id, err)
	}
	c.log.Info("endpoint deleted", "endpoint", id, "network", e.Network, "ip", e.IP)
	return nil
}

// Network returns the network with key, if this host has it.
func (c *Core) Network(key string) (Network, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nets[key]; n != nil && c.ready[key] {
		return *n, true
	}
	return Network{}, false
}

// HasSubnet says whether this host has a network of tenant with subnet
// (created, or being created).
func (c *Core) HasSubnet(tenant string, subnet netip.Prefix) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nets {
		if n.Tenant == tenant && n.Subnet == subnet {
			return true
		}
	}
	return false
}

// NetworkByRef returns the network a front end knows by ref.
func (c *Core) NetworkByRef(ref string) (Network, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.netByRefLocked(ref); n != nil && c.ready[n.Key()] {
		return *n, true
	}
	return Network{}, false
}

func (c *Core) netByRefLocked(ref string) *Network {
	for _, n := range c.nets {
		if n.Ref == ref {
			return n
		}
	}
	return nil
}

// Endpoint returns a local endpoint.
func (c *Core) Endpoint(id string) (Endpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.eps[id]; e != nil && c.ready[id] {
		return *e, true
	}
	return Endpoint{}, false
}

// Networks lists this host's networks, sorted by key.
func (c *Core) Networks() []Network {
	nets, _ := c.snapshotReady()
	return nets
}

// Endpoints lists this host's endpoints, sorted by ID.
func (c *Core) Endpoints() []Endpoint {
	_, eps := c.snapshotReady()
	return eps
}

// snapshot copies the local state, pending changes included (they are in
// the datapath and must be in the state file).
func (c *Core) snapshot() ([]Network, []Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copyLocked(func(string) bool { return true })
}

// touchLocked notes that endpoints changed (added, altered or removed),
// for the saver's next write.
func (c *Core) touchLocked(ids ...string) {
	for _, id := range ids {
		c.dirty[id] = true
	}
}

// changes is what the saver takes: the whole state (all), or what
// changed since it last took it.
type changes struct {
	all       bool
	nets      []Network  // every network: when all, or when any changed
	netsDirty bool       // nets holds the networks (they changed, or all)
	set       []Endpoint // endpoints added or changed (every one, when all)
	del       []string   // IDs of endpoints removed
}

// takeChanges copies what changed since the last call (everything, if all)
// and starts noting afresh. Each change is the local state at the time of
// the call, pending changes included, as snapshot.
func (c *Core) takeChanges(all bool) changes {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { clear(c.dirty); c.netsDirty = false }()
	if all {
		nets, eps := c.copyLocked(func(string) bool { return true })
		return changes{all: true, nets: nets, netsDirty: true, set: eps}
	}
	ch := changes{netsDirty: c.netsDirty}
	if c.netsDirty {
		ch.nets = c.copyNetsLocked(func(string) bool { return true })
	}
	for id := range c.dirty {
		if e := c.eps[id]; e != nil {
			ch.set = append(ch.set, *e)
		} else {
			ch.del = append(ch.del, id)
		}
	}
	slices.SortFunc(ch.set, byEndpointID)
	slices.Sort(ch.del)
	return ch
}

func (c *Core) snapshotReady() ([]Network, []Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.copyLocked(func(k string) bool { return c.ready[k] })
}

func (c *Core) copyLocked(keep func(string) bool) ([]Network, []Endpoint) {
	return c.copyNetsLocked(keep), c.copyEpsLocked(keep)
}

// copyNetsLocked copies the networks whose keys keep, sorted by key.
func (c *Core) copyNetsLocked(keep func(string) bool) []Network {
	nets := make([]Network, 0, len(c.nets))
	for k, n := range c.nets {
		if keep(k) {
			nets = append(nets, *n)
		}
	}
	slices.SortFunc(nets, func(a, b Network) int { return cmp.Compare(a.Key(), b.Key()) })
	return nets
}

// copyEpsLocked copies the endpoints whose IDs keep, sorted by ID. It
// sorts pointers, then copies: sorting the values themselves moved each
// one many times (a third of a pass at 1,000 endpoints).
func (c *Core) copyEpsLocked(keep func(string) bool) []Endpoint {
	eps := make([]Endpoint, 0, len(c.eps))
	for _, e := range c.sortedEpsLocked() {
		if keep(e.ID) {
			eps = append(eps, *e)
		}
	}
	return eps
}

// putEpLocked adds (or replaces) an endpoint, keeping byID sorted.
func (c *Core) putEpLocked(e *Endpoint) {
	c.eps[e.ID] = e
	i, found := slices.BinarySearchFunc(c.byID, e.ID, func(x *Endpoint, id string) int { return cmp.Compare(x.ID, id) })
	if found {
		c.byID[i] = e
	} else {
		c.byID = slices.Insert(c.byID, i, e)
	}
}

// delEpLocked removes an endpoint, keeping byID sorted.
func (c *Core) delEpLocked(id string) {
	delete(c.eps, id)
	c.removed++
	if i, found := slices.BinarySearchFunc(c.byID, id, func(x *Endpoint, id string) int { return cmp.Compare(x.ID, id) }); found {
		c.byID = slices.Delete(c.byID, i, i+1)
	}
}

// sortedEpsLocked returns the endpoints sorted by ID. It keeps the order
// between calls (putEpLocked and delEpLocked keep it as endpoints come and
// go): sorting 1,000 IDs took most of a pass's copy of the local state.
// The kept order is used only if it holds exactly the endpoints of eps
// (each one's pointer is the map's, and the counts agree), else it is
// sorted afresh: a change of eps made otherwise costs a sort, never a
// wrong copy.
func (c *Core) sortedEpsLocked() []*Endpoint {
	ok := len(c.byID) == len(c.eps)
	for i := 0; ok && i < len(c.byID); i++ {
		ok = c.eps[c.byID[i].ID] == c.byID[i]
	}
	if !ok {
		c.byID = make([]*Endpoint, 0, len(c.eps))
		for _, e := range c.eps {
			c.byID = append(c.byID, e)
		}
		slices.SortFunc(c.byID, func(a, b *Endpoint) int { return cmp.Compare(a.ID, b.ID) })
	}
	return c.byID
}

// readView reads everything the desired state needs: the local state (with
// the kept networks, keepLocked) under the lock, then gossip's view of the
// local networks without it; of the networks in only, if only is not nil
// (those a pass's scope can touch: scopeNetworks).
func (c *Core) readView(only map[string]bool) view {
	c.mu.Lock()
	nets, eps := c.copyLocked(func(string) bool { return true })
	nets = c.withKeptLocked(nets)
	c.mu.Unlock()
	return c.viewOf(only, nets, eps, c.cl.Remotes)
}

// withKeptLocked adds the kept networks to nets (sorted by key): the
// datapath holds both.
func (c *Core) withKeptLocked(nets []Network) []Network {
	if len(c.kept) == 0 {
		return nets
	}
	nets = append(nets, c.keptNetsLocked()...)
	slices.SortFunc(nets, func(a, b Network) int { return cmp.Compare(a.Key(), b.Key()) })
	return nets
}

// viewOf is readView's view of the local networks and endpoints given,
// with the remote endpoints that remotes reads of each network in only.
func (c *Core) viewOf(only map[string]bool, nets []Network, eps []Endpoint, remotes func(network string) []Remote) view {
	c.mu.Lock()
	adopted := make(map[uint32]adoptedRemotes, len(c.adopted))
	for k, v := range c.adopted {
		adopted[k] = v
	}
	key, share, adoptedPeers := c.key, c.share, slices.Clone(c.adoptedPeers)
	c.mu.Unlock()
	v := view{host: c.cfg.Host, vtep: c.cfg.VTEP, nets: nets, eps: eps, adopted: adopted,
		remotes: map[string][]Remote{}, peers: map[string][]Peer{}, infra: c.infra(), key: key, share: share, adoptedPeers: adoptedPeers}
	encrypted := false
	for _, n := range nets {
		if only != nil && !only[n.Key()] {
			continue
		}
		v.remotes[n.Key()] = remotes(n.Key())
		v.peers[n.Key()] = c.cl.Peers(n.Key())
		encrypted = encrypted || n.Encrypted
	}
	if encrypted {
		var bad []string
		v.keys, bad = crypt.Hosts(ClusterKV{c.cl})
		if len(bad) > 0 {
			c.log.Debug("malformed wireguard identities ignored", "hosts", bad)
		}
	}
	return v
}

// readClaims is the view a pass over some remote entries and nothing else
// needs, if the cluster can read entries by MAC (ClaimReader): of each
// network, only the entries with the scope's MACs, those sharing an IP
// with them, and the local endpoints sharing a MAC or IP with any of
// these; ok is false otherwise, or while adopted entries fill in a network
// of the scope. Whether an entry is programmed depends only on the
// entries that claim its MAC or IP: if planning from this view finds no
// conflict, it programs the scope's entries as planning from the whole
// network would (reconcile plans again from the whole network if it does
// find one). So a remote change costs the same with 10 or 10,000 other
// endpoints in its network: the whole listing was most of a remote
// change's pass at 1,000 (issue 13).
func (c *Core) readClaims(scope Scope) (v view, ok bool) {
	if scope.All || scope.Infra || scope.Crypt || len(scope.Remotes) == 0 ||
		len(scope.Tenants)+len(scope.Networks)+len(scope.Endpoints)+len(scope.RemoteNets) > 0 {
		return view{}, false
	}
	cr, ok := c.cl.(ClaimReader)
	if !ok {
		return view{}, false
	}
	macs := map[string][]net.HardwareAddr{}
	c.mu.Lock()
	byVNI := make(map[uint32]string, len(c.nets))
	c.datapathNetsLocked(func(k string, n *Network) { byVNI[n.VNI] = k })
	for _, r := range scope.Remotes {
		key, known := byVNI[r.VNI]
		mac, err := net.ParseMAC(r.MAC)
		if !known || err != nil || len(c.adopted[r.VNI].remotes) > 0 {
			c.mu.Unlock()
			return view{}, false
		}
		macs[key] = append(macs[key], mac)
	}
	c.mu.Unlock()
	claims := make(map[string][]Remote, len(macs))
	only := make(map[string]bool, len(macs))
	for key, ms := range macs {
		claims[key], only[key] = cr.RemoteClaims(key, ms), true
	}
	c.mu.Lock()
	nets := c.withKeptLocked(c.copyNetsLocked(func(string) bool { return true }))
	var eps []Endpoint
	for _, e := range c.eps {
		if rs, ok := claims[e.Network]; ok && sharesClaim(e, rs, macs[e.Network]) {
			eps = append(eps, *e)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(eps, byEndpointID)
	return c.viewOf(only, nets, eps, func(key string) []Remote { return claims[key] }), true
}

// sharesClaim says whether local endpoint e has one of macs, or the MAC
// or IP of one of rs.
func sharesClaim(e *Endpoint, rs []Remote, macs []net.HardwareAddr) bool {
	for _, m := range macs {
		if bytes.Equal(m, e.MAC) {
			return true
		}
	}
	for i := range rs {
		if bytes.Equal(rs[i].MAC, e.MAC) || rs[i].IP.IsValid() && rs[i].IP == e.IP.Addr() {
			return true
		}
	}
	return false
}

// scopeNetworks returns the keys of the local (and kept) networks whose remote
// entries and peers a pass over scope can touch (overlay.Scope says what
// each part reaches), so that the pass reads gossip's view of those only
// and its cost does not grow with the host's other networks; nil for
// every network (All, Infra).
func (c *Core) scopeNetworks(scope Scope) map[string]bool {
	if scope.All || scope.Infra {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	only := map[string]bool{}
	byVNI := make(map[uint32]string, len(c.nets))
	c.datapathNetsLocked(func(k string, n *Network) {
		byVNI[n.VNI] = k
		if slices.Contains(scope.Tenants, n.Tenant) {
			only[k] = true
		}
	})
	for _, vni := range slices.Concat(scope.Networks, scope.RemoteNets) {
		if k, ok := byVNI[vni]; ok {
			only[k] = true
		}
	}
	for _, r := range scope.Remotes {
		if k, ok := byVNI[r.VNI]; ok {
			only[k] = true
		}
	}
	for _, id := range scope.Endpoints {
		if e := c.eps[id]; e != nil {
			only[e.Network] = true
		}
	}
	// The WireGuard peers are every host sharing any encrypted network
	// with this one, and the datapath sets them whenever the scope has
	// Crypt or names a tenant or network: then every encrypted network
	// is read, or the peers of the others would be dropped.
	if scope.setsCrypt() {
		c.datapathNetsLocked(func(k string, n *Network) {
			if n.Encrypted {
				only[k] = true
			}
		})
	}
	return only
}

// datapathNetsLocked calls fn for every network the datapath holds: the
// local state's and the kept ones (keepLocked).
func (c *Core) datapathNetsLocked(fn func(key string, n *Network)) {
	for k, n := range c.nets {
		fn(k, n)
	}
	for k, kn := range c.kept {
		fn(k, &kn.n)
	}
}

// reconcile is the writer's pass: desired state from the view, then the
// datapath for scope.
func (c *Core) reconcile(ctx context.Context, scope Scope) error {
	if scope.Empty() {
		return nil
	}
	start := time.Now()
	c.mu.Lock()
	removed := c.removed // before the state is read
	c.mu.Unlock()
	scope = c.widenContested(scope)
	v, claimsOnly := c.readClaims(scope)
	if !claimsOnly {
		v = c.readView(c.scopeNetworks(scope))
	}
	s, conflicts, next := desired(v, time.Now(), c.cfg.HiddenGrace)
	if claimsOnly && len(conflicts) > 0 {
		// The scope's entries contend with others: plan from the whole
		// networks, which also notes them contested.
		v = c.readView(c.scopeNetworks(scope))
		s, conflicts, next = desired(v, time.Now(), c.cfg.HiddenGrace)
	}
	if again := c.noteContested(scope, v, conflicts, removed); len(again) > 0 {
		// This pass changed entries of a network that turned out
		// contested one by one, or read a local endpoint that has gone
		// since: the next covers all of its entries.
		c.submitAsync(Scope{RemoteNets: again}, nil)
	}
	c.mu.Lock()
	if !next.IsZero() && (c.next.IsZero() || next.Before(c.next)) {
		c.next = next
	}
	var fresh []conflict
	for _, cf := range conflicts {
		if c.warned[cf.remote.ID] != cf.remote.Version {
			c.warned[cf.remote.ID] = cf.remote.Version
			fresh = append(fresh, cf)
		}
	}
	c.mu.Unlock()
	for _, cf := range fresh {
		c.log.Warn("remote endpoint claims a taken address or mac; ignored", "endpoint", cf.remote.ID, "host", cf.remote.Host,
			"ip", cf.remote.IP, "mac", cf.remote.MAC.String(), "network", cf.remote.Network, "taken_by", cf.with)
	}
	err := c.dp.Apply(ctx, s, scope)
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
	if o := c.cfg.Observer; o != nil {
		o.Reconciled(scope.All, time.Since(start), err)
	}
	return err
}

// claimsOnLocked returns the VNI of network as a pass's RemoteNets when
// the network is contested (a remote entry there may be out for claiming
// what a local endpoint holds), else nil. Removing a local endpoint, or
// undoing its creation, asks in the critical section that takes the
// endpoint out. A pass that read the endpoint just before and finds the
// network contested only after this answered nil makes a follow-up pass
// over the whole network (noteContested), which reads the state without
// the endpoint.
func (c *Core) claimsOnLocked(network string) []uint32 {
	if n := c.nets[network]; n != nil && c.contested[n.VNI] {
		return []uint32{n.VNI}
	}
	return nil
}

// widenContested makes a pass over some remote entries of a contested
// network cover all of them: of two entries claiming one address or MAC
// the newer wins, so adding, changing or removing one may bring in or
// take out the other.
func (c *Core) widenContested(scope Scope) Scope {
	if scope.All || len(scope.Remotes) == 0 {
		return scope
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range scope.Remotes {
		if c.contested[r.VNI] && !slices.Contains(scope.RemoteNets, r.VNI) {
			scope.RemoteNets = union(scope.RemoteNets, []uint32{r.VNI})
		}
	}
	return scope
}

// noteContested records which networks have conflicting claims, after a
// pass over scope found conflicts in the view v, and returns those it
// found contested without covering all of their entries, or found newly
// contested when a local endpoint went after the pass's read (removed is
// c.removed then): both need a pass that covers the network, the second
// because a remote entry it left out for claiming what that endpoint held
// belongs in the kernel now, and the removal's own pass, which saw the
// network not yet contested, covered only the endpoint.
func (c *Core) noteContested(scope Scope, v view, conflicts []conflict, removed uint64) (again []uint32) {
	vniOf := make(map[string]uint32, len(v.nets))
	for _, n := range v.nets {
		vniOf[n.Key()] = n.VNI
	}
	found := map[uint32]bool{}
	for _, cf := range conflicts {
		if vni, ok := vniOf[cf.remote.Network]; ok {
			found[vni] = true
		}
	}
	covers := func(n Network) bool {
		return scope.All || slices.Contains(scope.Tenants, n.Tenant) || slices.Contains(scope.Networks, n.VNI) ||
			slices.Contains(scope.RemoteNets, n.VNI)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range v.nets {
		switch {
		case covers(n):
			if found[n.VNI] {
				if !c.contested[n.VNI] && c.removed != removed {
					again = append(again, n.VNI)
				}
				c.contested[n.VNI] = true
			} else {
				delete(c.contested, n.VNI)
			}
		case found[n.VNI] && !c.contested[n.VNI]:
			c.contested[n.VNI] = true
			again = append(again, n.VNI)
		}
	}
	return again
}

// infra is Config.Infra with every known host's underlay address denied.
func (c *Core) infra() overlay.Infra {
	in := c.cfg.Infra
	in.Deny = slices.Clone(in.Deny)
	for _, a := range c.memberAddrs() {
		in.Deny = append(in.Deny, netip.PrefixFrom(a, a.BitLen()))
	}
	slices.SortFunc(in.Deny, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	in.Deny = slices.Compact(in.Deny)
	return in
}

// memberAddrs lists the underlay addresses of every known host, this one
// included, sorted.
func (c *Core) memberAddrs() []netip.Addr {
	out := []netip.Addr{c.cfg.VTEP}
	for _, h := range c.cl.Hosts() {
		if h.VTEP.IsValid() {
			out = append(out, h.VTEP)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// vniOf returns the VNI of a local network, if this host has it.
func (c *Core) vniOf(key string) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nets[key]; n != nil {
		return n.VNI, true
	}
	return 0, false
}
