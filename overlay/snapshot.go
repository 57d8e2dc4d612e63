package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Snapshot is the set of kernel objects Tenet owns on one host, in a form that
// can be compared: Desire computes the wanted one from a State, Observe reads
// the real one, Plan turns the difference into Ops.
type Snapshot struct {
	// Tenants maps a tenant to the objects in its namespace. A tenant with
	// an entry has a namespace, even if it holds nothing.
	Tenants map[string]*TenantObjects
	// HostLinks are Tenet's links in the host namespace: container veth ends
	// Docker has not moved yet, uplinks' host ends, and VXLAN devices a
	// crash left unmoved.
	HostLinks map[string]Link
	// HostRules is the digest of Tenet's egress rules in the host namespace
	// (with forwarding on), or "" when no tenant has egress.
	HostRules string
}

// TenantObjects are the objects in one tenant's namespace.
type TenantObjects struct {
	Links  map[string]Link
	FDB    map[FDBEntry]bool
	Neigh  map[NeighEntry]bool
	Uplink *Uplink // nil: no egress
	// Spoof is the digest of the anti-spoofing rules for the local
	// endpoints ("" for none); spoofPorts are those rules' input (desired
	// only).
	Spoof      string
	spoofPorts []spoofPort
}

// Uplink is a tenant's way out: a veth pair up0 (tenant) / tnu<hash> (host)
// on the Index-th /30 of the uplink net, a default route over it, forwarding
// on, and the rule set whose digest is Rules.
type Uplink struct {
	Index    int
	HostLink string
	Rules    string
	Ready    bool   // forwarding on and the default route in place
	Bridges  string // comma-separated bridges let out; desired only (Rules digests it)
}

// same compares what Observe can see.
func (u *Uplink) same(o *Uplink) bool {
	return u.Index == o.Index && u.HostLink == o.HostLink && u.Rules == o.Rules && u.Ready == o.Ready
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

	// Veth only: the container end's name and MAC, set at creation.
	Peer    string
	PeerMAC string

	// Addr is the bridge's address: the network's gateway, with egress.
	Addr netip.Prefix

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
	return Snapshot{Tenants: map[string]*TenantObjects{}, HostLinks: map[string]Link{}}
}

func newTenantObjects() *TenantObjects {
	return &TenantObjects{Links: map[string]Link{}, FDB: map[FDBEntry]bool{}, Neigh: map[NeighEntry]bool{}}
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
	case "veth":
		if l.Peer != "" {
			fmt.Fprintf(&b, " peer %s", l.Peer)
			if l.PeerMAC != "" {
				fmt.Fprintf(&b, " address %s", l.PeerMAC)
			}
		}
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
	for name, l := range s.HostLinks {
		_ = name
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
		if o.Spoof != "" {
			lines = append(lines, "tenant "+t+": spoof rules "+o.Spoof)
		}
		if u := o.Uplink; u != nil {
			lines = append(lines, fmt.Sprintf("tenant %s: uplink %d via %s rules %s ready %t", t, u.Index, u.HostLink, u.Rules, u.Ready))
		}
	}
	if s.HostRules != "" {
		lines = append(lines, "host: rules "+s.HostRules)
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
