package overlay

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// UplinkMTU is the MTU of the uplink veths; egress packets are at most the
// networks' MTU, which is below it.
const UplinkMTU = 1500

// metadataAddr is the cloud metadata service's address; no uplink /30 may
// hold it, and no tenant may reach it.
var metadataAddr = netip.MustParseAddr("169.254.169.254")

// ResolverAddr is the address of Tenet's name resolver in every tenant
// namespace (on its lo; ListenResolver) and in the host's. It lies in the
// default uplink net, so no tenant subnet may hold it, and no uplink /30
// holds it either.
var ResolverAddr = netip.MustParseAddr("169.254.53.53")

// NSID identifies a network namespace (its nsfs inode): a tenant namespace
// made anew has another.
type NSID uint64

// Names of the sets in Tenet's rules (firewall_linux.go).
const (
	setPairs = "pairs"  // tenant: ifname . ifname a bridge may forward between
	setDeny  = "deny4"  // host: infrastructure ranges
	setAllow = "allow4" // host: ranges allowed over every deny
	setPorts = "ports"  // host: protocol . port denied everywhere
)

func digest(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:4])
}

// tenantRulesDigest names the tenant rule set's layout (its chains and
// sets; the elements are not part of it).
func tenantRulesDigest() string { return digest("tenant-v6") }

// hostRulesDigest names the host rule set's layout for uplink net n and the
// VXLAN port: with egress (and published ports), or only what keeps VXLAN
// from conntrack.
func hostRulesDigest(n netip.Prefix, port uint16, egress bool) string {
	return digest("host-v7", n.String(), fmt.Sprint(port), fmt.Sprint(egress))
}

// uplinkAddrs returns the host and tenant ends (/30) of uplink index i in n.
func uplinkAddrs(n netip.Prefix, i int) (host, tenant netip.Prefix) {
	v := u32(n.Addr()) + uint32(i)*4
	return netip.PrefixFrom(addr4(v+1), 30), netip.PrefixFrom(addr4(v+2), 30)
}

