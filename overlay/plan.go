package overlay

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
)

// OpKind says what an Op does.
type OpKind int

const (
	OpNetnsAdd   OpKind = iota // create the tenant's namespace
	OpHostDel                  // delete a stray link in the host namespace
	OpNeighDel                 // delete a neighbour entry
	OpFDBDel                   // delete an FDB entry
	OpGuardDel                 // delete a port guard
	OpLegacyDel                // delete a rule table of an earlier layout
	OpLinkDel                  // delete a link in the tenant namespace
	OpLinkAdd                  // create a link (VXLAN: in the host namespace, then moved)
	OpLinkSet                  // fix a link's MTU, master or state
	OpGuardSet                 // make a port's guard as Guard says
	OpFDBAdd                   // add (append) an FDB entry
	OpNeighSet                 // add or replace a neighbour entry
	OpNetnsDel                 // delete the tenant's namespace and all in it
	OpUplinkSet                // make the tenant's uplink, route, forwarding (and with Rebuild, rules) as Uplink says
	OpUplinkDel                // remove the tenant's uplink and rules; forwarding off
	OpHostRules                // make (or, if Rules is empty, remove) the host's rule set anew
	OpElemAdd                  // add an element to a set of the tenant's (or, without Tenant, the host's) rules
	OpElemDel                  // delete such an element
	OpPortBind                 // reserve a published port: bind a socket to it
	OpPortFree                 // close a published port's reservation
	OpHostFilter               // make (or, if Rules is empty, remove) Tenet's accepts in the host's iptables
	OpCryptSet                 // make the crypt namespace and its WireGuard device as Device says
	OpPeerSet                  // add or change a WireGuard peer
	OpPeerDel                  // remove a WireGuard peer
	OpCryptDel                 // delete the crypt namespace, with its device and peers
)

// Op is one kernel change. It prints like the iproute2 or nft command that
// would make it, prefixed by the tenant whose namespace it happens in.
type Op struct {
	Kind    OpKind
	Tenant  string
	Link    Link // OpLinkAdd, OpLinkSet (the wanted link), OpLinkDel, OpHostDel
	FDB     FDBEntry
	Neigh   NeighEntry
	Uplink  *Uplink  // OpUplinkSet
	Rebuild bool     // OpUplinkSet: make the rule set anew, with every element
	Rules   string   // OpHostRules: the digest wanted, "" for none; OpLegacyDel: the table
	Guard   Guard    // OpGuardSet, OpGuardDel (Port)
	Elem    Elem     // OpElemAdd, OpElemDel
	elems   []Elem   // OpHostRules: every element of the new rule set
	Device  WGDevice // OpCryptSet
	Peer    WGPeer   // OpPeerSet, OpPeerDel (Key)
	// OpPortBind, OpPortFree: the socket. Soft: the port's rules exist
	// already (a restart), so a failure to bind is reported, not fatal.
	Res  Reservation
	Soft bool
}

