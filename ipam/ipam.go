package ipam

// IPAM glues the allocator (allocator.go) to ownership (blocks.go,
// ownership.go) over a Replica. The hot path, RequestAddress with space this
// host owns, takes one mutex, touches no network and waits for one save
// (outbox.go). Only a host short of space waits longer: it writes a want
// naming one owner and waits for that owner's handover or refusal, then
// asks the next owner.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// AddrKind says why Docker asks for an address.
type AddrKind int

const (
	// KindContainer is an endpoint's address.
	KindContainer AddrKind = iota
	// KindGateway is the network's gateway (RequestAddressType option).
	KindGateway
	// KindAux is an --aux-address of a network being created.
	KindAux
)

// AddressRequest is a validated RequestAddress.
type AddressRequest struct {
	Addr netip.Addr // requested (--ip, --gateway, --aux-address); zero: any
	Kind AddrKind
	// Untagged marks a container request for an explicit address that came
	// with no option, on a network the driver already has: Docker's form
	// both for --ip and for every address it replays at its start, the
	// network's aux addresses included (as of Docker 20.10, without
	// RequiresMACAddress). Such a request for one of the pool's aux
	// addresses is taken as the replay of it, once after each RequestPool;
	// any other request naming an aux address is refused.
	Untagged bool
}

// Pool is RequestPool's answer.
type Pool struct {
	ID      string       // "<tenant>/<subnet>", the same on every host
	Subnet  netip.Prefix // masked
	Gateway netip.Addr   // the cluster-wide gateway (first usable unless --gateway)
}

// IPAM allocates addresses unique across the cluster. Safe for concurrent
// use; Run must be running for a host to obtain blocks, to serve others and
// to write its entries.
type IPAM struct {
	cfg Config
	log *slog.Logger
	rep Replica

	kick chan struct{} // asks Run to reconcile now
	wake chan struct{} // asks the writer to save and write now

	mu         sync.Mutex // guards the fields below
	pools      map[string]*pool
	own        map[string]blockEntry      // this host's block entries, by key
	ownIdx     map[string]map[string]bool // block key -> keys of this host's entries in it
	ownRemoval map[string]removalEntry    // this host's removal entries
	claims     map[string][]claim         // other hosts' claims, by the key of the block they fall in
	cache      map[[2]string]cached       // decoded entries by (key, host)
	geos       map[[2]string]geometry     // block geometry by (pool, range)
	logged     map[string]bool            // conflicts already logged, so each is logged once
	keep       map[string]bool            // blocks whose allocations are unknown (restored without a store): never given away
	removed    map[string]bool            // hosts removed by an admin
	heirs      map[string]string          // removed host -> heir, once done
	served     map[string]uint64          // "<pool>|<requester>" -> last want seq answered
	replies    map[string]replyEntry      // "<pool>|<donor>" -> the donor's last reply to this host
	fenced     bool                       // this host was removed
	seq        uint64                     // last want seq
	notify     chan struct{}              // closed on every ownership change

	// Saving and writing, done without the lock (outbox.go).
	out       map[string]outWrite // entries queued for the replica
	gen       uint64              // bumped on every change
	saved     uint64              // gen of the last successful save
	saving    bool                // a save is under way
	saveDone  chan struct{}       // closed when a save ends
	saveErr   error               // error of the last failed save
	failedGen uint64              // gen that save covered
}

type pool struct {
	req            PoolRequest
	gateway        netip.Addr
	gwPending      bool // the default gateway, not yet confirmed by Docker's gateway request: not published
	aux            []netip.Addr
	auxReplay      map[netip.Addr]bool // aux addresses Docker may replay since the last RequestPool
	refs           int                 // RequestPool minus ReleasePool since start (Docker replays at its start)
	dropping       bool                // ReleasePool found addresses still allocated: drop when the last goes
	alloc          *Allocator
	genNext        uint64                // genesis blocks below this are not ours to use
	received       uint64                // parts accepted by handover, ever
	given          uint64                // parts handed over, ever
	extra          map[netip.Addr]string // reserved because another host (the value) published them
	pendingReserve map[netip.Addr]bool   // to reserve once released (a conflict)
	acquirer       chan struct{}         // one acquisition at a time
}

