package overlay

import (
	"net"
	"net/netip"
	"strings"
)

// view is the part of the kernel one reconcile reads and may change: all of
// it (Reconcile), or the objects of a Scope (ReconcileScope). Desire emits
// only the desired objects in the view, observation reads only the kernel
// objects in it, so Plan, comparing the two, touches nothing outside it.
//
// Objects the State no longer has (a removed endpoint or network) are
// located in the kernel first: located maps their VNI or endpoint ID to
// the tenant whose namespace holds them.
type view struct {
	all     bool
	whole   map[string]bool      // tenants in view with everything in them
	nets    map[uint32]string    // network VNI -> tenant
	eps     map[string]string    // endpoint ID -> tenant ("": nowhere, only its host end)
	remotes map[remoteBin]string // remote -> tenant
	infra   bool
	crypt   bool // the crypt namespace, its device and peers

	ns        map[string]bool // tenants whose namespace is in view
	uplink    map[string]bool // tenants whose egress (uplink, rule set) is in view
	hostRules bool            // the host's rule set (not its elements)

	// By tenant: the links, port guards, rule elements and VXLAN devices
	// (with all their entries) in view, for tenants not whole.
	links  map[string]map[string]bool
	guards map[string]map[string]bool
	elems  map[string]map[Elem]bool
	vxAll  map[string]map[string]bool
	// Remote entries in view, by tenant and device: unicast FDB entries by
	// MAC, neighbour entries by IP (the desired addresses of the remotes in
	// view) and by MAC (every address of a remote being removed, or of one
	// found programmed already: it may have had other addresses). Reading
	// those by MAC takes a dump of the device's neighbours; a remote that
	// is only being added is read by its keys alone.
	fdbMACs   map[string]map[string]map[string]bool
	neighIPs  map[string]map[string]map[netip.Addr]bool
	neighMACs map[string]map[string]map[string]bool
	// Host links in view: container ends (tc), uplink host ends (tnu) and
	// stray VXLAN devices.
	hostLinks map[string]bool
	// migrate lets the observation move what an older tenetd left in an
	// older layout (port guards in nf_tables) into today's: a full
	// reconcile's only, never a read-only Observe or Diagnose.
	migrate bool
}

var viewAll = &view{all: true}

// viewReconcile is viewAll for a full reconcile.
var viewReconcile = &view{all: true, migrate: true}