func (op Op) String() string {
	where := op.Tenant
	if where == "" {
		where = "host"
	}
	switch op.Kind {
	case OpNetnsAdd:
		return "netns add " + op.Tenant
	case OpNetnsDel:
		return "netns del " + op.Tenant
	case OpHostDel:
		return "host: link del " + op.Link.Name
	case OpLinkAdd:
		return op.Tenant + ": link add " + op.Link.String()
	case OpLinkSet:
		s := op.Tenant + ": link set " + op.Link.Name + fmt.Sprintf(" mtu %d", op.Link.MTU)
		if op.Link.Master != "" {
			s += " master " + op.Link.Master
		}
		if op.Link.Addr.IsValid() {
			s += " addr " + op.Link.Addr.String()
		}
		if op.Link.MAC != "" {
			s += " address " + op.Link.MAC
		}
		return s + " up"
	case OpLinkDel:
		return op.Tenant + ": link del " + op.Link.Name
	case OpFDBAdd:
		return fmt.Sprintf("%s: fdb append %s dev %s dst %s", op.Tenant, op.FDB.MAC, op.FDB.Dev, op.FDB.Dst)
	case OpFDBDel:
		return fmt.Sprintf("%s: fdb del %s dev %s dst %s", op.Tenant, op.FDB.MAC, op.FDB.Dev, op.FDB.Dst)
	case OpNeighSet:
		return fmt.Sprintf("%s: neigh replace %s lladdr %s dev %s nud permanent", op.Tenant, op.Neigh.IP, op.Neigh.MAC, op.Neigh.Dev)
	case OpNeighDel:
		return fmt.Sprintf("%s: neigh del %s dev %s", op.Tenant, op.Neigh.IP, op.Neigh.Dev)
	case OpUplinkSet:
		s := fmt.Sprintf("%s: uplink %d via %s rules %s", op.Tenant, op.Uplink.Index, op.Uplink.HostLink, op.Uplink.Rules)
		if op.Rebuild {
			s += fmt.Sprintf(" (new, %d elements)", len(op.Uplink.elems))
		}
		return s
	case OpUplinkDel:
		return op.Tenant + ": uplink del"
	case OpHostRules:
		if op.Rules == "" {
			return "host: rules del"
		}
		return fmt.Sprintf("host: rules %s (new, %d elements)", op.Rules, len(op.elems))
	case OpGuardSet:
		return op.Tenant + ": " + op.Guard.String()
	case OpGuardDel:
		return op.Tenant + ": guard " + op.Guard.Port + " del"
	case OpLegacyDel:
		return op.Tenant + ": nft delete table " + op.Rules
	case OpElemAdd:
		return fmt.Sprintf("%s: nft add element %s { %s }", where, op.Elem.Set, op.Elem.Key)
	case OpElemDel:
		return fmt.Sprintf("%s: nft delete element %s { %s }", where, op.Elem.Set, op.Elem.Key)
	case OpPortBind:
		if op.Soft {
			return "host: reserve " + op.Res.String() + " (its rules exist)"
		}
		return "host: reserve " + op.Res.String()
	case OpPortFree:
		return "host: release " + op.Res.String()
	case OpHostFilter:
		if op.Rules == "" {
			return "host: iptables filter del"
		}
		return "host: iptables filter " + op.Rules
	case OpCryptSet:
		return "crypt: link set " + op.Device.String()
	case OpPeerSet:
		return "crypt: wg set " + wgName + " " + op.Peer.String()
	case OpPeerDel:
		return "crypt: wg set " + wgName + " peer " + op.Peer.Key.String() + " remove"
	case OpCryptDel:
		return "netns del crypt"
	}
	return fmt.Sprintf("op(%d)", int(op.Kind))
}

// linkOrder creates bridges before VXLAN devices and veths (which are
// their ports), and deletes in the reverse order.
func linkOrder(kind string) int {
	switch kind {
	case "bridge":
		return 0
	case "vxlan":
		return 1
	}
	return 2
}

