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
	OpLinkDel                  // delete a link in the tenant namespace
	OpLinkAdd                  // create a link (VXLAN: in the host namespace, then moved)
	OpLinkSet                  // fix a link's MTU, master or state
	OpFDBAdd                   // add (append) an FDB entry
	OpNeighSet                 // add or replace a neighbour entry
	OpNetnsDel                 // delete the tenant's namespace and all in it
	OpUplinkSet                // make the tenant's uplink, route, forwarding and rules as Uplink says
	OpUplinkDel                // remove the tenant's uplink and rules; forwarding off
	OpHostRules                // set (or, if empty, remove) the host's egress rules
	OpSpoofRules               // set (or, if empty, remove) a tenant's anti-spoofing rules
)

// Op is one kernel change. It prints like the iproute2 command that would
// make it, prefixed by the tenant whose namespace it happens in.
type Op struct {
	Kind   OpKind
	Tenant string
	Link   Link // OpLinkAdd, OpLinkSet (the wanted link), OpLinkDel, OpHostDel
	FDB    FDBEntry
	Neigh  NeighEntry
	Uplink *Uplink // OpUplinkSet
	Rules  string  // OpHostRules, OpSpoofRules: the digest wanted, "" for none
	ports  []spoofPort
}

func (op Op) String() string {
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
		return fmt.Sprintf("%s: uplink %d via %s rules %s", op.Tenant, op.Uplink.Index, op.Uplink.HostLink, op.Uplink.Rules)
	case OpUplinkDel:
		return op.Tenant + ": uplink del"
	case OpHostRules:
		if op.Rules == "" {
			return "host: rules del"
		}
		return "host: rules " + op.Rules
	case OpSpoofRules:
		if op.Rules == "" {
			return op.Tenant + ": spoof rules del"
		}
		return op.Tenant + ": spoof rules " + op.Rules
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
// kernel accepts: namespaces first, then removals of what is stale, then
// creations, then fixes, then entries; namespaces of tenants that are gone
// last. Objects that already match are left alone, so running Plan on the
// result of its own ops yields nothing. Pure.
func Plan(desired, observed Snapshot) []Op {
	var ops []Op
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
		ops = append(ops, planTenant(t, desired.Tenants[t], observed.Tenants[t])...)
	}
	for _, t := range sortedKeys(observed.Tenants) {
		if desired.Tenants[t] == nil {
			if observed.Tenants[t].Uplink != nil {
				ops = append(ops, Op{Kind: OpUplinkDel, Tenant: t}) // its host end too
			}
			// Delete the links first: a namespace's devices go away
			// asynchronously once it is unpinned, and until then its VXLAN
			// devices still hold their VNI on the host's socket, so a quick
			// re-create would fail with "file exists".
			dels := sortedLinks(observed.Tenants[t].Links, func(Link) bool { return true })
			slices.Reverse(dels)
			for _, l := range dels {
				ops = append(ops, Op{Kind: OpLinkDel, Tenant: t, Link: l})
			}
			ops = append(ops, Op{Kind: OpNetnsDel, Tenant: t})
		}
	}
	if desired.HostRules != observed.HostRules {
		ops = append(ops, Op{Kind: OpHostRules, Rules: desired.HostRules})
	}
	return ops
}

func planTenant(t string, want, have *TenantObjects) []Op {
	if have == nil {
		have = newTenantObjects()
	}
	var ops []Op
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
	for _, e := range sortedEntries(have.Neigh, compareNeigh) {
		if !want.Neigh[e] && !doomed[e.Dev] && !replaced[NeighEntry{Dev: e.Dev, IP: e.IP}] {
			ops = append(ops, Op{Kind: OpNeighDel, Tenant: t, Neigh: e})
		}
	}
	for _, e := range sortedEntries(have.FDB, compareFDB) {
		if !want.FDB[e] && !doomed[e.Dev] {
			ops = append(ops, Op{Kind: OpFDBDel, Tenant: t, FDB: e})
		}
	}
	dels := sortedLinks(have.Links, func(l Link) bool { return doomed[l.Name] })
	slices.Reverse(dels) // ports before bridges
	for _, l := range dels {
		ops = append(ops, Op{Kind: OpLinkDel, Tenant: t, Link: l})
	}
	for _, w := range sortedLinks(want.Links, func(Link) bool { return true }) {
		h, ok := have.Links[w.Name]
		switch {
		case !ok || doomed[w.Name]:
			ops = append(ops, Op{Kind: OpLinkAdd, Tenant: t, Link: w})
		case h.MTU != w.MTU || h.Master != w.Master || h.Up != w.Up || h.Addr != w.Addr:
			ops = append(ops, Op{Kind: OpLinkSet, Tenant: t, Link: w})
		}
	}
	if want.Uplink != nil && (have.Uplink == nil || !have.Uplink.same(want.Uplink)) {
		ops = append(ops, Op{Kind: OpUplinkSet, Tenant: t, Uplink: want.Uplink})
	}
	for _, e := range sortedEntries(want.FDB, compareFDB) {
		if !have.FDB[e] || doomed[e.Dev] {
			ops = append(ops, Op{Kind: OpFDBAdd, Tenant: t, FDB: e})
		}
	}
	for _, e := range sortedEntries(want.Neigh, compareNeigh) {
		if !have.Neigh[e] || doomed[e.Dev] {
			ops = append(ops, Op{Kind: OpNeighSet, Tenant: t, Neigh: e})
		}
	}
	if want.Spoof != have.Spoof {
		ops = append(ops, Op{Kind: OpSpoofRules, Tenant: t, Rules: want.Spoof, ports: want.spoofPorts})
	}
	return ops
}

// sameIdentity reports whether have can become want without being
// re-created.
func sameIdentity(want, have Link) bool {
	if want.Kind != have.Kind {
		return false
	}
	if want.Kind == "vxlan" {
		return want.VNI == have.VNI && want.Port == have.Port && want.Local == have.Local &&
			want.Learning == have.Learning && want.Proxy == have.Proxy
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
