package overlay

import (
	"net/netip"
)

// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer IPv4 20, UDP 8,
// VXLAN 8 and the inner Ethernet header 14. Over IPv6 it is 20 more.
const VXLANOverhead = 50

// Host describes the host a desired snapshot is for.
type Host struct {
	VTEP        netip.Addr   // this host's underlay address
	Port        uint16       // the VXLAN UDP port
	UnderlayMTU int          // MTU of the interface holding VTEP
	UplinkNet   netip.Prefix // Config.UplinkNet
	// Filter says the host has iptables: Tenet then adds its accepts to
	// the filter table's FORWARD chain (a host firewall, or Docker, may
	// drop forwarded packets by default).
	Filter bool
	// WireGuardPort is where encrypted traffic arrives (Config.WireGuardPort).
	WireGuardPort uint16
}

// MaxMTU is the largest network MTU the underlay carries without
// fragmenting: its MTU less VXLAN's overhead (20 more over IPv6). It is
// also the default MTU of a network.
func (h Host) MaxMTU() int {
	m := h.UnderlayMTU - VXLANOverhead
	if h.VTEP.Is6() && !h.VTEP.Is4In6() {
		m -= 20
	}
	return m
}

// Desire computes the kernel objects that realise s on host h. A tenant with
// egress keeps the uplink index it has in observed, else gets the lowest
// free one; ok is false if the uplink net is full. Pure; s must be valid
// (State.Validate).
func Desire(s State, h Host, observed Snapshot) (snap Snapshot, ok bool) {
	return desire(s, netIndex(s), h, viewAll, observed)
}

func netIndex(s State) map[uint32]*Network {
	nets := make(map[uint32]*Network, len(s.Networks))
	for i := range s.Networks {
		nets[s.Networks[i].VNI] = &s.Networks[i]
	}
	return nets
}

// desire is Desire limited to the objects in v: it reads the parts of s
// that v needs and skips the rest (an endpoint's scope never looks at the
// remotes).
func desire(s State, nets map[uint32]*Network, h Host, v *view, observed Snapshot) (Snapshot, bool) {
	snap := newSnapshot()
	tenant := func(name string) *TenantObjects {
		o := snap.Tenants[name]
		if o == nil {
			o = newTenantObjects()
			snap.Tenants[name] = o
		}
		return o
	}
	mtuOf := func(n *Network) int {
		if n.MTU != 0 {
			return n.MTU
		}
		if n.Encrypted {
			return h.MaxMTUEncrypted()
		}
		return h.MaxMTU()
	}
	if v.hasCrypt() {
		snap.Crypt = desireCrypt(s, h)
	}
	for i := range s.Networks {
		n := &s.Networks[i]
		if !v.hasNS(n.Tenant) {
			continue
		}
		o := tenant(n.Tenant)
		label := n.Tenant + "/" + n.Name
		br, vx := bridgeName(n.VNI), vxlanName(n.VNI)
		if v.hasLink(n.Tenant, br) {
			l := Link{Name: br, Kind: "bridge", MTU: mtuOf(n), Up: true, MAC: bridgeMAC(n.VNI), Network: label}
			if n.Egress {
				l.Addr = n.Gateway
			}
			o.Links[br] = l
		}
		if v.hasLink(n.Tenant, vx) {
			o.Links[vx] = Link{Name: vx, Kind: "vxlan", MTU: mtuOf(n), Master: br, Up: true, VNI: n.VNI, Port: h.Port,
				Local: h.VTEP, Learning: false, Proxy: true, Encrypted: n.Encrypted, Network: label}
		}
		if v.hasAllEntries(n.Tenant, vx) {
			for _, p := range n.Peers {
				if p != h.VTEP {
					o.FDB[FDBEntry{Dev: vx, MAC: floodMAC, Dst: p}] = true
				}
			}
		}
	}
	if v.all || len(v.whole) > 0 || len(v.eps) > 0 {
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			n := nets[e.VNI]
			t := n.Tenant
			if !v.all && !v.whole[t] && v.eps[e.ID] != t {
				continue
			}
			o := tenant(t)
			tv := BridgeVeth(e.ID)
			mac := e.macOrDerived().String()
			o.Links[tv] = Link{Name: tv, Kind: "veth", MTU: mtuOf(n), Master: bridgeName(e.VNI), Up: true,
				Peer: ContainerVeth(e.ID), PeerMAC: mac, Network: n.Tenant + "/" + n.Name}
			g := Guard{Port: tv, MAC: mac}
			for _, ip := range e.IPs {
				if ip.Is4() {
					g.IPv4 = ip
					break
				}
			}
			o.Guards[tv] = g
		}
	}
	if v.hasRemotes() {
		for i := range s.Remotes {
			r := &s.Remotes[i]
			n := nets[r.VNI]
			t := n.Tenant
			if !v.all && !v.whole[t] && v.nets[r.VNI] != t && v.remotes[binKey(r.VNI, r.MAC)] != t {
				continue
			}
			if r.VTEP == h.VTEP {
				continue // a stale record of our own; never tunnel to ourselves
			}
			o := tenant(t)
			vx := vxlanName(r.VNI)
			mac := r.MAC.String()
			if e := (FDBEntry{Dev: vx, MAC: mac, Dst: r.VTEP}); v.hasFDB(t, e) {
				o.FDB[e] = true
			}
			if v.hasAllEntries(t, vx) {
				o.FDB[FDBEntry{Dev: vx, MAC: floodMAC, Dst: r.VTEP}] = true
			}
			for _, ip := range r.IPs {
				if e := (NeighEntry{Dev: vx, IP: ip, MAC: mac}); v.hasNeigh(t, e) {
					o.Neigh[e] = true
				}
			}
		}
	}
	return snap, desireEgress(&snap, s, nets, h, v, observed)
}