// rangeString is the pool's ip-range as entries carry it ("" for none).
func (p *pool) rangeString() string {
	if p.req.Range.IsValid() {
		return p.req.Range.String()
	}
	return ""
}

// New returns an IPAM for cfg.Host over rep, restoring cfg.Store's state.
func New(cfg Config, rep Replica) (*IPAM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &IPAM{
		cfg: cfg, log: log.With("component", "ipam", "host", cfg.Host), rep: rep,
		kick: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		pools: map[string]*pool{}, own: map[string]blockEntry{}, ownIdx: map[string]map[string]bool{}, ownRemoval: map[string]removalEntry{},
		claims: map[string][]claim{}, cache: map[[2]string]cached{}, geos: map[[2]string]geometry{}, logged: map[string]bool{},
		keep: map[string]bool{}, removed: map[string]bool{}, heirs: map[string]string{},
		served: map[string]uint64{}, replies: map[string]replyEntry{}, notify: make(chan struct{}),
		out: map[string]outWrite{}, saveDone: make(chan struct{}),
	}
	if err := m.restore(); err != nil {
		return nil, err
	}
	m.reconcile(true) // know removals, heirs and claims before the first request
	return m, nil
}

// newPoolLocked creates the local record of a pool and loads the parts this
// host owns in it.
func (m *IPAM) newPoolLocked(req PoolRequest, gateway netip.Addr, aux []netip.Addr, gwPending bool) *pool {
	bb := m.cfg.BlockBitsV4
	if req.Subnet.Addr().Is6() {
		bb = m.cfg.BlockBitsV6
	}
	res := reservedAddrs(req.Subnet, gateway, aux)
	p := &pool{req: req, gateway: gateway, gwPending: gwPending, aux: aux, acquirer: make(chan struct{}, 1),
		pendingReserve: map[netip.Addr]bool{}, extra: map[netip.Addr]string{},
		alloc: NewAllocator(req.allocRange(), bb, sortedAddrs(res))}
	id := req.PoolID()
	for _, bk := range m.poolBlockKeysLocked(id) {
		for _, part := range m.ownPartsLocked(bk) {
			p.alloc.AddPrefix(part)
		}
	}
	m.pools[id] = p
	return p
}

// DefaultAddressSpaces answers GetDefaultAddressSpaces.
func (m *IPAM) DefaultAddressSpaces() (local, global string) { return LocalSpace, GlobalSpace }

// RequestPool defines (or, for an identical request, references again) a
// pool. Subnets of one tenant must not overlap; identical subnets in
// different tenants are distinct pools.
func (m *IPAM) RequestPool(ctx context.Context, req PoolRequest) (Pool, error) {
	id := req.PoolID()
	m.mu.Lock()
	pl, undo, err := m.requestPoolLocked(ctx, req)
	gen := m.gen
	m.mu.Unlock()
	if err != nil {
		return Pool{}, err
	}
	if err := m.commit(ctx, gen, undo); err != nil {
		return Pool{}, fmt.Errorf("request pool %s: %w", id, err)
	}
	return pl, nil
}