// Plan returns the ops that turn observed into desired, in an order the
// kernel accepts: port reservations, the crypt namespace, a new host rule
// set (one losing its egress chains comes after the tenants), then
// namespaces, then removals of what is stale, then creations, then fixes,
// then entries; namespaces of tenants that are gone last. Objects that
// already match are left alone, so running Plan on the result of its own
// ops yields nothing. Pure.
func Plan(desired, observed Snapshot) []Op {
	var ops []Op
	// Ports are reserved before anything else, so that a port another
	// program holds is refused before any rule leads to it.
	published := map[L4Port]bool{}
	for e := range observed.HostElems {
		if proto, port, ok := elemPort(e); ok {
			published[L4Port{proto, port}] = true
		}
	}
	for _, r := range sortedEntries(desired.Reserved, compareReservation) {
		if !observed.Reserved[r] {
			ops = append(ops, Op{Kind: OpPortBind, Res: r, Soft: published[L4Port{r.Proto, r.Port}]})
		}
	}
	// The crypt namespace next: encrypted networks' VXLAN devices are
	// made in it.
	ops = append(ops, planCrypt(desired.Crypt, observed.Crypt)...)
	// A first rule set, or one with egress, goes in before the tenants'
	// namespaces and devices: its raw chains keep the tunnels from
	// conntrack, and a VXLAN device made first may send (a bridge's first
	// multicast, flooded to the peers) before they are there, leaving the
	// host a tracked tunnel flow (seen once in TestTunnelsAreNotTracked);
	// its egress chains guard the host before a tenant's uplink reaches
	// it. A set losing its egress chains goes in after, once the uplinks
	// are gone. The applier runs the host's ops as one group, placed where
	// the first of them is in the plan.
	uplinks := false
	for _, o := range desired.Tenants {
		uplinks = uplinks || o.Uplink != nil
	}
	rulesFirst := desired.HostRules != "" && desired.HostRules != observed.HostRules && (observed.HostRules == "" || uplinks)
	if rulesFirst {
		ops = append(ops, Op{Kind: OpHostRules, Rules: desired.HostRules, elems: desired.hostAll})
	}
	for _, t := range sortedKeys(desired.Tenants) {
		if observed.Tenants[t] == nil {
			ops = append(ops, Op{Kind: OpNetnsAdd, Tenant: t})
		}
	}
	// Stray host links: VXLAN devices never moved, and container ends whose
	// bridge side is not wanted any more.
	wantedPeers := map[string]bool{}
	for _, o := range desired.Tenants {
		for _, l := range o.Links {
			if l.Kind == "veth" {
				wantedPeers[l.Peer] = true
			}
		}
		if o.Uplink != nil {
			wantedPeers[o.Uplink.HostLink] = true
		}
	}
	for _, name := range sortedKeys(observed.HostLinks) {
		if !wantedPeers[name] {
			ops = append(ops, Op{Kind: OpHostDel, Link: observed.HostLinks[name]})
		}
	}
	for _, t := range sortedKeys(desired.Tenants) {
		ops = planTenant(ops, t, desired.Tenants[t], observed.Tenants[t])
	}
	for _, t := range sortedKeys(observed.Tenants) {
		if desired.Tenants[t] == nil {
			if observed.Tenants[t].Uplink != nil {
				ops = append(ops, Op{Kind: OpUplinkDel, Tenant: t}) // its host end too
			}
			// The namespace goes with all in it (its VXLAN devices are
			// deleted first, in one batch: OpNetnsDel).
			ops = append(ops, Op{Kind: OpNetnsDel, Tenant: t})
		}
	}
	switch {
	case rulesFirst:
	case desired.HostRules != observed.HostRules:
		// Removed with every element, after the tenants' devices; the
		// iptables accepts go with them.
		ops = append(ops, Op{Kind: OpHostRules, Rules: desired.HostRules, elems: desired.hostAll})
	default:
		if desired.HostRules != "" {
			ops = append(ops, planElems("", desired.HostElems, observed.HostElems)...)
		}
		if desired.HostFilter != observed.HostFilter {
			ops = append(ops, Op{Kind: OpHostFilter, Rules: desired.HostFilter})
		}
	}
	for _, r := range sortedEntries(observed.Reserved, compareReservation) {
		if !desired.Reserved[r] {
			ops = append(ops, Op{Kind: OpPortFree, Res: r})
		}
	}
	if desired.Crypt == nil && observed.Crypt != nil {
		// Last: the encrypted networks' devices are gone by now (the
		// kernel would take them down with the namespace anyway).
		ops = append(ops, Op{Kind: OpCryptDel})
	}
	return ops
}

func compareReservation(a, b Reservation) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port), a.IP.Compare(b.IP))
}

// planCrypt makes the crypt namespace's device and peers as want says;
// removing the namespace is Plan's last op.
func planCrypt(want, have *CryptObjects) []Op {
	if want == nil {
		return nil
	}
	var ops []Op
	if have == nil || have.Device != want.Device {
		ops = append(ops, Op{Kind: OpCryptSet, Device: want.Device})
	}
	var havePeers map[PublicKey]WGPeer
	if have != nil {
		havePeers = have.Peers
	}
	// Removals first: a peer's allowed IPs may move to a new key of the
	// same host.
	for _, p := range sortedPeers(havePeers) {
		if _, ok := want.Peers[p.Key]; !ok {
			ops = append(ops, Op{Kind: OpPeerDel, Peer: p})
		}
	}
	for _, p := range sortedPeers(want.Peers) {
		if h, ok := havePeers[p.Key]; !ok || h != p {
			ops = append(ops, Op{Kind: OpPeerSet, Peer: p})
		}
	}
	return ops
}

