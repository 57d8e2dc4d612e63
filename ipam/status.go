package ipam

import (
	"net/netip"
	"slices"
)

// BlockStatus describes one part of a block this host owns.
type BlockStatus struct {
	Prefix netip.Prefix // a block, or an aligned part of one
	Used   int          // addresses allocated to containers
	Avail  int          // addresses still free
}

// PoolStatus is this host's view of one pool, for tenetctl and tests.
type PoolStatus struct {
	Pool      Pool
	Refs      int
	Blocks    []BlockStatus // owned by this host, in address order, as the fewest aligned prefixes
	Addresses []netip.Addr  // allocated to containers on this host
}

// Status reports this host's blocks and allocations in a pool.
func (m *IPAM) Status(poolID string) (PoolStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.pools[poolID]
	if p == nil {
		return PoolStatus{}, kindErrorf(ErrUnknownPool, "status of pool %s: no such pool on this host", poolID)
	}
	s := PoolStatus{Pool: Pool{ID: poolID, Subnet: p.req.Subnet, Gateway: p.gateway}, Refs: p.refs}
	for _, i := range p.alloc.order {
		for _, part := range p.alloc.OwnedParts(i) {
			used, avail := p.alloc.PartStats(part)
			s.Blocks = append(s.Blocks, BlockStatus{Prefix: part, Used: used, Avail: avail})
		}
		s.Addresses = append(s.Addresses, p.alloc.Addresses(i)...)
	}
	return s, nil
}

// PoolStats is a summary of one pool on this host, for metrics.
type PoolStats struct {
	ID       string
	Blocks   int    // blocks this host owns all or part of
	Owned    int    // addresses of the pool's range this host owns
	Used     int    // addresses allocated to containers here
	Free     int    // owned addresses neither allocated nor reserved
	Received uint64 // parts handed to this host since start
	Given    uint64 // parts this host handed over since start
}

// Stats returns a summary of every pool this host knows, sorted by ID.
// Cheap: it reads counters kept up to date, one step per block this host
// owns part of, and does no I/O.
func (m *IPAM) Stats() []PoolStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]PoolStats, 0, len(m.pools))
	for id, p := range m.pools {
		s := PoolStats{ID: id, Received: p.received, Given: p.given}
		for _, i := range p.alloc.order {
			if n := p.alloc.OwnedCount(i); n > 0 {
				s.Blocks++
				s.Owned += n
			}
			s.Used += p.alloc.Used(i)
			s.Free += p.alloc.Avail(i)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PoolStats) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}
