package ipam

// Removal of a host that is gone for good (`tenetctl host remove NAME`).
// Never guessed from a timeout: an admin asks for it, on any host, any
// number of times. The steps, all through owner-writes-only entries:
//
//  1. The requesting host writes removal/<dead> {requester: true, held}.
//  2. Every host that sees a removal record for <dead> fences it (ignores
//     its handovers and wants from then on) and acknowledges by writing its
//     own removal/<dead> {requester: false, held}, where held is a copy of
//     its block entries, written after the fence. A host's first removal
//     entry for <dead> fixes whether it is a requester; running the command
//     again changes nothing.
//  3. Each removal entry also lists the requesters its writer has seen; the
//     list only grows, and is frozen once anyone marks the removal done. A
//     host acts as heir only when it is the lowest name in its own list and
//     every member it knows (the dead host and other removed hosts excepted)
//     has written an entry listing exactly the same requesters. It then, for
//     every block whose owner (by ownerOf, with the held lists as extra
//     claims) is <dead>, writes an accept at the next epoch, and marks the
//     removal done naming itself, which also passes <dead>'s unused genesis
//     share to it. Anyone who sees a done record adopts its heir.
//
// doc.go argues why this yields one owner even when run twice or on two
// hosts at once.

import (
	"context"
	"fmt"
	"maps"
	"slices"
)

