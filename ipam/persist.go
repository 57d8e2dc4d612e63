package ipam

// Persistence glue: restore at New; snapshots for the writer (outbox.go)
// after changes (state.go has the encoding).

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// restore loads the persisted state and queues this host's entries to be
// written again, so a restart with a lost replica still never re-accepts a
// part handed away.
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
	var s *persistedState
	if m.cfg.Store != nil {
		b, err := m.cfg.Store.Load()
		if err != nil {
			return fmt.Errorf("ipam: load state: %w", err)
		}
		if b != nil {
			if s, err = decodeState(b); err != nil {
				return fmt.Errorf("ipam: %w", err)
			}
		}
	}
	if s != nil {
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
	}
	for k, e := range m.own {
		m.indexOwnLocked(k, e)
		m.putLocked(k, encode(e))
	}
	if s == nil {
		// Without saved allocations, parts we own may hold addresses of
		// running containers that Docker has yet to replay: never give
		// those blocks away.
		for bk := range m.ownIdx {
			if len(m.ownPartsLocked(bk)) > 0 {
				m.keep[bk] = true
			}
		}
		return nil
	}
	for _, pp := range s.Pools {
		p := m.newPoolLocked(PoolRequest{Tenant: pp.Tenant, Subnet: pp.Subnet, Range: pp.Range}, pp.Gateway, pp.Aux, pp.GatewayPending)
		m.publishLocked(p.req.PoolID())
		for _, r := range pp.Addrs {
			// Allocations in a part we no longer own: keep going, say so
			// (once a run).
			lost, first, ferr := 0, netip.Addr{}, error(nil)
			r.each(func(a netip.Addr) {
				if err := p.alloc.AllocateAddr(a); err != nil {
					if lost == 0 {
						first, ferr = a, err
					}
					lost++
				}
			})
			if lost > 0 {
				m.log.Error("restore: allocations lost", "pool", p.req.PoolID(), "ip", first, "count", lost, "err", ferr)
			}
		}
	}
	return nil
}

// encodeLocked snapshots the state to persist.
func (m *IPAM) encodeLocked() []byte {
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
		pp := persistedPool{Tenant: p.req.Tenant, Subnet: p.req.Subnet, Range: p.req.Range, Gateway: p.gateway, GatewayPending: p.gwPending, Aux: p.aux}
		for _, i := range p.alloc.order {
			pp.Addrs = p.alloc.appendRuns(pp.Addrs, i)
		}
		s.Pools = append(s.Pools, pp)
	}
	return encodeState(s)
}
