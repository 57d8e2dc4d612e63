package ipam

// IPAM glues the allocator (allocator.go) to block ownership (blocks.go) over
// a Replica. The hot path, RequestAddress with space in an owned block, takes
// one mutex and touches no network. Only a host short of space waits: it
// writes a want naming one owner and waits for that owner's handover or
// refusal, then asks the next owner.

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
	// KindContainer is an endpoint's address (RequestAddress with the MAC
	// option, which Docker sends when RequiresMACAddress is true).
	KindContainer AddrKind = iota
	// KindGateway is the network's gateway (RequestAddressType option).
	KindGateway
	// KindAux is an --aux-address (RequestAddress with no options).
	KindAux
)

// AddressRequest is a validated RequestAddress.
type AddressRequest struct {
	Addr netip.Addr // requested (--ip, --gateway, --aux-address); zero: any
	Kind AddrKind
}

// Pool is RequestPool's answer.
type Pool struct {
	ID      string       // "<tenant>/<subnet>", the same on every host
	Subnet  netip.Prefix // masked
	Gateway netip.Addr   // the cluster-wide gateway (first usable unless --gateway)
}

// IPAM allocates addresses unique across the cluster. Safe for concurrent
// use; Run must be running for a host to obtain blocks and to serve others.
type IPAM struct {
	cfg Config
	log *slog.Logger
	rep Replica

	kick chan struct{} // asks Run to reconcile now

	mu         sync.Mutex // guards the fields below
	pools      map[string]*pool
	own        map[string]blockEntry   // this host's block entries
	ownRemoval map[string]removalEntry // this host's removal entries
	claims     map[string][]claim      // every block claim seen, by key
	cache      map[[2]string]cached    // decoded entries by (key, host)
	logged     map[string]bool         // conflicts already logged, so each is logged once
	keep       map[string]bool         // blocks whose allocations are unknown (restored without a store): never given away
	removed    map[string]bool         // hosts removed by an admin
	heirs      map[string]string       // removed host -> heir, once done
	served     map[string]uint64       // "<pool>|<requester>" -> last want seq answered
	fenced     bool                    // this host was removed
	seq        uint64                  // last want seq
	notify     chan struct{}           // closed on every ownership change
}

type pool struct {
	req            PoolRequest
	gateway        netip.Addr
	aux            []netip.Addr
	refs           int  // RequestPool minus ReleasePool since start (Docker replays at its start)
	dropping       bool // ReleasePool found addresses still allocated: drop when the last goes
	alloc          *Allocator
	genNext        uint64              // genesis blocks below this are not ours to use
	received       uint64              // blocks accepted by handover, ever
	extra          map[netip.Addr]bool // reserved because another host published them
	pendingReserve map[netip.Addr]bool // to reserve once released (a conflict)
	acquirer       chan struct{}       // one block acquisition at a time
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
		kick:  make(chan struct{}, 1),
		pools: map[string]*pool{}, own: map[string]blockEntry{}, ownRemoval: map[string]removalEntry{},
		claims: map[string][]claim{}, cache: map[[2]string]cached{}, logged: map[string]bool{}, keep: map[string]bool{}, removed: map[string]bool{}, heirs: map[string]string{},
		served: map[string]uint64{}, notify: make(chan struct{}),
	}
	if err := m.restore(); err != nil {
		return nil, err
	}
	m.reconcile(true) // know removals, heirs and claims before the first request
	return m, nil
}