// newView makes the view of sc over s. nets are s's networks by VNI;
// located gives the tenant of every VNI and endpoint sc names that s does
// not have ("" or absent: not in the kernel either). Pure.
func newView(s State, nets map[uint32]*Network, sc Scope, locatedNets map[uint32]string, locatedEps map[string]string) *view {
	v := &view{whole: map[string]bool{}, nets: map[uint32]string{}, eps: map[string]string{}, remotes: map[remoteBin]string{},
		infra: sc.Infra, crypt: sc.Crypt || len(sc.Tenants) > 0 || len(sc.Networks) > 0, ns: map[string]bool{}, uplink: map[string]bool{},
		links: map[string]map[string]bool{}, guards: map[string]map[string]bool{}, elems: map[string]map[Elem]bool{},
		vxAll: map[string]map[string]bool{}, fdbMACs: map[string]map[string]map[string]bool{},
		neighIPs: map[string]map[string]map[netip.Addr]bool{}, neighMACs: map[string]map[string]map[string]bool{},
		hostLinks: map[string]bool{}}
	tenantOf := func(vni uint32) string {
		if n := nets[vni]; n != nil {
			return n.Tenant
		}
		return locatedNets[vni]
	}
	for _, t := range sc.Tenants {
		v.whole[t] = true
		v.ns[t] = true
		v.uplink[t] = true
		v.hostLinks[hostUplinkName(t)] = true
	}
	// Container ends of a whole tenant's desired endpoints (those of its
	// observed ports are added as they are read).
	if len(v.whole) > 0 {
		for _, e := range s.Endpoints {
			if n := nets[e.VNI]; n != nil && v.whole[n.Tenant] {
				v.hostLinks[ContainerVeth(e.ID)] = true
			}
		}
	}
	for _, vni := range sc.Networks {
		t := tenantOf(vni)
		v.hostLinks[vxlanName(vni)] = true
		if t == "" {
			continue
		}
		v.nets[vni] = t
		v.ns[t] = true
		v.uplink[t] = true
		v.hostLinks[hostUplinkName(t)] = true
		br, vx := bridgeName(vni), vxlanName(vni)
		add(v.links, t, br)
		add(v.links, t, vx)
		add(v.vxAll, t, vx)
		add(v.elems, t, Elem{Set: setPairs, Key: br + " . " + br})
		add(v.elems, t, Elem{Set: setPairs, Key: br + " . " + uplinkName})
	}
	if len(sc.Endpoints) > 0 {
		desired := map[string]*Endpoint{}
		for _, id := range sc.Endpoints {
			desired[id] = nil
		}
		for i := range s.Endpoints {
			if _, ok := desired[s.Endpoints[i].ID]; ok {
				desired[s.Endpoints[i].ID] = &s.Endpoints[i]
			}
		}
		for _, id := range sc.Endpoints {
			v.hostLinks[ContainerVeth(id)] = true
			t := locatedEps[id]
			if e := desired[id]; e != nil {
				t = tenantOf(e.VNI)
			}
			v.eps[id] = t
			if t == "" {
				continue
			}
			v.ns[t] = true
			add(v.links, t, BridgeVeth(id))
			add(v.guards, t, BridgeVeth(id))
			// Its published ports are elements of its tenant's port map
			// (read whole with the tenant's egress) and of the host's.
			v.uplink[t] = true
			v.hostLinks[hostUplinkName(t)] = true
		}
	}
	if len(sc.Remotes) > 0 {
		keys := remoteKeySet(sc.Remotes)
		present := map[remoteBin]bool{}
		for i := range s.Remotes {
			r := &s.Remotes[i]
			k := binKey(r.VNI, r.MAC)
			if !keys[k] {
				continue
			}
			present[k] = true
			t := tenantOf(r.VNI)
			for _, ip := range r.IPs {
				add3(v.neighIPs, t, vxlanName(r.VNI), ip)
			}
		}
		for _, rk := range sc.Remotes {
			t := tenantOf(rk.VNI)
			if t == "" {
				continue
			}
			m, _ := net.ParseMAC(rk.MAC)
			b := binKey(rk.VNI, m)
			v.remotes[b] = t
			if !present[b] {
				add3(v.neighMACs, t, vxlanName(rk.VNI), rk.MAC)
			}
			v.ns[t] = true
			add3(v.fdbMACs, t, vxlanName(rk.VNI), rk.MAC)
		}
	}
	v.hostRules = v.infra
	for t := range v.uplink {
		if t != "" {
			v.hostRules = true
		}
	}
	return v
}

func add[K comparable](m map[string]map[K]bool, t string, k K) {
	if m[t] == nil {
		m[t] = map[K]bool{}
	}
	m[t][k] = true
}

func add3[K comparable](m map[string]map[string]map[K]bool, t, dev string, k K) {
	if m[t] == nil {
		m[t] = map[string]map[K]bool{}
	}
	if m[t][dev] == nil {
		m[t][dev] = map[K]bool{}
	}
	m[t][dev][k] = true
}

// Predicates: is this object in the view?

func (v *view) hasNS(t string) bool { return v.all || v.ns[t] }

func (v *view) hasUplink(t string) bool { return v.all || v.uplink[t] }

func (v *view) hasHostRules() bool { return v.all || v.hostRules }

func (v *view) hasHostElems() bool { return v.all || v.infra }

// hasHostElem reports whether an element of the host's rules is in view:
// the infrastructure's with Infra, the published ports' (few, read whole)
// with the host's rules.
func (v *view) hasHostElem(e Elem) bool {
	if e.Set == setPubAny || e.Set == setPubIP {
		return v.hasHostRules()
	}
	return v.hasHostElems()
}

// hasReserved reports whether the host's port reservations are in view.
func (v *view) hasReserved() bool { return v.hasHostRules() }
func (v *view) hasCrypt() bool    { return v.all || v.crypt }

func (v *view) hasLink(t, name string) bool { return v.all || v.whole[t] || v.links[t][name] }

func (v *view) hasGuard(t, port string) bool { return v.all || v.whole[t] || v.guards[t][port] }

