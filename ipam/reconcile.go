package ipam

// The reconciler: Run calls reconcile on every change of the replicated
// table (and on a timer, in case notices were dropped). It reads the whole
// "ipam/" table without the lock, then, under the lock, accepts parts handed
// to this host, answers wants addressed to it, checks what it owns for
// conflicts, and moves removals of dead hosts forward. What it writes is
// queued for the writer (outbox.go).

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// cached is a decoded entry, reused while its version is unchanged.
type cached struct {
	version uint64
	value   any // blockEntry, removalEntry, wantEntry, replyEntry or poolEntry; nil if malformed
}

// reconcile brings this host in line with the table. Only blocks whose
// entries changed since the last pass are examined for handovers and
// conflicts, unless full is set (the periodic pass, which covers dropped
// notices).
func (m *IPAM) reconcile(full bool) {
	entries := m.rep.List(prefixIPAM)
	members := m.rep.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	me := m.cfg.Host

	claims := map[string][]claim{}                   // by block key
	removals := map[string]map[string]removalEntry{} // removed host -> writer -> entry
	var wants []Entry
	pools := map[string]map[string]poolEntry{}
	dirty := map[string]bool{} // changed keys; block entries as their block's key
	seen := make(map[[2]string]bool, len(entries))
	addClaim := func(key, writer string, e blockEntry, changed bool) {
		id, part, ok := parseBlockKey(key)
		if !ok {
			return
		}
		bk, ok := m.blockKeyOf(id, part, e.Range)
		if !ok {
			return // not a part of any block of that pool: ignored
		}
		claims[bk] = append(claims[bk], claim{writer: writer, prefix: part, blockEntry: e})
		if changed {
			dirty[bk] = true
		}
	}
	for _, e := range entries {
		id := [2]string{e.Key, e.Host}
		seen[id] = true
		c, ok := m.cache[id]
		changed := !ok || c.version != e.Version
		if changed {
			c = cached{version: e.Version, value: decodeEntry(e)}
			if c.value == nil {
				m.log.Error("malformed entry ignored", "key", e.Key, "host", e.Host)
			}
			m.cache[id] = c
			dirty[e.Key] = true
		}
		switch v := c.value.(type) {
		case blockEntry:
			if e.Host != me { // m.own is authoritative for our entries
				addClaim(e.Key, e.Host, v, changed)
			}
		case removalEntry:
			if e.Host == me {
				continue // m.ownRemoval is authoritative
			}
			d := strings.TrimPrefix(e.Key, prefixRemoval)
			if removals[d] == nil {
				removals[d] = map[string]removalEntry{}
			}
			removals[d][e.Host] = v
		case wantEntry:
			wants = append(wants, e)
		case poolEntry:
			id, _ := isPoolKey(e.Key)
			if pools[id] == nil {
				pools[id] = map[string]poolEntry{}
			}
			pools[id][e.Host] = v
		case replyEntry:
			pid, to, _ := strings.Cut(strings.TrimPrefix(e.Key, prefixReply), "|")
			switch {
			case e.Host == me:
				k := pid + "|" + to
				m.served[k] = max(m.served[k], v.Seq)
			case to == me:
				k := pid + "|" + e.Host
				if r, ok := m.replies[k]; !ok || v.Seq >= r.Seq {
					m.replies[k] = v
				}
			}
		}
	}
	for id := range m.cache {
		if !seen[id] {
			delete(m.cache, id)
			dirty[id[0]] = true
			if strings.HasPrefix(id[0], prefixBlock) {
				full = true // a deleted claim: which block it was in is unknown now
			}
		}
	}
	for d, re := range m.ownRemoval {
		if removals[d] == nil {
			removals[d] = map[string]removalEntry{}
		}
		removals[d][me] = re
	}
	for _, ws := range removals {
		for w, re := range ws {
			if w == me {
				continue
			}
			for k, be := range re.Held {
				addClaim(k, w, be, false) // a changed removal makes the pass full
			}
		}
	}
	m.claims = claims
	if full || len(removals) > 0 && m.removalsChanged(dirty) {
		dirty = nil // examine every key
	}

	m.removalsLocked(removals, members)
	m.acceptLocked(dirty)
	m.checkConflictsLocked(dirty)
	m.syncReservedLocked(pools)
	for _, e := range wants {
		if dirty == nil || dirty[e.Key] {
			m.serveLocked(e)
		}
	}
	m.broadcastLocked()
}

func (m *IPAM) removalsChanged(dirty map[string]bool) bool {
	for k := range dirty {
		if strings.HasPrefix(k, prefixRemoval) {
			return true
		}
	}
	return false
}