func sortedPeers(m map[PublicKey]WGPeer) []WGPeer {
	ps := slices.Collect(maps.Values(m))
	slices.SortFunc(ps, func(a, b WGPeer) int {
		return cmp.Or(a.Allowed.Addr().Compare(b.Allowed.Addr()), slices.Compare(a.Key[:], b.Key[:]))
	})
	return ps
}

// planElems adds the elements of want that have lacks and deletes those
// have has in excess.
func planElems(tenant string, want, have map[Elem]bool) []Op {
	var ops []Op
	for _, e := range sortedEntries(have, compareElem) {
		if !want[e] {
			ops = append(ops, Op{Kind: OpElemDel, Tenant: tenant, Elem: e})
		}
	}
	for _, e := range sortedEntries(want, compareElem) {
		if !have[e] {
			ops = append(ops, Op{Kind: OpElemAdd, Tenant: tenant, Elem: e})
		}
	}
	return ops
}

// planTenant appends tenant t's ops to ops. An op is large (half a KiB),
// and a host joining a busy network gets tens of thousands: the slice is
// grown once for the entries, not doubled all the way.
func planTenant(ops []Op, t string, want, have *TenantObjects) []Op {
	if have == nil {
		have = newTenantObjects()
	}
	if want.Uplink == nil && have.Uplink != nil {
		ops = append(ops, Op{Kind: OpUplinkDel, Tenant: t})
	}
	// Links to delete: not wanted, or wanted with an attribute that can only
	// be set at creation.
	doomed := map[string]bool{}
	for name, l := range have.Links {
		w, ok := want.Links[name]
		if !ok || !sameIdentity(w, l) {
			doomed[name] = true
		}
	}
	replaced := map[NeighEntry]bool{} // (dev, ip) with a new MAC: replaced in place, not deleted
	for e := range want.Neigh {
		replaced[NeighEntry{Dev: e.Dev, IP: e.IP}] = true
	}
	// Entries to delete and to add, each rule written once: counted first
	// (the slice grows once), then appended in order.
	neighGone := func(e NeighEntry) bool {
		return !want.Neigh[e] && !doomed[e.Dev] && !replaced[NeighEntry{Dev: e.Dev, IP: e.IP}]
	}
	fdbGone := func(e FDBEntry) bool { return !want.FDB[e] && !doomed[e.Dev] }
	neighNew := func(e NeighEntry) bool { return !have.Neigh[e] || doomed[e.Dev] }
	fdbNew := func(e FDBEntry) bool { return !have.FDB[e] || doomed[e.Dev] }
	ops = slices.Grow(ops, countKeys(have.Neigh, neighGone)+countKeys(have.FDB, fdbGone))
	for _, e := range sortedEntries(have.Neigh, compareNeigh) {
		if neighGone(e) {
			ops = append(ops, Op{Kind: OpNeighDel, Tenant: t, Neigh: e})
		}
	}
	for _, e := range sortedEntries(have.FDB, compareFDB) {
		if fdbGone(e) {
			ops = append(ops, Op{Kind: OpFDBDel, Tenant: t, FDB: e})
		}
	}
	for _, l := range have.Legacy {
		ops = append(ops, Op{Kind: OpLegacyDel, Tenant: t, Rules: l})
	}
	doomedLinks := sortedLinks(have.Links, func(l Link) bool { return doomed[l.Name] })
	slices.Reverse(doomedLinks) // ports before bridges
	for _, l := range doomedLinks {
		ops = append(ops, Op{Kind: OpLinkDel, Tenant: t, Link: l})
	}
	// A port goes before its guard: never a moment with the port there
	// and unguarded. (The removal takes as long in this order: 22 ms for
	// a host's first endpoint, BenchmarkThousandth.)
	for _, g := range sortedKeys(have.Guards) {
		if _, ok := want.Guards[g]; !ok {
			ops = append(ops, Op{Kind: OpGuardDel, Tenant: t, Guard: Guard{Port: g}})
		}
	}
	added := map[string]bool{}
	for _, w := range sortedLinks(want.Links, func(Link) bool { return true }) {
		h, ok := have.Links[w.Name]
		switch {
		case !ok || doomed[w.Name]:
			added[w.Name] = true
			ops = append(ops, Op{Kind: OpLinkAdd, Tenant: t, Link: w})
		case h.MTU != w.MTU || h.Master != w.Master || h.Up != w.Up || h.Addr != w.Addr || h.MAC != w.MAC:
			ops = append(ops, Op{Kind: OpLinkSet, Tenant: t, Link: w})
		}
	}
	for _, g := range sortedKeys(want.Guards) {
		// A port made anew gets its guard anew: on older kernels the guard
		// went with the old device.
		if h, ok := have.Guards[g]; !ok || h != want.Guards[g] || added[g] {
			ops = append(ops, Op{Kind: OpGuardSet, Tenant: t, Guard: want.Guards[g]})
		}
	}
	if want.Uplink != nil {
		rebuild := have.Uplink == nil || have.Uplink.Rules != want.Uplink.Rules
		if rebuild || !have.Uplink.same(want.Uplink) {
			ops = append(ops, Op{Kind: OpUplinkSet, Tenant: t, Uplink: want.Uplink, Rebuild: rebuild})
		}
		if !rebuild { // else the new rule set has every element already
			ops = append(ops, planElems(t, want.Elems, have.Elems)...)
		}
	}
	ops = slices.Grow(ops, countKeys(want.FDB, fdbNew)+countKeys(want.Neigh, neighNew))
	for _, e := range sortedEntries(want.FDB, compareFDB) {
		if fdbNew(e) {
			ops = append(ops, Op{Kind: OpFDBAdd, Tenant: t, FDB: e})
		}
	}
	for _, e := range sortedEntries(want.Neigh, compareNeigh) {
		if neighNew(e) {
			ops = append(ops, Op{Kind: OpNeighSet, Tenant: t, Neigh: e})
		}
	}
	return ops
}