// hasElem: a tenant's port map is in view whole with its egress.
func (v *view) hasElem(t string, e Elem) bool {
	return v.all || v.whole[t] || v.elems[t][e] || e.Set == setPub && v.uplink[t]
}

func (v *view) hasLegacy(t string) bool { return v.all || v.whole[t] }

// hasAllEntries reports whether every entry on dev is in view.
func (v *view) hasAllEntries(t, dev string) bool { return v.all || v.whole[t] || v.vxAll[t][dev] }

func (v *view) hasFDB(t string, e FDBEntry) bool {
	if v.hasAllEntries(t, e.Dev) {
		return true
	}
	return e.MAC != floodMAC && v.fdbMACs[t][e.Dev][e.MAC]
}

// programmed notes that the kernel holds a forwarding entry for a remote
// in view: all its neighbour entries are in view then.
func (v *view) programmed(t string, e FDBEntry) {
	if !v.all && !v.hasAllEntries(t, e.Dev) && e.MAC != floodMAC && v.fdbMACs[t][e.Dev][e.MAC] {
		add3(v.neighMACs, t, e.Dev, e.MAC)
	}
}

func (v *view) hasNeigh(t string, e NeighEntry) bool {
	if v.hasAllEntries(t, e.Dev) {
		return true
	}
	return v.neighIPs[t][e.Dev][e.IP] || v.neighMACs[t][e.Dev][e.MAC]
}

// hasRemotesOf reports whether any remote entry of vni's device may be in
// view, so that desire must look at the remotes at all.
func (v *view) hasRemotes() bool {
	return v.all || len(v.whole) > 0 || len(v.vxAll) > 0 || len(v.fdbMACs) > 0
}

// hasHostLink reports whether a host link is in view; tenantTags are the
// endpoint tags of tv ports observed in whole tenants (their container
// ends are in view too).
func (v *view) hasHostLink(name string, tenantTags map[string]bool) bool {
	if v.all || v.hostLinks[name] {
		return true
	}
	if tag, ok := strings.CutPrefix(name, "tc"); ok {
		return tenantTags[tag]
	}
	return false
}

// restrict returns the part of a whole snapshot in v: what a scoped
// observation reads, or a scoped desire emits; like observation, it notes in
// v the remotes it finds programmed. Tests compare it with both.
func restrict(full Snapshot, v *view) Snapshot {
	if v.all {
		return full
	}
	out := newSnapshot()
	tags := map[string]bool{}
	for t, o := range full.Tenants {
		if !v.hasNS(t) {
			continue
		}
		c := newTenantObjects()
		for name, l := range o.Links {
			if v.hasLink(t, name) {
				c.Links[name] = l
				if tag, ok := strings.CutPrefix(name, "tv"); ok && v.whole[t] {
					tags[tag] = true
				}
			}
		}
		for e := range o.FDB {
			if v.hasFDB(t, e) {
				c.FDB[e] = true
				v.programmed(t, e)
			}
		}
		for e := range o.Neigh {
			if v.hasNeigh(t, e) {
				c.Neigh[e] = true
			}
		}
		if v.hasUplink(t) {
			c.Uplink = o.Uplink
			for e := range o.Elems {
				if v.hasElem(t, e) {
					c.Elems[e] = true
				}
			}
		}
		for p, g := range o.Guards {
			if v.hasGuard(t, p) {
				c.Guards[p] = g
			}
		}
		if v.hasLegacy(t) {
			c.Legacy = o.Legacy
		}
		out.Tenants[t] = c
	}
	for name, l := range full.HostLinks {
		if v.hasHostLink(name, tags) {
			out.HostLinks[name] = l
		}
	}
	if v.hasHostRules() {
		out.HostRules = full.HostRules
		out.hostAll = full.hostAll
	}
	if v.all {
		out.HostFilter = full.HostFilter
	}
	for e := range full.HostElems {
		if v.hasHostElem(e) {
			out.HostElems[e] = true
		}
	}
	if v.hasReserved() {
		out.Reserved = full.Reserved
	}
	if v.hasCrypt() {
		out.Crypt = full.Crypt
	}
	out.UplinksUsed = full.UplinksUsed
	out.HostUplinks = full.HostUplinks
	return out
}
