package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is the set of kernel objects Tenet owns on one host, in a form that
// can be compared: Desire computes the wanted one from a State, Observe reads
// the real one, Plan turns the difference into Ops. A scoped snapshot holds
// only the objects of a Scope, desired and observed alike.
type Snapshot struct {
	// Tenants maps a tenant to the objects in its namespace. A tenant with
	// an entry has a namespace, even if it holds nothing.
	Tenants map[string]*TenantObjects
	// HostLinks are Tenet's links in the host namespace: container veth ends
	// Docker has not moved yet, uplinks' host ends, and VXLAN devices a
	// crash left unmoved.
	HostLinks map[string]Link
	// HostRules names the host's rule set (the digest in its chains'
	// names) with forwarding on, or "" when no tenant has egress.
	HostRules string
	// HostElems are the elements of the host rule set's sets: the
	// infrastructure's denied and allowed ranges, the denied ports, and
	// the published ports (leading to tenants' uplinks).
	HostElems map[Elem]bool
	// HostFilter names Tenet's accepts in the host's iptables filter
	// table (a digest of their rules), or "": read and written only by a
	// full reconcile, and with the host's rule set.
	HostFilter string
	// Reserved are the sockets that hold published ports on the host.
	// They live in the process (Observe reports the ones this Datapath
	// holds): a restarted tenetd takes them again.
	Reserved map[Reservation]bool
	// HostUplinks maps the host end of each uplink to its index, as its
	// address says (observed only).
	HostUplinks map[string]int
	// UplinksUsed are the uplink indices whose host end has its address
	// (observed only; new uplinks get a free index).
	UplinksUsed map[int]bool
	// Crypt is the crypt namespace with its WireGuard device and peers;
	// nil: there is none (or, in a scoped snapshot, it is not in scope).
	Crypt *CryptObjects
	// hostAll is every desired host element, with which the rule set is
	// made anew (desired only).
	hostAll []Elem
}

// TenantObjects are the objects in one tenant's namespace.
type TenantObjects struct {
	Links  map[string]Link
	FDB    map[FDBEntry]bool
	Neigh  map[NeighEntry]bool
	Uplink *Uplink // nil: no egress
	// Elems are the elements of the egress rule set's sets (only with an
	// Uplink): which bridge may forward to which interface.
	Elems map[Elem]bool
	// Guards are the port guards of local endpoints, by port (tv<hash>).
	Guards map[string]Guard
	// Legacy lists rule tables of an earlier layout ("bridge tenet"),
	// observed only; Plan removes them.
	Legacy []string
}

// Uplink is a tenant's way out: a veth pair up0 (tenant) / tnu<hash> (host)
// on the Index-th /30 of the uplink net, a default route over it, forwarding
// on, and the rule set whose digest is Rules.
type Uplink struct {
	Index    int
	HostLink string
	Rules    string
	Ready    bool // forwarding on, the default route in place, both ends up
	// elems are all the tenant's desired rule set elements, with which the
	// rule set is made anew (desired only).
	elems []Elem
}

// same compares what Observe can see.
func (u *Uplink) same(o *Uplink) bool {
	return u.Index == o.Index && u.HostLink == o.HostLink && u.Rules == o.Rules && u.Ready == o.Ready
}

// Elem is an element of one of the sets of Tenet's rules, by set name and
// key in nft's notation ("br4097 . up0", "198.51.100.0-198.51.100.255",
// "udp . 7946").
type Elem struct {
	Set string
	Key string
}

// Guard is a local endpoint's port guard: a BPF program in a tc filter on
// the port's ingress that drops every frame the endpoint may not send (anything but IPv4, ARP
// and IPv6 as sent, so VLAN-tagged frames too; a source MAC other than
// MAC; an IPv4 source or ARP sender other than IPv4; with no IPv4, any
// IPv4 or ARP).
type Guard struct {
	Port string
	MAC  string
	IPv4 netip.Addr
}

func (g Guard) String() string {
	ip := "none"
	if g.IPv4.IsValid() {
		ip = g.IPv4.String()
	}
	return fmt.Sprintf("guard %s mac %s ip %s", g.Port, g.MAC, ip)
}

// Link is one interface, with the attributes Tenet sets.
type Link struct {
	Name   string
	Kind   string // "bridge", "vxlan" or "veth"
	MTU    int
	Master string // bridge it is a port of
	Up     bool

	// VXLAN only.
	VNI      uint32
	Port     uint16
	Local    netip.Addr
	Learning bool
	Proxy    bool
	// Encrypted: the device's UDP socket is in the crypt namespace, so
	// its traffic goes through WireGuard (crypt.go); read from the kernel
	// (the device's link-netns).
	Encrypted bool

	// Veth only: the container end's name and MAC, set at creation.
	Peer    string
	PeerMAC string

	// Addr is the bridge's address: the network's gateway, with egress.
	Addr netip.Prefix
	// MAC is the bridge's own MAC (bridgeMAC), fixed so that it does not
	// follow its ports as they come and go.
	MAC string

	// Network names the network in messages ("acme/web"); not observed.
	Network string
}