func (m *IPAM) requestPoolLocked(ctx context.Context, req PoolRequest) (Pool, func(), error) {
	id := req.PoolID()
	if p := m.pools[id]; p != nil {
		if p.req != req {
			return Pool{}, nil, kindErrorf(ErrOverlap, "request pool %s with ip-range %v: the pool exists with ip-range %v", id, req.Range, p.req.Range)
		}
		if err := ctx.Err(); err != nil {
			return Pool{}, nil, fmt.Errorf("request pool %s: %w", id, err)
		}
		dropping, replay := p.dropping, p.auxReplay
		if p.refs++; p.refs == 1 {
			m.publishLocked(id)
		}
		p.dropping = false
		// Docker replays the network's aux addresses next, if this is its
		// restart: take them as such, once each.
		p.auxReplay = map[netip.Addr]bool{}
		for _, a := range p.aux {
			p.auxReplay[a] = true
		}
		m.changedLocked()
		undo := func() {
			p.refs--
			p.dropping, p.auxReplay = dropping, replay
			m.dropIfUnusedLocked(id, p)
		}
		return Pool{ID: id, Subnet: req.Subnet, Gateway: p.gateway}, undo, nil
	}
	for oid, p := range m.pools {
		if p.req.Tenant == req.Tenant && overlaps(p.req.Subnet, req.Subnet) {
			return Pool{}, nil, kindErrorf(ErrOverlap, "request pool %s: subnet %s overlaps pool %s of tenant %s", id, req.Subnet, oid, req.Tenant)
		}
	}
	if err := ctx.Err(); err != nil {
		return Pool{}, nil, fmt.Errorf("request pool %s: %w", id, err)
	}
	p := m.newPoolLocked(req, req.DefaultGateway(), nil, true)
	p.refs = 1
	m.publishLocked(id)
	m.changedLocked()
	m.log.Info("pool created", "tenant", req.Tenant, "pool", id)
	undo := func() {
		p.refs--
		p.dropping = true
		m.dropIfUnusedLocked(id, p)
	}
	return Pool{ID: id, Subnet: req.Subnet, Gateway: p.gateway}, undo, nil
}

// ReleasePool drops one reference. The local record goes when no reference
// and no container address remains; blocks stay owned by this host.
func (m *IPAM) ReleasePool(ctx context.Context, id string) error {
	m.mu.Lock()
	p := m.pools[id]
	if p == nil {
		m.mu.Unlock()
		return nil // idempotent
	}
	if err := ctx.Err(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("release pool %s: %w", id, err)
	}
	if p.refs > 0 {
		p.refs--
	}
	if p.refs == 0 {
		p.dropping = true
		m.dropIfUnusedLocked(id, p)
	}
	gen := m.changedLocked()
	m.mu.Unlock()
	m.settle(ctx, gen)
	return nil
}

// settle waits, bounded by ctx, until a release is saved. A release stands
// once made: if it is not saved in time, the writer saves it soon after,
// and a restart before that only leaves the address allocated (unused,
// never duplicated).
func (m *IPAM) settle(ctx context.Context, gen uint64) {
	if m.persist(ctx, gen) != nil {
		m.kickWriter()
	}
}

// dropIfUnusedLocked forgets a released pool once no container address is
// left in it. Only ReleasePool starts this: after a restart refs is 0 until
// Docker replays, and the pool must not vanish under running containers.
func (m *IPAM) dropIfUnusedLocked(id string, p *pool) {
	if p.dropping && p.refs == 0 && p.usedLocked() == 0 && m.pools[id] == p {
		delete(m.pools, id)
		m.publishLocked(id)
		m.log.Info("pool released", "pool", id)
	}
}

func (p *pool) usedLocked() int {
	n := 0
	for _, i := range p.alloc.order {
		n += p.alloc.Used(i)
	}
	return n
}

