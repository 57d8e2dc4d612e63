package ipam

// Reserved addresses cluster-wide. Docker asks every host's IPAM for the
// gateway and aux addresses, and nothing forces the hosts to be given the
// same flags. So each host publishes its pool's gateway and aux addresses
// as its own entry pool/<pool>, and every host also reserves the addresses
// other hosts reserved: the union is never handed to a container anywhere.
// A reserved address already allocated to a container here is a conflict:
// logged loudly, the container keeps it, and it is not handed out again.

import (
	"net/netip"
	"slices"
	"strings"
)

const prefixPool = "ipam/pool/"

type poolEntry struct {
	Range     string       `json:"range,omitempty"`
	Gateway   netip.Addr   `json:"gateway"`
	Aux       []netip.Addr `json:"aux,omitempty"`
	BlockBits int          `json:"blockbits"` // must agree on every host
	Seeds     []string     `json:"seeds"`     // must agree on every host
}

// publishLocked writes this host's pool entry, or deletes it when the local
// record is gone.
func (m *IPAM) publishLocked(id string) {
	p := m.pools[id]
	var err error
	if p == nil {
		err = m.rep.Delete(prefixPool + id)
	} else {
		e := poolEntry{Gateway: p.gateway, Aux: p.aux, BlockBits: p.alloc.geo.bits, Seeds: m.cfg.Seeds}
		if p.req.Range.IsValid() {
			e.Range = p.req.Range.String()
		}
		err = m.rep.Put(prefixPool+id, encode(e))
	}
	if err != nil {
		m.log.Warn("cannot publish pool", "pool", id, "err", err)
	}
}

// syncReservedLocked reserves, in every local pool, the gateway and aux
// addresses other hosts published for it.
func (m *IPAM) syncReservedLocked(pools map[string]map[string]poolEntry) {
	for id, p := range m.pools {
		want := map[netip.Addr]string{}
		for h, e := range pools[id] {
			if h == m.cfg.Host || m.removed[h] {
				continue
			}
			if rng := p.req.Range; rng.IsValid() && e.Range != rng.String() || !rng.IsValid() && e.Range != "" {
				if k := "range " + id + h + e.Range; !m.logged[k] {
					m.logged[k] = true
					m.log.Error("hosts disagree on the pool's ip-range; create the network with the same flags everywhere",
						"pool", id, "other", h, "their_range", e.Range, "our_range", p.req.Range)
				}
			}
			if e.BlockBits != p.alloc.geo.bits || !slices.Equal(e.Seeds, m.cfg.Seeds) {
				// The uniqueness argument needs both to be equal everywhere.
				if k := "config " + id + h; !m.logged[k] {
					m.logged[k] = true
					m.log.Error("hosts disagree on Seeds or block size: addresses may be duplicated; fix the configuration",
						"pool", id, "other", h, "their_seeds", e.Seeds, "our_seeds", m.cfg.Seeds,
						"their_block_bits", e.BlockBits, "our_block_bits", p.alloc.geo.bits)
				}
			}
			if e.Gateway != p.gateway {
				if k := "gateway " + id + h + e.Gateway.String(); !m.logged[k] {
					m.logged[k] = true
					m.log.Error("hosts disagree on the pool's gateway; both are kept from containers",
						"pool", id, "other", h, "their_gateway", e.Gateway, "our_gateway", p.gateway)
				}
			}
			for _, a := range append([]netip.Addr{e.Gateway}, e.Aux...) {
				if a.IsValid() && p.req.Subnet.Contains(a) {
					want[a] = h
				}
			}
		}
		for a := range p.extra {
			if _, ok := want[a]; !ok && a != p.gateway && !slices.Contains(p.aux, a) {
				p.alloc.Unreserve(a)
				delete(p.extra, a)
			}
		}
		for a, h := range want {
			if p.extra[a] || a == p.gateway || slices.Contains(p.aux, a) {
				continue
			}
			if err := p.alloc.Reserve(a); err != nil {
				if k := "reserved " + id + a.String(); !m.logged[k] {
					m.logged[k] = true
					m.log.Error("address reserved as gateway or aux by another host is allocated to a container here; it stays, and is not handed out again once released",
						"pool", id, "ip", a, "other", h)
				}
				p.pendingReserve[a] = true
				continue
			}
			if p.extra == nil {
				p.extra = map[netip.Addr]bool{}
			}
			p.extra[a] = true
		}
	}
}

func isPoolKey(k string) (string, bool) { return strings.CutPrefix(k, prefixPool) }
