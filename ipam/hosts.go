package ipam

import (
	"slices"
	"sort"
)

// Hosts reports the hosts this IPAM knows of (seeds, and every host that
// wrote or is named in a block entry) and those removed by an admin
// (RemoveHost), each sorted. For tenetctl: a name known to neither gossip
// nor IPAM cannot be removed, and removed hosts are no longer listed.
func (m *IPAM) Hosts() (known, removed []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for _, s := range m.cfg.Seeds {
		seen[s] = true
	}
	for _, cs := range m.claims {
		for _, c := range cs {
			seen[c.writer] = true
			if c.To != "" {
				seen[c.To] = true
			}
		}
	}
	for h := range m.removed {
		seen[h] = true
		removed = append(removed, h)
	}
	for h := range seen {
		known = append(known, h)
	}
	sort.Strings(known)
	slices.Sort(removed)
	return known, removed
}
