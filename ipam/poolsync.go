package ipam

// Reserved addresses cluster-wide. Docker asks every host's IPAM for the
// gateway and aux addresses, and nothing forces the hosts to be given the
// same flags. So each host publishes its pool's gateway and aux addresses
// as its own entry pool/<pool>, and every host also reserves the addresses
// other hosts reserved: the union is never handed to a container anywhere.
// A reserved address already allocated to a container here is a conflict:
// logged loudly, the container keeps it, and it is not handed out again.
//
// The gateway is published only once Docker's gateway request confirmed it
// (RequestPool cannot know whether --gateway follows): publishing the
// default first made every peer with --gateway log a disagreement that
// was not there.

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
	if p == nil {
		m.deleteLocked(prefixPool + id)
		return
	}
	e := poolEntry{Range: p.rangeString(), Aux: p.aux, BlockBits: p.alloc.geo.bits, Seeds: m.cfg.Seeds}
	if !p.gwPending {
		e.Gateway = p.gateway
	}
	m.putLocked(prefixPool+id, encode(e))
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
			if e.Gateway.IsValid() && !p.gwPending && e.Gateway != p.gateway {
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
			if _, ok := want[a]; !ok {
				if a != p.gateway && !slices.Contains(p.aux, a) {
					p.alloc.Unreserve(a)
				}
				delete(p.extra, a)
			}
		}
		for a, h := range want {
			if p.extra[a] != "" {
				continue
			}
			if a == p.gateway || slices.Contains(p.aux, a) {
				p.extra[a] = h // reserved here already; stays reserved if ours goes
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
			p.extra[a] = h
		}
	}
}

func isPoolKey(k string) (string, bool) { return strings.CutPrefix(k, prefixPool) }