func decodeEntry(e Entry) any {
	var v any
	var ok bool
	switch {
	case strings.HasPrefix(e.Key, prefixBlock):
		v, ok = decode[blockEntry](e.Value)
	case strings.HasPrefix(e.Key, prefixRemoval):
		v, ok = decode[removalEntry](e.Value)
	case strings.HasPrefix(e.Key, prefixWant):
		v, ok = decode[wantEntry](e.Value)
	case strings.HasPrefix(e.Key, prefixReply):
		v, ok = decode[replyEntry](e.Value)
	case strings.HasPrefix(e.Key, prefixPool):
		v, ok = decode[poolEntry](e.Value)
	default:
		return struct{}{} // someone else's key under ipam/: not ours to judge
	}
	if !ok {
		return nil
	}
	return v
}

// shadowPoolLocked returns the local record of pool id, creating one with no
// reference when this host holds or serves parts of a pool it never
// requested (a seed, an heir, a handover arriving after ReleasePool).
func (m *IPAM) shadowPoolLocked(id, rng string) *pool {
	if p := m.pools[id]; p != nil {
		return p
	}
	tenant, subnet, err := ParsePoolID(id)
	if err != nil {
		return nil
	}
	req := PoolRequest{Tenant: tenant, Subnet: subnet}
	if rng != "" {
		r, err := netip.ParsePrefix(rng)
		if err != nil || r.Masked() != r || r.Addr().Is6() != subnet.Addr().Is6() || !subnet.Contains(r.Addr()) || r.Bits() < subnet.Bits() {
			return nil
		}
		if r != subnet {
			req.Range = r
		}
	}
	return m.newPoolLocked(req, req.DefaultGateway(), nil, true)
}

// acceptLocked takes every part handed to this host at an epoch above its
// own entries on that part, looking at the dirty blocks only (all if nil).
func (m *IPAM) acceptLocked(dirty map[string]bool) {
	me := m.cfg.Host
	keys := maps.Keys(m.claims)
	if dirty != nil {
		keys = maps.Keys(dirty)
	}
	for _, bk := range slices.Sorted(keys) {
		for _, c := range m.claims[bk] {
			if c.To != me || c.writer == me || m.removed[c.writer] || m.fenced || c.Epoch == 0 {
				continue
			}
			pid, _, _ := parseBlockKey(bk)
			if m.ownMaxEpochLocked(bk, c.prefix) >= c.Epoch {
				continue // accepted already, or an old handover
			}
			p := m.shadowPoolLocked(pid, c.Range)
			if p == nil {
				m.log.Error("handover for an unusable pool ignored", "pool", pid, "part", c.prefix, "host", c.writer)
				continue
			}
			if _, _, _, ok := p.alloc.geo.partOf(c.prefix); !ok {
				m.log.Error("handover of a part that does not fit the pool ignored", "pool", pid, "part", c.prefix, "host", c.writer)
				continue
			}
			m.writeBlockLocked(p, c.prefix, blockEntry{Epoch: c.Epoch, To: me})
			p.alloc.AddPrefix(c.prefix)
			p.received++
			m.log.Info("block received", "pool", pid, "block", c.prefix, "from", c.writer, "epoch", c.Epoch)
		}
	}
}

// ownMaxEpochLocked returns the highest epoch of this host's entries in
// block bk on parts overlapping part.
func (m *IPAM) ownMaxEpochLocked(bk string, part netip.Prefix) uint64 {
	var e uint64
	for k := range m.ownIdx[bk] {
		if _, q, ok := parseBlockKey(k); ok && q.Overlaps(part) {
			e = max(e, m.own[k].Epoch)
		}
	}
	return e
}

// checkConflictsLocked looks for addresses this host allocates from while
// the claims say another host owns them. The protocol makes this
// impossible; if it happens anyway (a lost disk, an admin removing a live
// host), it is logged loudly and resolved by the same rule on every host:
// the owner by ownerOf keeps the part, this host stops adding to it and
// keeps what it allocated there until released.
func (m *IPAM) checkConflictsLocked(dirty map[string]bool) {
	for id, p := range m.pools {
		for _, i := range p.alloc.Owned() {
			if !p.alloc.Owns(i) || dirty != nil && !dirty[blockKey(id, p.alloc.Block(i))] {
				continue
			}
			for _, s := range m.segmentsLocked(p, i) {
				if s.owner == m.cfg.Host && s.conflict == nil {
					continue
				}
				lk := fmt.Sprintf("block %s %s %d", id, s.prefix, s.epoch)
				if m.logged[lk] {
					continue
				}
				if !m.ownsAnyLocked(p, s.prefix) {
					continue
				}
				m.logged[lk] = true
				if s.owner == m.cfg.Host {
					m.log.Error("conflicting claims on a block; resolved by lowest name, this host keeps it",
						"pool", id, "block", s.prefix, "epoch", s.epoch, "claims", s.conflict)
					continue
				}
				used, _ := p.alloc.PartStats(s.prefix)
				m.log.Error("block owned here is claimed by another host at a higher epoch; this host stops allocating from it",
					"pool", id, "block", s.prefix, "owner", s.owner, "epoch", s.epoch, "allocated_here", used)
				p.alloc.Disown(s.prefix)
			}
		}
	}
}