// newPoolLocked creates the local record of a pool and loads the blocks this
// host owns in it.
func (m *IPAM) newPoolLocked(req PoolRequest, gateway netip.Addr, aux []netip.Addr) *pool {
	bb := m.cfg.BlockBitsV4
	if req.Subnet.Addr().Is6() {
		bb = m.cfg.BlockBitsV6
	}
	res := reservedAddrs(req.Subnet, gateway, aux)
	p := &pool{req: req, gateway: gateway, aux: aux, acquirer: make(chan struct{}, 1), pendingReserve: map[netip.Addr]bool{},
		alloc: NewAllocator(req.allocRange(), bb, sortedAddrs(res))}
	id := req.PoolID()
	for k, e := range m.own {
		if pid, b, ok := parseBlockKey(k); ok && pid == id && e.To == m.cfg.Host {
			if i, ok := p.alloc.geo.blockIndex(b); ok {
				p.alloc.AddBlock(i)
			}
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
	defer m.mu.Unlock()
	if p := m.pools[id]; p != nil {
		if p.req != req {
			return Pool{}, kindErrorf(ErrOverlap, "request pool %s with ip-range %v: the pool exists with ip-range %v", id, req.Range, p.req.Range)
		}
		if p.refs++; p.refs == 1 {
			m.publishLocked(id)
		}
		p.dropping = false
		return Pool{ID: id, Subnet: req.Subnet, Gateway: p.gateway}, nil
	}
	for oid, p := range m.pools {
		if p.req.Tenant == req.Tenant && overlaps(p.req.Subnet, req.Subnet) {
			return Pool{}, kindErrorf(ErrOverlap, "request pool %s: subnet %s overlaps pool %s of tenant %s", id, req.Subnet, oid, req.Tenant)
		}
	}
	p := m.newPoolLocked(req, req.DefaultGateway(), nil)
	p.refs = 1
	m.publishLocked(id)
	m.saveLocked()
	m.log.Info("pool created", "tenant", req.Tenant, "pool", id)
	return Pool{ID: id, Subnet: req.Subnet, Gateway: p.gateway}, nil
}

// ReleasePool drops one reference. The local record goes when no reference
// and no container address remains; blocks stay owned by this host.
func (m *IPAM) ReleasePool(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[id]
	if p == nil {
		return nil // idempotent
	}
	if p.refs > 0 {
		p.refs--
	}
	if p.refs == 0 {
		p.dropping = true
		m.dropIfUnusedLocked(id, p)
	}
	m.saveLocked()
	return nil
}

// dropIfUnusedLocked forgets a released pool once no container address is
// left in it. Only ReleasePool starts this: after a restart refs is 0 until
// Docker replays, and the pool must not vanish under running containers.
func (m *IPAM) dropIfUnusedLocked(id string, p *pool) {
	if p.dropping && p.refs == 0 && p.usedLocked() == 0 {
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
// answered from blocks this host owns; only when they are full (or the
// requested address lies in another host's block) does it wait for a
// handover, bounded by ctx.
func (m *IPAM) RequestAddress(ctx context.Context, poolID string, req AddressRequest) (netip.Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[poolID]
	if p == nil {
		return netip.Prefix{}, kindErrorf(ErrUnknownPool, "request address in pool %s: no such pool on this host", poolID)
	}
	if m.fenced {
		return netip.Prefix{}, kindErrorf(ErrRemoved, "request address in pool %s: host %s was removed from the cluster", poolID, m.cfg.Host)
	}
	bits := p.req.Subnet.Bits()
	if req.Addr.IsValid() && !p.req.Subnet.Contains(req.Addr) {
		return netip.Prefix{}, kindErrorf(ErrNotInPool, "request address %s in pool %s: outside the subnet", req.Addr, poolID)
	}
	switch req.Kind {
	case KindGateway:
		if !req.Addr.IsValid() || req.Addr == p.gateway {
			return netip.PrefixFrom(p.gateway, bits), nil
		}
		if err := p.alloc.Reserve(req.Addr); err != nil {
			return netip.Prefix{}, fmt.Errorf("request gateway %s in pool %s: %w", req.Addr, poolID, err)
		}
		if !p.extra[p.gateway] {
			p.alloc.Unreserve(p.gateway)
		}
		p.gateway = req.Addr
		m.publishLocked(poolID)
		m.saveLocked()
		return netip.PrefixFrom(p.gateway, bits), nil
	case KindAux:
		if !req.Addr.IsValid() {
			return netip.Prefix{}, kindErrorf(ErrInvalid, "request aux address in pool %s: no address given", poolID)
		}
		if err := p.alloc.Reserve(req.Addr); err != nil {
			return netip.Prefix{}, fmt.Errorf("request aux address %s in pool %s: %w", req.Addr, poolID, err)
		}
		if !slices.Contains(p.aux, req.Addr) {
			p.aux = append(p.aux, req.Addr)
			m.publishLocked(poolID)
		}
		m.saveLocked()
		return netip.PrefixFrom(req.Addr, bits), nil
	}
	if req.Addr.IsValid() {
		if err := m.allocateAddrLocked(ctx, p, req.Addr); err != nil {
			return netip.Prefix{}, fmt.Errorf("request address %s in pool %s: %w", req.Addr, poolID, err)
		}
		m.saveLocked()
		return netip.PrefixFrom(req.Addr, bits), nil
	}
	for {
		if a, ok := p.alloc.Allocate(); ok {
			m.saveLocked()
			return netip.PrefixFrom(a, bits), nil
		}
		if m.materializeLocked(p, 0, false) {
			continue
		}
		if err := m.acquireLocked(ctx, p, 0, false); err != nil {
			return netip.Prefix{}, fmt.Errorf("request address in pool %s on host %s: %w", poolID, m.cfg.Host, err)
		}
		if m.pools[poolID] != p {
			return netip.Prefix{}, kindErrorf(ErrUnknownPool, "request address in pool %s: released while waiting for a block", poolID)
		}
		if m.fenced {
			return netip.Prefix{}, kindErrorf(ErrRemoved, "request address in pool %s: host %s was removed from the cluster", poolID, m.cfg.Host)
		}
	}
}

func (m *IPAM) allocateAddrLocked(ctx context.Context, p *pool, a netip.Addr) error {
	i, ok := p.alloc.BlockOf(a)
	if !ok {
		return kindErrorf(ErrNotInPool, "outside the ip-range %s", p.req.allocRange())
	}
	if p.alloc.Reserved(a) {
		return kindErrorf(ErrInUse, "reserved (network, broadcast, gateway or aux address)")
	}
	if !p.alloc.Owns(i) && !m.materializeLocked(p, i, true) {
		if err := m.acquireLocked(ctx, p, i, true); err != nil {
			return err
		}
		if m.pools[p.req.PoolID()] != p {
			return kindErrorf(ErrUnknownPool, "pool released while waiting for a block")
		}
	}
	return p.alloc.AllocateAddr(a)
}

// ReleaseAddress gives an address back. Releasing a free address, the
// gateway, or a pool already released is a no-op; an address outside the
// pool or in a block this host does not own is an error (it was never handed
// out here).
func (m *IPAM) ReleaseAddress(ctx context.Context, poolID string, a netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[poolID]
	if p == nil {
		if _, _, err := ParsePoolID(poolID); err != nil {
			return fmt.Errorf("release address %s: %w", a, err)
		}
		return nil
	}
	if !p.req.Subnet.Contains(a) {
		return kindErrorf(ErrNotInPool, "release address %s in pool %s: outside the subnet", a, poolID)
	}
	if a == p.gateway {
		return nil
	}
	if i := slices.Index(p.aux, a); i >= 0 {
		p.aux = slices.Delete(p.aux, i, i+1)
		if !p.extra[a] {
			p.alloc.Unreserve(a)
		}
		m.publishLocked(poolID)
		m.saveLocked()
		return nil
	}
	if p.alloc.Reserved(a) {
		return nil
	}
	released, err := p.alloc.Release(a)
	if err != nil {
		return fmt.Errorf("release address %s in pool %s: %w", a, poolID, err)
	}
	if released {
		if i, _ := p.alloc.BlockOf(a); p.alloc.Frozen(i) && p.alloc.Used(i) == 0 {
			_ = p.alloc.RemoveBlock(i) // lost to a conflict, now empty: let it go
		}
		if p.pendingReserve[a] {
			delete(p.pendingReserve, a)
			m.kickNow() // reserve it now, on the next reconcile
		}
		m.dropIfUnusedLocked(poolID, p)
		m.saveLocked()
	}
	return nil
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

// Run reconciles with the replicated table until ctx ends: it accepts blocks
// handed to this host, answers other hosts' wants, and carries out removals.
func (m *IPAM) Run(ctx context.Context) error {
	events, cancel := m.rep.Subscribe(1024)
	defer cancel()
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
