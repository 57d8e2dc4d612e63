package ipam

// IPAM glues the allocator (allocator.go) to block ownership (blocks.go) over
// a Replica. The hot path, RequestAddress with space in an owned block, takes
// one mutex and touches no network. Only a host short of space waits: it
// writes a want naming one owner and waits for that owner's handover or
// refusal, then asks the next owner.

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
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
	refs           int // RequestPool minus ReleasePool since start (Docker replays at its start)
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

// restore loads the persisted state and writes this host's entries again, so
// a restart with a lost replica still never re-accepts a block handed away.
func (m *IPAM) restore() error {
	// Entries already in the replica are ours too (it may outlive us).
	for _, e := range m.rep.List(prefixIPAM) {
		if e.Host != m.cfg.Host {
			continue
		}
		switch {
		case strings.HasPrefix(e.Key, prefixBlock):
			if be, ok := decode[blockEntry](e.Value); ok {
				m.own[e.Key] = be
			}
		case strings.HasPrefix(e.Key, prefixRemoval):
			if re, ok := decode[removalEntry](e.Value); ok {
				m.ownRemoval[strings.TrimPrefix(e.Key, prefixRemoval)] = re
			}
		case strings.HasPrefix(e.Key, prefixWant):
			if we, ok := decode[wantEntry](e.Value); ok {
				m.seq = max(m.seq, we.Seq)
			}
		}
	}
	// Without saved allocations, blocks we own may hold addresses of running
	// containers that Docker has yet to replay: never give those away.
	keepOwned := func() {
		for k, e := range m.own {
			if e.To == m.cfg.Host {
				m.keep[k] = true
			}
		}
	}
	if m.cfg.Store == nil {
		keepOwned()
		return m.rebuildPools(nil)
	}
	b, err := m.cfg.Store.Load()
	if err != nil {
		return fmt.Errorf("ipam: load state: %w", err)
	}
	if b == nil {
		keepOwned()
		return m.rebuildPools(nil)
	}
	s, err := decodeState(b)
	if err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	m.seq = max(m.seq, s.Seq)
	m.fenced = s.Fenced
	for _, h := range s.Removed {
		m.removed[h] = true
	}
	for k, e := range s.Own {
		if cur, ok := m.own[k]; !ok || e.Epoch > cur.Epoch {
			m.own[k] = e
		}
	}
	for k, e := range m.own {
		if err := m.rep.Put(k, encode(e)); err != nil {
			return fmt.Errorf("ipam: restore block entry %s: %w", k, err)
		}
	}
	return m.rebuildPools(s.Pools)
}

func (m *IPAM) rebuildPools(ps []persistedPool) error {
	for _, pp := range ps {
		p := m.newPoolLocked(PoolRequest{Tenant: pp.Tenant, Subnet: pp.Subnet, Range: pp.Range}, pp.Gateway, pp.Aux)
		m.publishLocked(p.req.PoolID())
		for _, a := range pp.Addrs {
			if err := p.alloc.AllocateAddr(a); err != nil {
				// An allocation in a block we no longer own: keep going, say so.
				m.log.Error("restore: allocation lost", "pool", p.req.PoolID(), "ip", a, "err", err)
			}
		}
	}
	return nil
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
			return Pool{}, fmt.Errorf("request pool %s with ip-range %v: the pool exists with ip-range %v: %w", id, req.Range, p.req.Range, ErrOverlap)
		}
		if p.refs++; p.refs == 1 {
			m.publishLocked(id)
		}
		return Pool{ID: id, Subnet: req.Subnet, Gateway: p.gateway}, nil
	}
	for oid, p := range m.pools {
		if p.req.Tenant == req.Tenant && overlaps(p.req.Subnet, req.Subnet) {
			return Pool{}, fmt.Errorf("request pool %s: subnet %s overlaps pool %s of tenant %s: %w", id, req.Subnet, oid, req.Tenant, ErrOverlap)
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
	if p.refs == 0 && p.usedLocked() == 0 {
		delete(m.pools, id)
		m.publishLocked(id)
		m.log.Info("pool released", "pool", id)
	}
	m.saveLocked()
	return nil
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
		return netip.Addr{}, fmt.Errorf("request address %s in pool %s: not an address: %w", s, poolID, ErrInvalid)
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
		return netip.Prefix{}, fmt.Errorf("request address in pool %s: %w", poolID, ErrUnknownPool)
	}
	if m.fenced {
		return netip.Prefix{}, fmt.Errorf("request address in pool %s on host %s: %w", poolID, m.cfg.Host, ErrRemoved)
	}
	bits := p.req.Subnet.Bits()
	if req.Addr.IsValid() && !p.req.Subnet.Contains(req.Addr) {
		return netip.Prefix{}, fmt.Errorf("request address %s in pool %s: outside the subnet: %w", req.Addr, poolID, ErrNotInPool)
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
			return netip.Prefix{}, fmt.Errorf("request aux address in pool %s: no address given: %w", poolID, ErrInvalid)
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
		if m.fenced {
			return netip.Prefix{}, fmt.Errorf("request address in pool %s on host %s: %w", poolID, m.cfg.Host, ErrRemoved)
		}
	}
}