// ParseAddress parses Docker's Address field for the errors Docker shows.
func ParseAddress(poolID, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	if pre, err := netip.ParsePrefix(s); err == nil {
		return pre.Addr(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, kindErrorf(ErrInvalid, "request address %s in pool %s: not an address", s, poolID)
	}
	return a.Unmap(), nil
}

// RequestAddress hands out an address: any free one, or req.Addr. It is
// answered from what this host owns; only when that is full (or the
// requested address is another host's) does it wait for a handover,
// bounded by ctx. It answers only once the allocation is saved, and
// allocates nothing if ctx ends first.
func (m *IPAM) RequestAddress(ctx context.Context, poolID string, req AddressRequest) (netip.Prefix, error) {
	m.mu.Lock()
	a, undo, err := m.requestAddressLocked(ctx, poolID, req)
	gen := m.gen
	m.mu.Unlock()
	if err != nil {
		return netip.Prefix{}, err
	}
	if undo == nil {
		return a, nil // nothing changed
	}
	if err := m.commit(ctx, gen, undo); err != nil {
		if req.Addr.IsValid() {
			return netip.Prefix{}, fmt.Errorf("request address %s in pool %s: %w", req.Addr, poolID, err)
		}
		return netip.Prefix{}, fmt.Errorf("request address in pool %s: %w", poolID, err)
	}
	return a, nil
}

// AllocatedHere says whether address a of pool poolID is allocated to a
// container by this host.
func (m *IPAM) AllocatedHere(poolID string, a netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[poolID]
	return p != nil && p.req.Subnet.Contains(a) && p.alloc.Allocated(a)
}

// requestAddressLocked makes the change in memory and returns how to take
// it back (nil if nothing changed). ctx is checked right before the change.
func (m *IPAM) requestAddressLocked(ctx context.Context, poolID string, req AddressRequest) (netip.Prefix, func(), error) {
	p := m.pools[poolID]
	if p == nil {
		return netip.Prefix{}, nil, kindErrorf(ErrUnknownPool, "request address in pool %s: no such pool on this host", poolID)
	}
	if m.fenced {
		return netip.Prefix{}, nil, kindErrorf(ErrRemoved, "request address in pool %s: host %s was removed from the cluster", poolID, m.cfg.Host)
	}
	bits := p.req.Subnet.Bits()
	if req.Addr.IsValid() && !p.req.Subnet.Contains(req.Addr) {
		return netip.Prefix{}, nil, kindErrorf(ErrNotInPool, "request address %s in pool %s: outside the subnet", req.Addr, poolID)
	}
	switch req.Kind {
	case KindGateway:
		return m.gatewayLocked(ctx, p, req.Addr)
	case KindAux:
		return m.auxLocked(ctx, p, req.Addr)
	}
	if req.Addr.IsValid() {
		if req.Untagged && p.auxReplay[req.Addr] && slices.Contains(p.aux, req.Addr) {
			delete(p.auxReplay, req.Addr) // Docker's replay of an aux address: reserved already
			return netip.PrefixFrom(req.Addr, bits), nil, nil
		}
		p.auxReplay = nil // an endpoint's request: the replay of aux addresses is over
		if why := m.reservedWhyLocked(p, req.Addr); why != "" {
			return netip.Prefix{}, nil, kindErrorf(ErrInUse, "request address %s in pool %s: %s, never a container's", req.Addr, poolID, why)
		}
		if err := m.allocateAddrLocked(ctx, p, req.Addr); err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("request address %s in pool %s: %w", req.Addr, poolID, err)
		}
		m.changedLocked()
		return netip.PrefixFrom(req.Addr, bits), m.undoAllocLocked(p, req.Addr), nil
	}
	p.auxReplay = nil
	for {
		if err := ctx.Err(); err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("request address in pool %s: %w", poolID, err)
		}
		if a, ok := p.alloc.Allocate(); ok {
			m.changedLocked()
			return netip.PrefixFrom(a, bits), m.undoAllocLocked(p, a), nil
		}
		if m.materializeLocked(p, 0, false) {
			continue
		}
		if err := m.acquireLocked(ctx, p, netip.Addr{}); err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("request address in pool %s on host %s: %w", poolID, m.cfg.Host, err)
		}
		if m.pools[poolID] != p {
			return netip.Prefix{}, nil, kindErrorf(ErrUnknownPool, "request address in pool %s: released while waiting for a block", poolID)
		}
		if m.fenced {
			return netip.Prefix{}, nil, kindErrorf(ErrRemoved, "request address in pool %s: host %s was removed from the cluster", poolID, m.cfg.Host)
		}
	}
}

// undoAllocLocked returns the undo of allocating a in p: nobody but the
// caller that gives up has seen it.
func (m *IPAM) undoAllocLocked(p *pool, a netip.Addr) func() {
	return func() { _, _ = m.releaseLocked(p, a) }
}

// reservedWhyLocked says why a is never a container's address in p, or "".
func (m *IPAM) reservedWhyLocked(p *pool, a netip.Addr) string {
	sub := p.req.Subnet
	switch {
	case a == sub.Addr():
		return "the network address of " + sub.String()
	case a.Is4() && a == lastAddr(sub):
		return "the broadcast address of " + sub.String()
	case a == p.gateway:
		return "the network's gateway"
	case slices.Contains(p.aux, a):
		return "an aux address of the network (--aux-address)"
	case p.extra[a] != "":
		return "reserved as gateway or aux address by host " + p.extra[a]
	case p.alloc.Reserved(a):
		return "reserved"
	}
	return ""
}

