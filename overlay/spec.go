package overlay

import (
	"fmt"
	"net"
	"net/netip"
)

// State is what the datapath of one host should hold: the networks present on
// the host, its local endpoints, the endpoints of other hosts on those
// networks, and what tenants must not reach. The driver builds it from
// Docker's calls and gossip; Reconcile makes the kernel match it.
type State struct {
	Networks  []Network
	Endpoints []Endpoint
	Remotes   []Remote
	Infra     Infra
	// Crypt is what encrypted networks need: this host's WireGuard key
	// and its peers' (crypt.go).
	Crypt Crypt
}

// Infra is the cluster's own infrastructure, which no tenant may reach
// through its egress: enforced in the host namespace on every packet from
// a tenant uplink, forwarded or addressed to the host itself. The VXLAN
// port (Config.Port, UDP) is always denied, and so are the cloud metadata
// address and the host's own addresses; IPv6 entries need no rule, as
// tenants have no IPv6 way out.
type Infra struct {
	// Deny lists the underlay: every member's VTEP or bind address (as a
	// /32) and the underlay subnets. Updating it is cheap: the prefixes
	// are elements of one set.
	Deny []netip.Prefix
	// Ports are denied toward every destination: gossip's port, TCP and
	// UDP.
	Ports []L4Port
	// Allow wins over everything above: destinations an operator lets
	// tenants reach (also on the host itself).
	Allow []netip.Prefix
}

// L4Port is a transport protocol and port.
type L4Port struct {
	Proto Proto
	Port  uint16
}

func (p L4Port) String() string { return fmt.Sprintf("%s . %d", p.Proto, p.Port) }

// Proto is an IP protocol number: TCP or UDP.
type Proto uint8

// The protocols an L4Port may name.
const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// Network is one tenant network present on this host.
type Network struct {
	Tenant string // names the tenant's namespace on this host
	Name   string // unique within the tenant; for messages
	VNI    uint32 // unique in the cluster
	// MTU of the bridge, the VXLAN device and every endpoint's veth. Zero:
	// the underlay interface's MTU minus the VXLAN overhead.
	MTU int
	// Peers are the VTEPs of the other hosts that have this network. Broadcast
	// and unknown-unicast frames go to each of them (head-end replication).
	Peers []netip.Addr
	// Gateway is the network's gateway address with the subnet's length
	// (10.1.0.1/24), the same on every host. With Egress it is put on the
	// bridge, and the tenant's router NATs the network's traffic out
	// through the host; without Egress (--internal) nothing leaves.
	Gateway netip.Prefix
	Egress  bool
	// Encrypted: the network's VXLAN traffic between hosts goes through
	// WireGuard only (crypt.go). Its MTU is then at most the underlay's
	// less both overheads (Host.MaxMTUEncrypted), which is its default too.
	Encrypted bool
}

// Endpoint is a local endpoint: a veth pair whose one end is on the network's
// bridge and whose other end is handed to the container.
type Endpoint struct {
	ID  string // unique on this host; Docker's endpoint ID
	VNI uint32 // the network it belongs to
	// MAC of the container's interface. Nil: derived from the first IPv4
	// address (else the first address, else the ID), so it is stable.
	MAC net.HardwareAddr
	IPs []netip.Addr
	// Ports are the endpoint's published ports: traffic to a host port
	// goes to the endpoint's IPv4 address. Only on a network with
	// egress: the published port's path in is its uplink.
	Ports []Port
}

// Port is a published port: HostPort (of Proto) on the host's address
// HostIP, or on every address of the host if HostIP is unset or 0.0.0.0,
// reaches Port on the endpoint. A host port of one protocol belongs to
// at most one endpoint and container port on a host.
type Port struct {
	Proto    Proto
	HostIP   netip.Addr
	HostPort uint16
	Port     uint16
}

// anyHost reports whether p is published on every address of the host.
func (p Port) anyHost() bool { return !p.HostIP.IsValid() || p.HostIP.IsUnspecified() }

// Reservation is the host socket that holds p's host port against other
// software: HostIP is 0.0.0.0 for every address.
func (p Port) Reservation() Reservation {
	ip := p.HostIP
	if p.anyHost() {
		ip = netip.IPv4Unspecified()
	}
	return Reservation{Proto: p.Proto, IP: ip, Port: p.HostPort}
}

func (p Port) String() string {
	return fmt.Sprintf("%s %s -> %d", p.Proto, netip.AddrPortFrom(p.Reservation().IP, p.HostPort), p.Port)
}

// Reservation is a socket bound (never listening, never read) to a host
// address and port, so that no other program (a host service, Docker's
// own port publishing) can take a published port, and so that a port
// already taken is refused.
type Reservation struct {
	Proto Proto
	IP    netip.Addr // 0.0.0.0: every address
	Port  uint16
}

func (r Reservation) String() string {
	return fmt.Sprintf("%s %s", r.Proto, netip.AddrPortFrom(r.IP, r.Port))
}

// Remote is an endpoint on another host.
type Remote struct {
	VNI  uint32
	MAC  net.HardwareAddr
	IPs  []netip.Addr
	VTEP netip.Addr // the underlay address of the host it lives on
}

// Limits of the inputs.
const (
	MinVNI = 1
	MaxVNI = 1<<24 - 1
	MinMTU = 1280 // IPv6's minimum; below it IPv6 endpoints break
	MaxMTU = 9000
)

// macOrDerived is the endpoint's MAC: the given one, or one derived from its
// first IPv4 address (02:7e:a.b.c.d), else its first address, else its ID.
func (e Endpoint) macOrDerived() net.HardwareAddr {
	if e.MAC != nil {
		return e.MAC
	}
	return DeriveMAC(e.IPs, e.ID)
}

// DeriveMAC returns a locally administered unicast MAC that depends only on
// ips (the first IPv4 one, else the first one) or, without addresses, on id.
func DeriveMAC(ips []netip.Addr, id string) net.HardwareAddr {
	mac := deriveMAC(ips, id)
	return mac[:]
}

// macArray is macOrDerived as an array, allocating nothing; ok is false
// for a given MAC that is not 6 bytes long.
func (e *Endpoint) macArray() (mac [6]byte, ok bool) {
	switch {
	case e.MAC == nil:
		return deriveMAC(e.IPs, e.ID), true
	case len(e.MAC) == 6:
		return [6]byte(e.MAC), true
	}
	return mac, false
}

func deriveMAC(ips []netip.Addr, id string) [6]byte {
	mac := [6]byte{0x02, 0x7e}
	for _, ip := range ips {
		if ip.Is4() {
			b := ip.As4()
			copy(mac[2:], b[:])
			return mac
		}
	}
	if len(ips) > 0 {
		b := ips[0].As16()
		copy(mac[2:], b[12:])
		return mac
	}
	h := hash48(id)
	copy(mac[2:], h[2:])
	return mac
}