func (m *IPAM) allocateAddrLocked(ctx context.Context, p *pool, a netip.Addr) error {
	i, ok := p.alloc.BlockOf(a)
	if !ok {
		return fmt.Errorf("outside the ip-range %s: %w", p.req.allocRange(), ErrNotInPool)
	}
	if p.alloc.Reserved(a) {
		return fmt.Errorf("reserved (network, broadcast, gateway or aux): %w", ErrInUse)
	}
	if !p.alloc.Owns(i) && !m.materializeLocked(p, i, true) {
		if err := m.acquireLocked(ctx, p, i, true); err != nil {
			return err
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
		return fmt.Errorf("release address %s in pool %s: outside the subnet: %w", a, poolID, ErrNotInPool)
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
		m.saveLocked()
		if p.refs == 0 && p.usedLocked() == 0 && len(p.aux) == 0 {
			delete(m.pools, poolID)
			m.publishLocked(poolID)
		}
	}
	return nil
}

// claimsLocked returns the claims on block key, this host's own entry first.
func (m *IPAM) claimsLocked(key string) []claim {
	cs := slices.Clone(m.claims[key])
	if e, ok := m.own[key]; ok {
		cs = append(cs, claim{writer: m.cfg.Host, blockEntry: e})
	}
	return cs
}

func (m *IPAM) ownerLocked(p *pool, i uint64) ownership {
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	g, ge := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return ownerOf(m.claimsLocked(key), func(h string) bool { return m.removed[h] }, g, ge)
}

// genesisFreeLocked reports whether block i is one of this host's genesis
// blocks that nobody has written about: never used, never handed over.
func (m *IPAM) genesisFreeLocked(p *pool, i uint64) bool {
	if g, _ := genesisOwner(m.cfg.Seeds, i, m.heirs); g != m.cfg.Host {
		return false
	}
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	if _, mine := m.own[key]; mine {
		return false
	}
	// Claims older than our genesis epoch are the removed seeds' own.
	return m.ownerLocked(p, i).owner == m.cfg.Host
}

func (m *IPAM) genesisEpoch(i uint64) uint64 {
	_, e := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return e
}

// nextGenesisLocked finds the lowest free genesis block of this host at or
// after p.genNext. The scan is bounded so a huge IPv6 pool cannot stall it.
func (m *IPAM) nextGenesisLocked(p *pool) (uint64, bool) {
	const maxScan = 1 << 20
	n := uint64(len(m.cfg.Seeds))
	i, step := p.genNext, uint64(1)
	if len(m.heirs) == 0 {
		k := slices.Index(m.cfg.Seeds, m.cfg.Host)
		if k < 0 {
			return 0, false
		}
		i += (uint64(k) + n - i%n) % n
		step = n
	}
	for scanned := 0; i < p.alloc.Blocks() && scanned < maxScan; i, scanned = i+step, scanned+1 {
		if m.genesisFreeLocked(p, i) {
			return i, true
		}
	}
	return 0, false
}

// materializeLocked starts using a free genesis block (block i if exact,
// else the lowest one), writing the accept entry that tells everyone.
func (m *IPAM) materializeLocked(p *pool, i uint64, exact bool) bool {
	if !exact {
		var ok bool
		if i, ok = m.nextGenesisLocked(p); !ok {
			p.genNext = p.alloc.Blocks()
			return false
		}
	} else if !m.genesisFreeLocked(p, i) {
		return false
	}
	if err := m.putBlockLocked(p, i, blockEntry{Epoch: m.genesisEpoch(i), To: m.cfg.Host}); err != nil {
		m.log.Warn("cannot record block", "pool", p.req.PoolID(), "block", p.alloc.Block(i), "err", err)
		return false
	}
	p.alloc.AddBlock(i)
	if !exact {
		p.genNext = i + 1
	}
	m.log.Debug("block taken from genesis share", "pool", p.req.PoolID(), "block", p.alloc.Block(i))
	return true
}

// putBlockLocked writes this host's entry for block i. The replica's Put
// only writes the local copy and queues the broadcast, so it is called under
// the lock: deciding and recording a change of owner must be one step.
func (m *IPAM) putBlockLocked(p *pool, i uint64, e blockEntry) error {
	if p.req.Range.IsValid() {
		e.Range = p.req.Range.String()
	}
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	if err := m.rep.Put(key, encode(e)); err != nil {
		return err
	}
	m.own[key] = e
	m.saveLocked()
	return nil
}

// acquireLocked obtains a block by handover: any block with space, or block
// i if exact. It releases m.mu while waiting and holds it again on return.
func (m *IPAM) acquireLocked(ctx context.Context, p *pool, i uint64, exact bool) error {
	r0 := p.received
	done := func() bool {
		if exact {
			return p.alloc.Owns(i)
		}
		// Another request of this host may already have used up the new
		// block; it still counts as an answer.
		return p.alloc.Free() > 0 || p.received != r0
	}
	m.mu.Unlock()
	select {
	case p.acquirer <- struct{}{}:
	case <-ctx.Done():
		m.mu.Lock()
		return fmt.Errorf("waiting for a block: %w: %w", ErrUnavailable, ctx.Err())
	}
	m.mu.Lock()
	defer func() { <-p.acquirer }()
	if done() {
		return nil
	}
	var donors []string
	if exact {
		o := m.ownerLocked(p, i)
		if o.owner == m.cfg.Host {
			return fmt.Errorf("block %s: owned here but not loaded: %w", p.alloc.Block(i), ErrNotOwned)
		}
		if m.removed[o.owner] {
			return fmt.Errorf("block %s is owned by removed host %s until its reclaim completes: %w", p.alloc.Block(i), o.owner, ErrUnavailable)
		}
		donors = []string{o.owner}
	} else {
		donors = m.donorsLocked(p)
	}
	alive := m.aliveSet()
	timedOut, refused := []string{}, []string{}
	for _, d := range donors {
		if !alive[d] {
			timedOut = append(timedOut, d)
			continue
		}
		m.seq++
		w := wantEntry{Seq: m.seq, Donor: d}
		if exact {
			w.Block = p.alloc.Block(i).String()
		}
		if p.req.Range.IsValid() {
			w.Range = p.req.Range.String()
		}
		if err := m.rep.Put(prefixWant+p.req.PoolID(), encode(w)); err != nil {
			return fmt.Errorf("ask host %s for a block: %w", d, err)
		}
		m.saveLocked()
		answer, err := m.awaitLocked(ctx, p, d, w.Seq, done)
		if err != nil {
			return err
		}
		switch answer {
		case answerGiven:
			return nil
		case answerRefused:
			refused = append(refused, d)
		case answerTimeout:
			timedOut = append(timedOut, d)
		}
	}
	what := "no free address on this host"
	if exact {
		what = fmt.Sprintf("block %s is owned by host %s", p.alloc.Block(i), donors[0])
	}
	switch {
	case len(timedOut) > 0:
		return fmt.Errorf("%s and hosts %v did not answer (refused: %v): %w", what, timedOut, refused, ErrUnavailable)
	case exact:
		return fmt.Errorf("%s, which has addresses allocated in it: %w", what, ErrNotOwned)
	}
	return fmt.Errorf("%s and no host could hand over a block (asked %v): %w", what, refused, ErrExhausted)
}

type answer int

const (
	answerGiven answer = iota
	answerRefused
	answerTimeout
)

// awaitLocked waits for donor's answer to want seq, with m.mu released.
func (m *IPAM) awaitLocked(ctx context.Context, p *pool, donor string, seq uint64, done func() bool) (answer, error) {
	timer := time.NewTimer(m.cfg.AnswerTimeout)
	defer timer.Stop()
	rkey := replyKey(p.req.PoolID(), m.cfg.Host)
	m.kickNow()
	for {
		if done() {
			return answerGiven, nil
		}
		if m.fenced {
			return answerRefused, ErrRemoved
		}
		for _, e := range m.rep.List(rkey) {
			if r, ok := decode[replyEntry](e.Value); ok && e.Key == rkey && e.Host == donor && r.Seq == seq && r.Block == "" {
				return answerRefused, nil
			}
		}
		ch := m.notify
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-timer.C:
			m.mu.Lock()
			if done() {
				return answerGiven, nil
			}
			return answerTimeout, nil
		case <-ctx.Done():
			m.mu.Lock()
			return answerTimeout, fmt.Errorf("waiting for host %s to hand over a block: %w: %w", donor, ErrUnavailable, ctx.Err())
		}
	}
}