// gatewayLocked answers the gateway request: the pool's gateway, or --gateway.
func (m *IPAM) gatewayLocked(ctx context.Context, p *pool, a netip.Addr) (netip.Prefix, func(), error) {
	id, bits := p.req.PoolID(), p.req.Subnet.Bits()
	if !a.IsValid() || a == p.gateway {
		if !p.gwPending {
			return netip.PrefixFrom(p.gateway, bits), nil, nil
		}
		if err := ctx.Err(); err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("request gateway in pool %s: %w", id, err)
		}
		p.gwPending = false
		m.publishLocked(id)
		return netip.PrefixFrom(p.gateway, bits), func() { p.gwPending = true; m.publishLocked(id) }, nil
	}
	sub := p.req.Subnet
	switch {
	case a == sub.Addr() || a.Is4() && a == lastAddr(sub):
		return netip.Prefix{}, nil, kindErrorf(ErrInvalid, "request gateway %s in pool %s: the network or broadcast address of %s", a, id, sub)
	case slices.Contains(p.aux, a):
		return netip.Prefix{}, nil, kindErrorf(ErrInUse, "request gateway %s in pool %s: an aux address of the network", a, id)
	}
	if err := ctx.Err(); err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("request gateway %s in pool %s: %w", a, id, err)
	}
	if err := p.alloc.Reserve(a); err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("request gateway %s in pool %s: %w", a, id, err)
	}
	old, oldPending := p.gateway, p.gwPending
	if p.extra[old] == "" {
		p.alloc.Unreserve(old)
	}
	p.gateway, p.gwPending = a, false
	m.publishLocked(id)
	undo := func() {
		if p.gateway != a {
			return
		}
		if p.extra[a] == "" {
			p.alloc.Unreserve(a)
		}
		if err := p.alloc.Reserve(old); err != nil {
			m.log.Warn("gateway request given up, and the old gateway was handed to a container meanwhile", "pool", id, "ip", old)
		}
		p.gateway, p.gwPending = old, oldPending
		m.publishLocked(id)
	}
	return netip.PrefixFrom(a, bits), undo, nil
}

// auxLocked reserves an --aux-address of a network being created.
func (m *IPAM) auxLocked(ctx context.Context, p *pool, a netip.Addr) (netip.Prefix, func(), error) {
	id, bits, sub := p.req.PoolID(), p.req.Subnet.Bits(), p.req.Subnet
	switch {
	case !a.IsValid():
		return netip.Prefix{}, nil, kindErrorf(ErrInvalid, "request aux address in pool %s: no address given", id)
	case a == sub.Addr():
		return netip.Prefix{}, nil, kindErrorf(ErrInvalid, "request aux address %s in pool %s: the network address of %s", a, id, sub)
	case a.Is4() && a == lastAddr(sub):
		return netip.Prefix{}, nil, kindErrorf(ErrInvalid, "request aux address %s in pool %s: the broadcast address of %s", a, id, sub)
	case a == p.gateway:
		return netip.Prefix{}, nil, kindErrorf(ErrInUse, "request aux address %s in pool %s: the network's gateway", a, id)
	case slices.Contains(p.aux, a):
		return netip.PrefixFrom(a, bits), nil, nil // idempotent
	}
	if err := ctx.Err(); err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("request aux address %s in pool %s: %w", a, id, err)
	}
	if err := p.alloc.Reserve(a); err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("request aux address %s in pool %s: %w", a, id, err)
	}
	p.aux = append(p.aux, a)
	m.publishLocked(id)
	undo := func() {
		if i := slices.Index(p.aux, a); i >= 0 {
			p.aux = slices.Delete(p.aux, i, i+1)
			if p.extra[a] == "" && a != p.gateway {
				p.alloc.Unreserve(a)
			}
			m.publishLocked(id)
		}
	}
	return netip.PrefixFrom(a, bits), undo, nil
}

