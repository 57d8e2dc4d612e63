package ipam

// Reading and recording ownership on this host: which parts of which block
// the cluster's claims give to whom (the rule of blocks.go, fed with every
// claim this host has seen plus its own entries), and this host's own view
// (its entries alone), which is what it allocates from.

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// geometryOf returns the block geometry of pool id with ip-range rng ("" for
// the whole subnet), as every host with the same Config computes it.
func (m *IPAM) geometryOf(id, rng string) (geometry, bool) {
	k := [2]string{id, rng}
	if g, ok := m.geos[k]; ok {
		return g, true
	}
	_, subnet, err := ParsePoolID(id)
	if err != nil {
		return geometry{}, false
	}
	r := subnet
	if rng != "" {
		x, err := netip.ParsePrefix(rng)
		if err != nil || x.Masked() != x || x.Addr().Is6() != subnet.Addr().Is6() || !subnet.Contains(x.Addr()) || x.Bits() < subnet.Bits() {
			return geometry{}, false
		}
		r = x
	}
	bb := m.cfg.BlockBitsV4
	if subnet.Addr().Is6() {
		bb = m.cfg.BlockBitsV6
	}
	g := newGeometry(r, bb)
	if len(m.geos) > 4096 {
		clear(m.geos) // a cache, bounded against hostile keys
	}
	m.geos[k] = g
	return g, true
}

// blockKeyOf returns the key of the block that part of pool id falls in, by
// the geometry of ip-range rng, or false if part is no part of a block.
func (m *IPAM) blockKeyOf(id string, part netip.Prefix, rng string) (string, bool) {
	g, ok := m.geometryOf(id, rng)
	if !ok {
		return "", false
	}
	i, _, _, ok := g.partOf(part)
	if !ok {
		return "", false
	}
	return blockKey(id, g.block(i)), true
}

// setOwnLocked records this host's entry under key (a block part of some
// pool) and queues it for the replica.
func (m *IPAM) setOwnLocked(key string, e blockEntry) {
	m.own[key] = e
	m.indexOwnLocked(key, e)
	m.putLocked(key, encode(e))
}

func (m *IPAM) indexOwnLocked(key string, e blockEntry) {
	id, part, ok := parseBlockKey(key)
	if !ok {
		return
	}
	bk, ok := m.blockKeyOf(id, part, e.Range)
	if !ok {
		return
	}
	if m.ownIdx[bk] == nil {
		m.ownIdx[bk] = map[string]bool{}
	}
	m.ownIdx[bk][key] = true
}

// writeBlockLocked records this host's entry for part of p.
func (m *IPAM) writeBlockLocked(p *pool, part netip.Prefix, e blockEntry) {
	e.Range = p.rangeString()
	m.setOwnLocked(blockKey(p.req.PoolID(), part), e)
}

// ownClaimsLocked returns this host's entries inside block key bk as claims.
func (m *IPAM) ownClaimsLocked(bk string) []claim {
	var out []claim
	for k := range m.ownIdx[bk] {
		if _, part, ok := parseBlockKey(k); ok {
			out = append(out, claim{writer: m.cfg.Host, prefix: part, blockEntry: m.own[k]})
		}
	}
	return out
}

func (m *IPAM) isRemoved(h string) bool { return m.removed[h] }

// segmentsLocked returns the ownership of every part of block i of p, by
// every claim this host knows.
func (m *IPAM) segmentsLocked(p *pool, i uint64) []segment {
	b := p.alloc.Block(i)
	bk := blockKey(p.req.PoolID(), b)
	g, ge := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return segmentsOf(b, append(slices.Clone(m.claims[bk]), m.ownClaimsLocked(bk)...), m.isRemoved, g, ge)
}

// ownerOfAddrLocked returns the ownership of address a of p.
func (m *IPAM) ownerOfAddrLocked(p *pool, a netip.Addr) ownership {
	i, _ := p.alloc.BlockOf(a)
	for _, s := range m.segmentsLocked(p, i) {
		if s.prefix.Contains(a) {
			return s.ownership
		}
	}
	return ownership{}
}

// ownPartsLocked returns the parts of block bk that this host's own entries
// say it owns: what it may allocate from.
func (m *IPAM) ownPartsLocked(bk string) []netip.Prefix {
	_, b, ok := parseBlockKey(bk)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, s := range segmentsOf(b, m.ownClaimsLocked(bk), func(string) bool { return false }, "", 0) {
		if s.owner == m.cfg.Host {
			out = append(out, s.prefix)
		}
	}
	return out
}

// ownEpochLocked returns the highest epoch of this host's entries on any
// part overlapping part of p: a handover of part is written one above it.
func (m *IPAM) ownEpochLocked(p *pool, part netip.Prefix) uint64 {
	bk, ok := m.blockKeyOf(p.req.PoolID(), part, p.rangeString())
	if !ok {
		return 0
	}
	var e uint64
	for k := range m.ownIdx[bk] {
		if _, q, ok := parseBlockKey(k); ok && q.Overlaps(part) {
			e = max(e, m.own[k].Epoch)
		}
	}
	return e
}

// genesisFreeLocked reports whether block i is one of this host's genesis
// blocks that nobody has written about: never used, never handed over.
func (m *IPAM) genesisFreeLocked(p *pool, i uint64) bool {
	if g, _ := genesisOwner(m.cfg.Seeds, i, m.heirs); g != m.cfg.Host {
		return false
	}
	bk := blockKey(p.req.PoolID(), p.alloc.Block(i))
	if len(m.ownIdx[bk]) > 0 {
		return false
	}
	if len(m.claims[bk]) == 0 {
		return true
	}
	// Claims older than our genesis epoch are the removed seeds' own.
	for _, s := range m.segmentsLocked(p, i) {
		if s.owner != m.cfg.Host || s.conflict != nil {
			return false
		}
	}
	return true
}

func (m *IPAM) genesisEpoch(i uint64) uint64 {
	_, e := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return e
}

// poolBlockKeysLocked returns the keys of the blocks of pool id that this
// host has a claim on or an entry in, sorted.
func (m *IPAM) poolBlockKeysLocked(id string) []string {
	pfx := prefixBlock + id + "|"
	keys := map[string]bool{}
	for k := range m.claims {
		if strings.HasPrefix(k, pfx) {
			keys[k] = true
		}
	}
	for k := range m.ownIdx {
		if strings.HasPrefix(k, pfx) {
			keys[k] = true
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

// recipientsLocked returns the hosts this host handed parts of p to, sorted,
// at most 16: where an asker it refuses may find space.
func (m *IPAM) recipientsLocked(p *pool) []string {
	set := map[string]bool{}
	for _, bk := range m.poolBlockKeysLocked(p.req.PoolID()) {
		for k := range m.ownIdx[bk] {
			if to := m.own[k].To; to != m.cfg.Host && !m.removed[to] {
				set[to] = true
			}
		}
	}
	out := slices.Sorted(maps.Keys(set))
	return out[:min(len(out), 16)]
}
