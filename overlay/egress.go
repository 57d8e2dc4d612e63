package overlay

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
)

// UplinkMTU is the MTU of the uplink veths; egress packets are at most the
// networks' MTU, which is below it.
const UplinkMTU = 1500

// metadataAddr is the cloud metadata service's address; no uplink /30 may
// hold it.
var metadataAddr = netip.MustParseAddr("169.254.169.254")

// uplinkAddrs returns the host and tenant ends (/30) of uplink index i in n.
func uplinkAddrs(n netip.Prefix, i int) (host, tenant netip.Prefix) {
	b := n.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	a := func(x uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	return netip.PrefixFrom(a(v+1), 30), netip.PrefixFrom(a(v+2), 30)
}

// uplinkIndex is the inverse of uplinkAddrs for the tenant end; ok is false
// for an address that is not one.
func uplinkIndex(n netip.Prefix, tenantEnd netip.Prefix) (int, bool) {
	if !n.Contains(tenantEnd.Addr()) || tenantEnd.Bits() != 30 {
		return 0, false
	}
	b, base := tenantEnd.Addr().As4(), n.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	w := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	if (v-w)%4 != 2 {
		return 0, false
	}
	return int((v - w) / 4), true
}

func usableUplink(n netip.Prefix, i int) bool {
	host, _ := uplinkAddrs(n, i)
	return i >= 1 && i < 1<<(32-n.Bits())/4 && !host.Masked().Contains(metadataAddr)
}

// hostUplinkName is the host end of a tenant's uplink: tnu + 48 bits of
// SHA-256 of the tenant (15 bytes).
func hostUplinkName(tenant string) string {
	sum := sha256.Sum256([]byte(tenant))
	return hostUplinkPref + hex.EncodeToString(sum[:6])
}

// egressTenants lists the tenants of s with at least one egress network,
// and all their networks' bridges, sorted: "br<vni>=<gateway>" for those
// with egress, "br<vni>" for the others.
func egressTenants(s State) map[string][]string {
	out := map[string][]string{}
	for _, n := range s.Networks {
		if n.Egress {
			out[n.Tenant] = nil
		}
	}
	for _, n := range s.Networks {
		if _, ok := out[n.Tenant]; !ok {
			continue
		}
		b := bridgeName(n.VNI)
		if n.Egress {
			b += "=" + n.Gateway.Addr().String()
		}
		out[n.Tenant] = append(out[n.Tenant], b)
	}
	for t := range out {
		slices.Sort(out[t])
	}
	return out
}

// AssignUplinks gives every tenant of s with egress an uplink index: the
// one it has in observed, else the lowest free one. ok is false if the
// uplink net is full.
func AssignUplinks(s State, observed Snapshot, n netip.Prefix) (map[string]int, bool) {
	want := egressTenants(s)
	out := map[string]int{}
	used := map[int]bool{}
	for t, o := range observed.Tenants {
		if o.Uplink != nil && want[t] != nil && usableUplink(n, o.Uplink.Index) && !used[o.Uplink.Index] {
			out[t] = o.Uplink.Index
			used[o.Uplink.Index] = true
		}
	}
	next := 1
	for _, t := range sortedKeys(want) {
		if _, ok := out[t]; ok {
			continue
		}
		for ; used[next] || !usableUplink(n, next); next++ {
			if next >= 1<<(32-n.Bits())/4 {
				return nil, false
			}
		}
		out[t], used[next] = next, true
	}
	return out, true
}

// DesireEgress adds to snap what egress needs: gateway addresses on the
// bridges of egress networks, each egress tenant's uplink, and the host's
// rules. Pure; uplinks comes from AssignUplinks.
func DesireEgress(snap *Snapshot, s State, uplinks map[string]int, n netip.Prefix, port uint16) {
	for _, net := range s.Networks {
		if !net.Egress {
			continue
		}
		o := snap.Tenants[net.Tenant]
		br := o.Links[bridgeName(net.VNI)]
		br.Addr = net.Gateway
		o.Links[br.Name] = br
	}
	for t, bridges := range egressTenants(s) {
		snap.Tenants[t].Uplink = &Uplink{Index: uplinks[t], HostLink: hostUplinkName(t), Rules: tenantRulesDigest(bridges),
			Ready: true, Bridges: strings.Join(bridges, ",")}
		snap.HostRules = hostRulesDigest(n, port)
		h := hostUplinkName(t)
		snap.HostLinks[h] = Link{Name: h, Kind: "veth", MTU: UplinkMTU, Up: true}
	}
}