// ownsAnyLocked reports whether this host owns any address of part of p.
func (m *IPAM) ownsAnyLocked(p *pool, part netip.Prefix) bool {
	i, off, n, ok := p.alloc.geo.partOf(part)
	b := p.alloc.blocks[i]
	return ok && b != nil && countRange(b.owned, off, n) > 0
}

// serveLocked answers a want addressed to this host, once per seq.
func (m *IPAM) serveLocked(e Entry) {
	me := m.cfg.Host
	if e.Host == me || m.removed[e.Host] || m.fenced {
		return
	}
	w, ok := decode[wantEntry](e.Value)
	if !ok || w.Donor != me {
		return
	}
	pid := strings.TrimPrefix(e.Key, prefixWant)
	sk := pid + "|" + e.Host
	if w.Seq <= m.served[sk] {
		return
	}
	m.served[sk] = w.Seq
	p := m.shadowPoolLocked(pid, w.Range)
	if p == nil {
		m.log.Error("want for an unusable pool ignored", "pool", pid, "host", e.Host)
		return
	}
	r := replyEntry{Seq: w.Seq}
	part, epoch, inUse, ok := m.pickDonationLocked(p, w)
	if ok {
		if err := p.alloc.RemovePrefix(part); err != nil {
			m.log.Error("cannot hand over a part picked as empty (a bug)", "pool", pid, "block", part, "err", err)
			ok = false
		}
	}
	if ok {
		m.writeBlockLocked(p, part, blockEntry{Epoch: epoch, To: e.Host})
		p.given++
		r.Block = part.String()
		m.log.Info("block handed over", "pool", pid, "block", part, "to", e.Host, "epoch", epoch)
	} else {
		r.InUse, r.Ask = inUse, m.recipientsLocked(p)
	}
	m.putLocked(replyKey(pid, e.Host), encode(r))
}

// pickDonationLocked chooses what to give for a want, and its epoch. For a
// requested address: the whole block if it is an unused genesis block of
// this host, else the largest empty part holding the address (at most half
// this host's free space, or the address alone). Otherwise: an unused
// genesis block; else an empty block if this host keeps space besides; else
// the largest empty part holding at most half its free space, down to its
// last free address, so that any host can get an address while the pool has
// one. Blocks restored without their allocations are never given.
func (m *IPAM) pickDonationLocked(p *pool, w wantEntry) (part netip.Prefix, epoch uint64, inUse, ok bool) {
	id := p.req.PoolID()
	keep := func(i uint64) bool { return m.keep[blockKey(id, p.alloc.Block(i))] }
	free := 0
	for _, i := range p.alloc.order {
		if !keep(i) {
			free += p.alloc.Avail(i)
		}
	}
	limit := max(1, (free+1)/2)
	if w.Block != "" {
		b, err := netip.ParsePrefix(w.Block)
		if err != nil {
			return netip.Prefix{}, 0, false, false
		}
		a := b.Addr()
		i, in := p.alloc.BlockOf(a)
		switch {
		case !in:
			return netip.Prefix{}, 0, false, false
		case m.genesisFreeLocked(p, i):
			return p.alloc.Block(i), m.genesisEpoch(i) + 1, false, true
		case p.alloc.Allocated(a) || p.alloc.Reserved(a):
			return netip.Prefix{}, 0, true, false
		case !p.alloc.OwnsAddr(a) || keep(i):
			return netip.Prefix{}, 0, false, false
		}
		part, _, ok := p.alloc.emptyPart(i, limit, a)
		if !ok {
			return netip.Prefix{}, 0, false, false
		}
		return part, m.ownEpochLocked(p, part) + 1, false, true
	}
	if i, ok := m.nextGenesisLocked(p); ok {
		return p.alloc.Block(i), m.genesisEpoch(i) + 1, false, true
	}
	if free == 0 {
		return netip.Prefix{}, 0, false, false
	}
	for _, i := range slices.Backward(p.alloc.order) {
		whole := p.alloc.OwnedCount(i) == p.alloc.geo.size() && p.alloc.Used(i) == 0
		if whole && !keep(i) && p.alloc.Avail(i) > 0 && free-p.alloc.Avail(i) > 0 {
			b := p.alloc.Block(i)
			return b, m.ownEpochLocked(p, b) + 1, false, true
		}
	}
	best, bestN := netip.Prefix{}, 0
	for _, i := range p.alloc.order {
		if keep(i) {
			continue
		}
		if q, n, ok := p.alloc.emptyPart(i, limit, netip.Addr{}); ok && n >= bestN {
			best, bestN = q, n
		}
	}
	if bestN == 0 {
		return netip.Prefix{}, 0, false, false
	}
	return best, m.ownEpochLocked(p, best) + 1, false, true
}