// uplinkIndexOf is the inverse of uplinkAddrs for either end; ok is false
// for an address that is neither.
func uplinkIndexOf(n netip.Prefix, end netip.Prefix, host bool) (int, bool) {
	if !n.Contains(end.Addr()) || end.Bits() != 30 {
		return 0, false
	}
	off := u32(end.Addr()) - u32(n.Addr())
	want := uint32(2)
	if host {
		want = 1
	}
	if off%4 != want {
		return 0, false
	}
	return int(off / 4), true
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(x uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
}

func usableUplink(n netip.Prefix, i int) bool {
	host, _ := uplinkAddrs(n, i)
	return i >= 1 && i < 1<<(32-n.Bits())/4 && !host.Masked().Contains(metadataAddr) && !host.Masked().Contains(ResolverAddr)
}

// hostUplinkName is the host end of a tenant's uplink: tnu + 48 bits of
// SHA-256 of the tenant (15 bytes).
func hostUplinkName(tenant string) string {
	sum := sha256.Sum256([]byte(tenant))
	return hostUplinkPref + hex.EncodeToString(sum[:6])
}

// desireEgress adds what egress needs for the tenants whose egress is in v:
// each one with an egress network gets an uplink (index: the one it has in
// observed, else the lowest free one) and the rule set's elements: for
// every network "br . br" (bridged frames, should br_netfilter send them
// through the router), for every egress network "br . up0". The host gets
// its rule set when it has any network (keeping VXLAN from conntrack), with
// the egress chains and the infrastructure's elements when any tenant has
// egress. ok is false if the uplink net is full. Pure.
func desireEgress(snap *Snapshot, s State, nets map[uint32]*Network, h Host, v *view, observed Snapshot) (ok bool) {
	type egress struct {
		on    bool
		elems []Elem
	}
	var tenants map[string]*egress
	anyEgress := false
	for i := range s.Networks {
		n := &s.Networks[i]
		anyEgress = anyEgress || n.Egress
		if !v.hasUplink(n.Tenant) {
			continue
		}
		if tenants == nil {
			tenants = map[string]*egress{}
		}
		e := tenants[n.Tenant]
		if e == nil {
			e = &egress{}
			tenants[n.Tenant] = e
		}
		br := bridgeName(n.VNI)
		e.elems = append(e.elems, Elem{Set: setPairs, Key: br + " . " + br})
		if n.Egress {
			e.on = true
			e.elems = append(e.elems, Elem{Set: setPairs, Key: br + " . " + uplinkName})
		}
	}
	var pubs []published
	if anyEgress && (len(tenants) > 0 || v.hasHostRules()) {
		pubs = publishedPorts(s, nets)
	}
	var want []string
	for t, e := range tenants {
		if e.on {
			want = append(want, t)
		}
	}
	slices.Sort(want)
	index, ok := assignUplinks(want, observed, h.UplinkNet)
	if !ok {
		return false
	}
	for _, t := range want {
		e := tenants[t]
		e.elems = append(e.elems, tenantPubElems(pubs, t)...)
		slices.SortFunc(e.elems, compareElem)
		o := snap.Tenants[t]
		o.Uplink = &Uplink{Index: index[t], HostLink: hostUplinkName(t), Rules: tenantRulesDigest(), Ready: true, elems: e.elems}
		for _, el := range e.elems {
			if v.hasElem(t, el) {
				o.Elems[el] = true
			}
		}
		hl := hostUplinkName(t)
		snap.HostLinks[hl] = Link{Name: hl, Kind: "veth", MTU: UplinkMTU, Up: true}
	}
	if v.hasHostRules() && len(s.Networks) > 0 {
		snap.HostRules = hostRulesDigest(h.UplinkNet, h.Port, anyEgress)
		if !anyEgress {
			return true
		}
		if v.all && h.Filter {
			snap.HostFilter = filterDigest()
		}
		snap.hostAll = hostElems(s.Infra, h.Port, h.WireGuardPort)
		if v.hasHostElems() {
			for _, e := range snap.hostAll {
				snap.HostElems[e] = true
			}
		}
		// A tenant's host elements lead to its uplink: the index it gets
		// here, else the one its host end has.
		desirePorts(snap, pubs, h, func(t string) (int, bool) {
			if i, ok := index[t]; ok {
				return i, true
			}
			i, ok := observed.HostUplinks[hostUplinkName(t)]
			return i, ok
		})
		slices.SortFunc(snap.hostAll, compareElem)
	}
	return true
}

// assignUplinks gives each tenant of want an uplink index: the one it has in
// observed if usable and not taken, else the lowest one free in observed.
func assignUplinks(want []string, observed Snapshot, n netip.Prefix) (map[string]int, bool) {
	out := map[string]int{}
	used := map[int]bool{}
	for i := range observed.UplinksUsed {
		used[i] = true
	}
	taken := map[int]bool{}
	for _, t := range want {
		if o := observed.Tenants[t]; o != nil && o.Uplink != nil && usableUplink(n, o.Uplink.Index) && !taken[o.Uplink.Index] {
			out[t] = o.Uplink.Index
			taken[o.Uplink.Index] = true
		}
	}
	next := 1
	for _, t := range want {
		if _, ok := out[t]; ok {
			continue
		}
		for ; used[next] || taken[next] || !usableUplink(n, next); next++ {
			if next >= 1<<(32-n.Bits())/4 {
				return nil, false
			}
		}
		out[t], taken[next] = next, true
	}
	return out, true
}

// hostElems are the host rule set's elements for infra: the IPv4 deny and
// allow prefixes as merged ranges, and the denied ports with the VXLAN
// and WireGuard ports (0: none) among them.
func hostElems(in Infra, vxlanPort, wgPort uint16) []Elem {
	var out []Elem
	for _, r := range mergeRanges(in.Deny) {
		out = append(out, Elem{Set: setDeny, Key: r.String()})
	}
	for _, r := range mergeRanges(in.Allow) {
		out = append(out, Elem{Set: setAllow, Key: r.String()})
	}
	ports := map[L4Port]bool{{Proto: UDP, Port: vxlanPort}: true}
	if wgPort != 0 {
		ports[L4Port{Proto: UDP, Port: wgPort}] = true
	}
	for _, p := range in.Ports {
		ports[p] = true
	}
	for p := range ports {
		out = append(out, Elem{Set: setPorts, Key: p.String()})
	}
	slices.SortFunc(out, func(a, b Elem) int { return cmp.Or(cmp.Compare(a.Set, b.Set), cmp.Compare(a.Key, b.Key)) })
	return out
}

// ipRange is an inclusive range of IPv4 addresses.
type ipRange struct{ lo, hi uint32 }

func (r ipRange) String() string { return addr4(r.lo).String() + "-" + addr4(r.hi).String() }

// parseRange parses ipRange.String's form.
func parseRange(s string) (ipRange, error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := netip.ParseAddr(a)
	hi, err2 := netip.ParseAddr(b)
	if !ok || err1 != nil || err2 != nil || !lo.Is4() || !hi.Is4() || u32(lo) > u32(hi) {
		return ipRange{}, fmt.Errorf("range %q: want a.b.c.d-e.f.g.h", s)
	}
	return ipRange{u32(lo), u32(hi)}, nil
}

// mergeRanges turns the IPv4 prefixes among ps into sorted, disjoint and
// non-adjacent ranges (what an interval set holds). IPv6 ones are left out.
func mergeRanges(ps []netip.Prefix) []ipRange {
	var rs []ipRange
	for _, p := range ps {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		lo := u32(p.Addr())
		rs = append(rs, ipRange{lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)})
	}
	slices.SortFunc(rs, func(a, b ipRange) int { return cmp.Compare(a.lo, b.lo) })
	var out []ipRange
	for _, r := range rs {
		if n := len(out); n > 0 && (r.lo <= out[n-1].hi || out[n-1].hi != ^uint32(0) && r.lo == out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}
