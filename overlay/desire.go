package overlay

import (
	"net/netip"
)

// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 20, UDP 8,
// VXLAN 8 and the inner Ethernet header 14. Over IPv6 it is 20 more.
const VXLANOverhead = 50

// Desire computes the kernel objects that realise s on a host whose VTEP is
// vtep, with VXLAN UDP port port and an underlay interface of MTU underlayMTU.
// It is pure. s must be valid (State.Validate).
func Desire(s State, vtep netip.Addr, port uint16, underlayMTU int) Snapshot {
	snap := newSnapshot()
	defaultMTU := underlayMTU - VXLANOverhead
	if vtep.Is6() && !vtep.Is4In6() {
		defaultMTU -= 20
	}
	type netInfo struct {
		tenant string
		mtu    int
	}
	nets := map[uint32]netInfo{}
	tenant := func(name string) *TenantObjects {
		o := snap.Tenants[name]
		if o == nil {
			o = newTenantObjects()
			snap.Tenants[name] = o
		}
		return o
	}
	for _, n := range s.Networks {
		mtu := n.MTU
		if mtu == 0 {
			mtu = defaultMTU
		}
		nets[n.VNI] = netInfo{n.Tenant, mtu}
		o := tenant(n.Tenant)
		label := n.Tenant + "/" + n.Name
		br, vx := bridgeName(n.VNI), vxlanName(n.VNI)
		o.Links[br] = Link{Name: br, Kind: "bridge", MTU: mtu, Up: true, Network: label}
		o.Links[vx] = Link{Name: vx, Kind: "vxlan", MTU: mtu, Master: br, Up: true, VNI: n.VNI, Port: port,
			Local: vtep, Learning: false, Proxy: true, Network: label}
		for _, p := range n.Peers {
			if p != vtep {
				o.FDB[FDBEntry{Dev: vx, MAC: floodMAC, Dst: p}] = true
			}
		}
	}
	for _, e := range s.Endpoints {
		ni := nets[e.VNI]
		o := tenant(ni.tenant)
		tv := BridgeVeth(e.ID)
		o.Links[tv] = Link{Name: tv, Kind: "veth", MTU: ni.mtu, Master: bridgeName(e.VNI), Up: true,
			Peer: ContainerVeth(e.ID), PeerMAC: e.macOrDerived().String(), Network: o.Links[bridgeName(e.VNI)].Network}
	}
	for _, r := range s.Remotes {
		o := tenant(nets[r.VNI].tenant)
		vx := vxlanName(r.VNI)
		if r.VTEP == vtep {
			continue // a stale record of our own; never tunnel to ourselves
		}
		mac := r.MAC.String()
		o.FDB[FDBEntry{Dev: vx, MAC: mac, Dst: r.VTEP}] = true
		o.FDB[FDBEntry{Dev: vx, MAC: floodMAC, Dst: r.VTEP}] = true
		for _, ip := range r.IPs {
			o.Neigh[NeighEntry{Dev: vx, IP: ip, MAC: mac}] = true
		}
	}
	desireSpoof(&snap, s)
	return snap
}