// donorsLocked orders the hosts to ask for space: the seeds first (they hold
// the unused genesis space), starting at a place that depends on this host
// so that requesters spread out, then every other owner, most blocks first.
func (m *IPAM) donorsLocked(p *pool) []string {
	seen := map[string]bool{m.cfg.Host: true}
	var out []string
	add := func(h string) {
		for range len(m.heirs) + 1 {
			if next, ok := m.heirs[h]; ok {
				h = next
			}
		}
		if !seen[h] && !m.removed[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	f := fnv.New32a()
	f.Write([]byte(m.cfg.Host))
	start := int(f.Sum32() % uint32(len(m.cfg.Seeds)))
	for k := range m.cfg.Seeds {
		add(m.cfg.Seeds[(start+k)%len(m.cfg.Seeds)])
	}
	count := map[string]int{}
	pfx := prefixBlock + p.req.PoolID() + "|"
	for key, cs := range m.claims {
		if !strings.HasPrefix(key, pfx) {
			continue
		}
		o := ownerOf(cs, func(h string) bool { return m.removed[h] }, "", 0)
		if o.owner != "" {
			count[o.owner]++
		}
	}
	var rest []string
	for h := range count {
		rest = append(rest, h)
	}
	slices.SortFunc(rest, func(a, b string) int {
		if count[a] != count[b] {
			return count[b] - count[a]
		}
		return strings.Compare(a, b)
	})
	for _, h := range rest {
		add(h)
	}
	return out
}

func (m *IPAM) aliveSet() map[string]bool {
	alive := map[string]bool{}
	for _, mb := range m.rep.Members() {
		if mb.Alive {
			alive[mb.Name] = true
		}
	}
	return alive
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

// saveLocked persists the state; a failure is logged loudly (the allocation
// itself stands, and is also recorded in the cluster's block entries).
func (m *IPAM) saveLocked() {
	if m.cfg.Store == nil {
		return
	}
	s := &persistedState{Seq: m.seq, Own: m.own, Fenced: m.fenced}
	for h := range m.removed {
		s.Removed = append(s.Removed, h)
	}
	slices.Sort(s.Removed)
	ids := make([]string, 0, len(m.pools))
	for id := range m.pools {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := m.pools[id]
		pp := persistedPool{Tenant: p.req.Tenant, Subnet: p.req.Subnet, Range: p.req.Range, Gateway: p.gateway, Aux: p.aux}
		for _, i := range p.alloc.order {
			pp.Addrs = append(pp.Addrs, p.alloc.Addresses(i)...)
		}
		s.Pools = append(s.Pools, pp)
	}
	if err := m.cfg.Store.Save(encodeState(s)); err != nil {
		m.log.Error("cannot persist ipam state", "err", err)
	}
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

// BlockStatus describes one block this host owns.
type BlockStatus struct {
	Prefix netip.Prefix
	Used   int // addresses allocated to containers
	Avail  int // addresses still free
}

// PoolStatus is this host's view of one pool, for tenetctl and tests.
type PoolStatus struct {
	Pool      Pool
	Refs      int
	Blocks    []BlockStatus // owned by this host, in address order
	Addresses []netip.Addr  // allocated to containers on this host
}

// Status reports this host's blocks and allocations in a pool.
func (m *IPAM) Status(poolID string) (PoolStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[poolID]
	if p == nil {
		return PoolStatus{}, fmt.Errorf("status of pool %s: %w", poolID, ErrUnknownPool)
	}
	s := PoolStatus{Pool: Pool{ID: poolID, Subnet: p.req.Subnet, Gateway: p.gateway}, Refs: p.refs}
	for _, i := range p.alloc.order {
		s.Blocks = append(s.Blocks, BlockStatus{Prefix: p.alloc.Block(i), Used: p.alloc.Used(i), Avail: p.alloc.Avail(i)})
		s.Addresses = append(s.Addresses, p.alloc.Addresses(i)...)
	}
	return s, nil
}