// FDBEntry is a static forwarding entry on a VXLAN device: frames for MAC go
// to the VTEP Dst. MAC 00:00:00:00:00:00 is the flood list.
type FDBEntry struct {
	Dev string
	MAC string
	Dst netip.Addr
}

// NeighEntry is a permanent neighbour (ARP or NDP) entry on a VXLAN device,
// which its proxy uses to answer requests locally.
type NeighEntry struct {
	Dev string
	IP  netip.Addr
	MAC string
}

const floodMAC = "00:00:00:00:00:00"

func newSnapshot() Snapshot {
	return Snapshot{Tenants: map[string]*TenantObjects{}, HostLinks: map[string]Link{}, HostElems: map[Elem]bool{},
		UplinksUsed: map[int]bool{}, Reserved: map[Reservation]bool{}, HostUplinks: map[string]int{}}
}

func newTenantObjects() *TenantObjects {
	return &TenantObjects{Links: map[string]Link{}, FDB: map[FDBEntry]bool{}, Neigh: map[NeighEntry]bool{},
		Elems: map[Elem]bool{}, Guards: map[string]Guard{}}
}

// String renders a link like iproute2 would create it.
func (l Link) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s type %s", l.Name, l.Kind)
	switch l.Kind {
	case "vxlan":
		fmt.Fprintf(&b, " id %d dstport %d", l.VNI, l.Port)
		if l.Local.IsValid() {
			fmt.Fprintf(&b, " local %s", l.Local)
		}
		if !l.Learning {
			b.WriteString(" nolearning")
		}
		if l.Proxy {
			b.WriteString(" proxy")
		}
		if l.Encrypted {
			b.WriteString(" encrypted")
		}
	case "veth":
		if l.Peer != "" {
			fmt.Fprintf(&b, " peer %s", l.Peer)
			if l.PeerMAC != "" {
				fmt.Fprintf(&b, " address %s", l.PeerMAC)
			}
		}
	}
	if l.MAC != "" {
		fmt.Fprintf(&b, " address %s", l.MAC)
	}
	fmt.Fprintf(&b, " mtu %d", l.MTU)
	if l.Addr.IsValid() {
		fmt.Fprintf(&b, " addr %s", l.Addr)
	}
	if l.Master != "" {
		fmt.Fprintf(&b, " master %s", l.Master)
	}
	if l.Up {
		b.WriteString(" up")
	}
	return b.String()
}

// String lists every object, one per line, sorted: a stable text to compare
// kernel states with.
func (s Snapshot) String() string {
	var lines []string
	for _, l := range s.HostLinks {
		lines = append(lines, "host: link "+l.observedString())
	}
	for t, o := range s.Tenants {
		lines = append(lines, "tenant "+t+": netns")
		for _, l := range o.Links {
			lines = append(lines, "tenant "+t+": link "+l.observedString())
		}
		for f := range o.FDB {
			lines = append(lines, fmt.Sprintf("tenant %s: fdb %s dev %s dst %s", t, f.MAC, f.Dev, f.Dst))
		}
		for n := range o.Neigh {
			lines = append(lines, fmt.Sprintf("tenant %s: neigh %s lladdr %s dev %s", t, n.IP, n.MAC, n.Dev))
		}
		for _, g := range o.Guards {
			lines = append(lines, "tenant "+t+": "+g.String())
		}
		for e := range o.Elems {
			lines = append(lines, "tenant "+t+": element "+e.Set+" { "+e.Key+" }")
		}
		for _, l := range o.Legacy {
			lines = append(lines, "tenant "+t+": legacy table "+l)
		}
		if u := o.Uplink; u != nil {
			lines = append(lines, fmt.Sprintf("tenant %s: uplink %d via %s rules %s ready %t", t, u.Index, u.HostLink, u.Rules, u.Ready))
		}
	}
	if s.HostRules != "" {
		lines = append(lines, "host: rules "+s.HostRules)
	}
	if c := s.Crypt; c != nil {
		lines = append(lines, "crypt: netns")
		if c.Device != (WGDevice{}) {
			lines = append(lines, "crypt: link "+c.Device.String())
		}
		for _, p := range c.Peers {
			lines = append(lines, "crypt: "+p.String())
		}
	}
	for e := range s.HostElems {
		lines = append(lines, "host: element "+e.Set+" { "+e.Key+" }")
	}
	if s.HostFilter != "" {
		lines = append(lines, "host: iptables filter "+s.HostFilter)
	}
	for r := range s.Reserved {
		lines = append(lines, "host: reserve "+r.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// observedString is String without what Observe cannot see (a veth's peer
// once Docker has moved it).
func (l Link) observedString() string {
	l.Peer, l.PeerMAC, l.Network = "", "", ""
	return l.String()
}
