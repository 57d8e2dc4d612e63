package ipam

import "net/netip"

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
		return PoolStatus{}, kindErrorf(ErrUnknownPool, "status of pool %s: no such pool on this host", poolID)
	}
	s := PoolStatus{Pool: Pool{ID: poolID, Subnet: p.req.Subnet, Gateway: p.gateway}, Refs: p.refs}
	for _, i := range p.alloc.order {
		s.Blocks = append(s.Blocks, BlockStatus{Prefix: p.alloc.Block(i), Used: p.alloc.Used(i), Avail: p.alloc.Avail(i)})
		s.Addresses = append(s.Addresses, p.alloc.Addresses(i)...)
	}
	return s, nil
}