// RemoveHost starts the removal of hosts that are gone for good and hands
// their blocks to one surviving host once every other host has acknowledged.
// It refuses (ErrUnsafe) while a host to remove is alive, or while another
// host is unreachable and not being removed too: then this host could not
// know what that host holds. Running it again, here or on another host, is
// safe and changes nothing.
func (m *IPAM) RemoveHost(ctx context.Context, names ...string) error {
	members := m.rep.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fenced {
		return kindErrorf(ErrRemoved, "remove host %v: this host was itself removed", names)
	}
	if len(names) == 0 {
		return kindErrorf(ErrInvalid, "remove host: no host named")
	}
	for _, n := range names {
		if err := validName(n); err != nil {
			return kindErrorf(ErrInvalid, "remove host %q: %v", n, err)
		}
		if n == m.cfg.Host {
			return kindErrorf(ErrUnsafe, "remove host %s: it is this host; run it on another host", n)
		}
	}
	for _, mb := range members {
		switch {
		case slices.Contains(names, mb.Name) && mb.Alive:
			return kindErrorf(ErrUnsafe, "remove host %s: it is alive; stop it for good first", mb.Name)
		case !slices.Contains(names, mb.Name) && !mb.Alive && !m.removed[mb.Name] && mb.Name != m.cfg.Host:
			return kindErrorf(ErrUnsafe, "remove host %v: host %s is unreachable: heal the partition, or remove it in the same command", names, mb.Name)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove host %v: %w", names, err)
	}
	for _, n := range names {
		if _, ok := m.ownRemoval[n]; ok {
			continue // already requested or acknowledged: idempotent
		}
		m.writeRemovalLocked(n, true)
		m.log.Warn("removal of host requested", "removed", n)
	}
	m.kickNow()
	return nil
}

func (m *IPAM) writeRemovalLocked(dead string, requester bool) {
	m.removed[dead] = true
	re := removalEntry{Requester: requester, Held: m.heldLocked(dead)}
	if requester {
		re.Requesters = []string{m.cfg.Host}
	}
	m.ownRemoval[dead] = re
	m.putLocked(prefixRemoval+dead, encode(re))
}

// heldLocked copies this host's block entries in the blocks where dead wrote
// a claim or was named by one: all the heir may not know of. A handover from
// dead that this host accepted is among them (this host saw dead's entry),
// and so is anything this host handed on from such a part. Other blocks
// are left out, to keep the entry small.
func (m *IPAM) heldLocked(dead string) map[string]blockEntry {
	held := map[string]blockEntry{}
	for bk, keys := range m.ownIdx {
		involved := false
		for _, c := range m.claims[bk] {
			involved = involved || c.writer == dead || c.To == dead
		}
		for k := range keys {
			involved = involved || m.own[k].To == dead
		}
		if !involved {
			continue
		}
		for k := range keys {
			held[k] = m.own[k]
		}
	}
	if len(held) == 0 {
		return nil
	}
	return held
}

// removalsLocked fences removed hosts, acknowledges their removal and, on the
// heir, takes their blocks.
func (m *IPAM) removalsLocked(removals map[string]map[string]removalEntry, members []Member) {
	me := m.cfg.Host
	for _, d := range slices.Sorted(maps.Keys(removals)) {
		ws := removals[d]
		if !m.removed[d] {
			m.removed[d] = true
			m.log.Warn("host removed by an admin; its handovers and wants are ignored from now on", "removed", d)
		}
		var heirs []string
		for _, re := range ws {
			if re.Done && re.Heir != "" && !slices.Contains(heirs, re.Heir) {
				heirs = append(heirs, re.Heir)
			}
		}
		if slices.Sort(heirs); len(heirs) > 1 && !m.logged["heirs "+d+fmt.Sprint(heirs)] {
			// Impossible by the agreement rule; resolved the same way everywhere.
			m.logged["heirs "+d+fmt.Sprint(heirs)] = true
			m.log.Error("removal has more than one heir; the lowest name wins", "removed", d, "heirs", heirs)
		}
		if len(heirs) > 0 && m.heirs[d] != slices.Min(heirs) {
			m.heirs[d] = slices.Min(heirs)
			for _, p := range m.pools {
				p.genNext = 0 // the heir's genesis share grew
			}
		}
		if d == me {
			if !m.fenced {
				m.fenced = true
				m.log.Error("this host was removed from the cluster by an admin; it allocates nothing more. Start it under a new name")
				m.changedLocked()
			}
			continue
		}
		if _, ok := m.ownRemoval[d]; !ok {
			m.writeRemovalLocked(d, false)
		}
		if _, done := m.heirs[d]; done {
			continue
		}
		// Grow this host's list of requesters seen.
		own := m.ownRemoval[d]
		seen := slices.Clone(own.Requesters)
		for w, re := range ws {
			if re.Requester && !m.removed[w] && !slices.Contains(seen, w) {
				seen = append(seen, w)
			}
		}
		slices.Sort(seen)
		if !slices.Equal(seen, own.Requesters) {
			own.Requesters = seen
			m.ownRemoval[d] = own
			m.putLocked(prefixRemoval+d, encode(own))
		}
		ws[me] = own
		if len(seen) == 0 || seen[0] != me {
			continue
		}
		agreed := true
		for _, mb := range members {
			if mb.Name == d || m.removed[mb.Name] {
				continue
			}
			if re, ok := ws[mb.Name]; !ok || !slices.Equal(re.Requesters, seen) {
				agreed = false
			}
		}
		if agreed {
			m.takeoverLocked(d)
		}
	}
}

// takeoverLocked makes this host, the heir, the owner of every part whose
// owner is the removed host d.
func (m *IPAM) takeoverLocked(d string) {
	me := m.cfg.Host
	rngs := map[string]string{} // block key -> range
	for bk, cs := range m.claims {
		for _, c := range cs {
			rngs[bk] = c.Range
		}
	}
	for bk, keys := range m.ownIdx {
		for k := range keys {
			rngs[bk] = m.own[k].Range
		}
	}
	n := 0
	for _, bk := range slices.Sorted(maps.Keys(rngs)) {
		pid, b, _ := parseBlockKey(bk)
		p := m.shadowPoolLocked(pid, rngs[bk])
		if p == nil {
			continue
		}
		i, ok := p.alloc.geo.blockIndex(b)
		if !ok {
			continue
		}
		for _, s := range m.segmentsLocked(p, i) {
			if s.owner != d {
				continue
			}
			m.writeBlockLocked(p, s.prefix, blockEntry{Epoch: s.epoch + 1, To: me})
			p.alloc.AddPrefix(s.prefix)
			n++
		}
	}
	re := m.ownRemoval[d]
	re.Heir, re.Done = me, true
	m.ownRemoval[d] = re
	m.putLocked(prefixRemoval+d, encode(re))
	m.heirs[d] = me
	for _, p := range m.pools {
		p.genNext = 0
	}
	m.log.Info("blocks of removed host reclaimed", "removed", d, "parts", n)
}