func (m *IPAM) allocateAddrLocked(ctx context.Context, p *pool, a netip.Addr) error {
	i, ok := p.alloc.BlockOf(a)
	if !ok {
		return kindErrorf(ErrNotInPool, "outside the ip-range %s", p.req.allocRange())
	}
	if p.alloc.Allocated(a) {
		return kindErrorf(ErrInUse, "already allocated to a container on this host")
	}
	if !p.alloc.OwnsAddr(a) && !m.materializeLocked(p, i, true) {
		if err := m.acquireLocked(ctx, p, a); err != nil {
			return err
		}
		if m.pools[p.req.PoolID()] != p {
			return kindErrorf(ErrUnknownPool, "pool released while waiting for a block")
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return p.alloc.AllocateAddr(a)
}

// ReleaseAddress gives an address back. Releasing a free address, the
// gateway, or in a pool already released is a no-op; an address outside
// the pool, or that this host neither owns nor allocated, is an error (it
// was never handed out here).
func (m *IPAM) ReleaseAddress(ctx context.Context, poolID string, a netip.Addr) error {
	m.mu.Lock()
	p := m.pools[poolID]
	if p == nil {
		m.mu.Unlock()
		if _, _, err := ParsePoolID(poolID); err != nil {
			return fmt.Errorf("release address %s: %w", a, err)
		}
		return nil
	}
	if !p.req.Subnet.Contains(a) {
		m.mu.Unlock()
		return kindErrorf(ErrNotInPool, "release address %s in pool %s: outside the subnet", a, poolID)
	}
	if err := ctx.Err(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("release address %s in pool %s: %w", a, poolID, err)
	}
	changed, err := m.releaseLocked(p, a)
	gen := m.gen
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("release address %s in pool %s: %w", a, poolID, err)
	}
	if changed {
		m.settle(ctx, gen)
	}
	return nil
}

// releaseLocked frees a in p, or forgets it as an aux address.
func (m *IPAM) releaseLocked(p *pool, a netip.Addr) (changed bool, err error) {
	id := p.req.PoolID()
	if a == p.gateway {
		return false, nil
	}
	if i := slices.Index(p.aux, a); i >= 0 {
		p.aux = slices.Delete(p.aux, i, i+1)
		if p.extra[a] == "" {
			p.alloc.Unreserve(a)
		}
		m.publishLocked(id)
		m.changedLocked()
		return true, nil
	}
	if p.alloc.Reserved(a) && !p.alloc.Allocated(a) {
		return false, nil
	}
	released, err := p.alloc.Release(a)
	if err != nil || !released {
		return false, err
	}
	if p.pendingReserve[a] {
		delete(p.pendingReserve, a)
		m.kickNow() // reserve it now, on the next reconcile
	}
	m.dropIfUnusedLocked(id, p)
	m.changedLocked()
	return true, nil
}

func (m *IPAM) kickNow() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *IPAM) broadcastLocked() {
	close(m.notify)
	m.notify = make(chan struct{})
}

// Run reconciles with the replicated table until ctx ends: it accepts parts
// handed to this host, answers other hosts' wants, and carries out
// removals; beside it, the writer saves the state and writes this host's
// entries.
func (m *IPAM) Run(ctx context.Context) error {
	events, cancel := m.rep.Subscribe(1024)
	defer cancel()
	var wg sync.WaitGroup
	wctx, stop := context.WithCancel(ctx)
	wg.Go(func() { m.runWriter(wctx) })
	defer func() {
		stop()
		wg.Wait()
		// Save what is not saved yet (a call given up, a release), briefly:
		// the entries for other hosts are written again at the next start.
		sctx, cancel := context.WithTimeout(context.Background(), m.cfg.AnswerTimeout)
		defer cancel()
		m.mu.Lock()
		gen := m.gen
		m.mu.Unlock()
		_ = m.persist(sctx, gen)
	}()
	tick := time.NewTicker(m.cfg.AnswerTimeout / 4)
	defer tick.Stop()
	for full := true; ; {
		m.reconcile(full)
		full = false
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			for drained := false; !drained; {
				select {
				case <-events:
				default:
					drained = true
				}
			}
		case <-m.kick:
		case <-tick.C:
			full = true
		}
	}
}