// countKeys counts the keys of m that keep accepts.
func countKeys[K comparable](m map[K]bool, keep func(K) bool) int {
	n := 0
	for k := range m {
		if keep(k) {
			n++
		}
	}
	return n
}

// sameIdentity reports whether have can become want without being
// re-created.
func sameIdentity(want, have Link) bool {
	if want.Kind != have.Kind {
		return false
	}
	if want.Kind == "vxlan" {
		return want.VNI == have.VNI && want.Port == have.Port && want.Local == have.Local &&
			want.Learning == have.Learning && want.Proxy == have.Proxy && want.Encrypted == have.Encrypted
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func sortedLinks(m map[string]Link, keep func(Link) bool) []Link {
	var ls []Link
	for _, l := range m {
		if keep(l) {
			ls = append(ls, l)
		}
	}
	slices.SortFunc(ls, func(a, b Link) int {
		return cmp.Or(cmp.Compare(linkOrder(a.Kind), linkOrder(b.Kind)), cmp.Compare(a.Name, b.Name))
	})
	return ls
}

func sortedEntries[E comparable](m map[E]bool, compare func(a, b E) int) []E {
	es := slices.Collect(maps.Keys(m))
	slices.SortFunc(es, compare)
	return es
}

func compareFDB(a, b FDBEntry) int {
	return cmp.Or(cmp.Compare(a.Dev, b.Dev), cmp.Compare(a.MAC, b.MAC), a.Dst.Compare(b.Dst))
}

func compareNeigh(a, b NeighEntry) int {
	return cmp.Or(cmp.Compare(a.Dev, b.Dev), a.IP.Compare(b.IP), cmp.Compare(a.MAC, b.MAC))
}

func compareElem(a, b Elem) int { return cmp.Or(cmp.Compare(a.Set, b.Set), cmp.Compare(a.Key, b.Key)) }
