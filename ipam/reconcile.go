package ipam

// The reconciler: Run calls reconcile on every change of the replicated
// table (and on a timer, in case notices were dropped). It reads the whole
// "ipam/" table, then, under the lock, accepts blocks handed to this host,
// answers wants addressed to it, checks its blocks for conflicts, and moves
// removals of dead hosts forward.

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
	value   any // blockEntry, removalEntry, wantEntry or replyEntry; nil if malformed
}

// reconcile brings this host in line with the table. Only keys whose entries
// changed since the last pass are examined for handovers and conflicts,
// unless full is set (the periodic pass, which covers dropped notices).
func (m *IPAM) reconcile(full bool) {
	entries := m.rep.List(prefixIPAM)
	members := m.rep.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	me := m.cfg.Host

	claims := map[string][]claim{}
	removals := map[string]map[string]removalEntry{} // removed host -> writer -> entry
	var wants []Entry
	pools := map[string]map[string]poolEntry{}
	dirty := map[string]bool{}
	seen := make(map[[2]string]bool, len(entries))
	for _, e := range entries {
		id := [2]string{e.Key, e.Host}
		seen[id] = true
		c, ok := m.cache[id]
		if !ok || c.version != e.Version {
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
				claims[e.Key] = append(claims[e.Key], claim{writer: e.Host, blockEntry: v})
			}
		case removalEntry:
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
			if e.Host == me {
				pid, req, _ := strings.Cut(strings.TrimPrefix(e.Key, prefixReply), "|")
				k := pid + "|" + req
				m.served[k] = max(m.served[k], v.Seq)
			}
		}
	}
	for id := range m.cache {
		if !seen[id] {
			delete(m.cache, id)
			dirty[id[0]] = true
		}
	}
	for _, ws := range removals {
		for w, re := range ws {
			if w == me {
				continue
			}
			for k, be := range re.Held {
				claims[k] = append(claims[k], claim{writer: w, blockEntry: be})
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
// reference when this host holds or serves blocks of a pool it never
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
		if err != nil || r.Masked() != r || !subnet.Contains(r.Addr()) || r.Bits() < subnet.Bits() {
			return nil
		}
		req.Range = r
	}
	return m.newPoolLocked(req, req.DefaultGateway(), nil)
}

// acceptLocked takes every block handed to this host at an epoch above its
// own entry for that block, looking at the dirty keys only (all if nil).
func (m *IPAM) acceptLocked(dirty map[string]bool) {
	me := m.cfg.Host
	keys := maps.Keys(m.claims)
	if dirty != nil {
		keys = maps.Keys(dirty)
	}
	for _, key := range slices.Sorted(keys) {
		for _, c := range m.claims[key] {
			if c.To != me || c.writer == me || m.removed[c.writer] || m.fenced {
				continue
			}
			if cur, ok := m.own[key]; ok && cur.Epoch >= c.Epoch || c.Epoch == 0 {
				continue
			}
			pid, b, _ := parseBlockKey(key)
			p := m.shadowPoolLocked(pid, c.Range)
			if p == nil {
				m.log.Error("handover for an unusable pool ignored", "key", key, "host", c.writer)
				continue
			}
			i, ok := p.alloc.geo.blockIndex(b)
			if !ok {
				m.log.Error("handover of a block that does not fit the pool ignored", "key", key, "host", c.writer)
				continue
			}
			if err := m.putBlockLocked(p, i, blockEntry{Epoch: c.Epoch, To: me}); err != nil {
				m.log.Warn("cannot accept block yet", "pool", pid, "block", b, "err", err)
				continue
			}
			p.alloc.AddBlock(i)
			p.received++
			m.log.Info("block received", "pool", pid, "block", b, "from", c.writer, "epoch", c.Epoch)
		}
	}
}

// checkConflictsLocked looks for blocks this host allocates from while the
// claims say another host owns them. The protocol makes this impossible; if
// it happens anyway (a lost disk, an admin removing a live host), it is
// logged loudly and resolved by the same rule on every host: the owner by
// ownerOf keeps the block, this host stops adding to it.
func (m *IPAM) checkConflictsLocked(dirty map[string]bool) {
	for id, p := range m.pools {
		for _, i := range p.alloc.Owned() {
			if dirty != nil && !dirty[blockKey(id, p.alloc.Block(i))] {
				continue
			}
			o := m.ownerLocked(p, i)
			if o.owner == m.cfg.Host && o.conflict == nil {
				continue
			}
			lk := fmt.Sprintf("block %s %s %d", id, p.alloc.Block(i), o.epoch)
			if m.logged[lk] {
				continue
			}
			m.logged[lk] = true
			if o.owner == m.cfg.Host {
				m.log.Error("conflicting claims on a block; resolved by lowest name, this host keeps it",
					"pool", id, "block", p.alloc.Block(i), "epoch", o.epoch, "claims", o.conflict)
				continue
			}
			used := p.alloc.Used(i)
			m.log.Error("block owned here is claimed by another host at a higher epoch; this host stops allocating from it",
				"pool", id, "block", p.alloc.Block(i), "owner", o.owner, "epoch", o.epoch, "allocated_here", used)
			if used == 0 {
				_ = p.alloc.RemoveBlock(i)
			} else {
				p.alloc.Freeze(i)
			}
		}
	}
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
	i, epoch, ok := m.pickDonationLocked(p, w)
	given := ""
	if ok {
		p.alloc.RemoveBlock(i) // empty, so it cannot fail
		if err := m.putBlockLocked(p, i, blockEntry{Epoch: epoch, To: e.Host}); err != nil {
			m.log.Warn("cannot hand over block", "pool", pid, "block", p.alloc.Block(i), "err", err)
			if m.own[blockKey(pid, p.alloc.Block(i))].To == me {
				p.alloc.AddBlock(i)
			}
		} else {
			given = p.alloc.Block(i).String()
			m.log.Info("block handed over", "pool", pid, "block", given, "to", e.Host, "epoch", epoch)
		}
	}
	if err := m.rep.Put(replyKey(pid, e.Host), encode(replyEntry{Seq: w.Seq, Block: given})); err != nil {
		m.log.Warn("cannot answer want", "pool", pid, "host", e.Host, "err", err)
	}
}

// pickDonationLocked chooses the block to give for a want: the requested one
// if this host owns it and it is empty; otherwise an unused genesis block, or
// an empty block if this host keeps space of its own.
func (m *IPAM) pickDonationLocked(p *pool, w wantEntry) (uint64, uint64, bool) {
	key := func(i uint64) string { return blockKey(p.req.PoolID(), p.alloc.Block(i)) }
	if w.Block != "" {
		b, err := netip.ParsePrefix(w.Block)
		if err != nil {
			return 0, 0, false
		}
		i, ok := p.alloc.geo.blockIndex(b)
		switch {
		case !ok:
			return 0, 0, false
		case p.alloc.Owns(i) && p.alloc.Used(i) == 0 && !m.keep[key(i)]:
			return i, m.own[key(i)].Epoch + 1, true
		case m.genesisFreeLocked(p, i):
			return i, m.genesisEpoch(i) + 1, true
		}
		return 0, 0, false
	}
	if i, ok := m.nextGenesisLocked(p); ok {
		return i, m.genesisEpoch(i) + 1, true
	}
	var empty []uint64
	for _, i := range p.alloc.order {
		if p.alloc.Used(i) == 0 && p.alloc.Avail(i) > 0 && !m.keep[key(i)] {
			empty = append(empty, i)
		}
	}
	if len(empty) == 0 {
		return 0, 0, false
	}
	last := empty[len(empty)-1]
	if len(empty) >= 2 || p.alloc.Free()-p.alloc.Avail(last) > 0 {
		return last, m.own[key(last)].Epoch + 1, true
	}
	return 0, 0, false
}
