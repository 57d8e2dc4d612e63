package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
)

// State is what the datapath of one host should hold: the networks present on
// the host, its local endpoints, and the endpoints of other hosts on those
// networks. The driver builds it from Docker's calls and gossip; Reconcile
// makes the kernel match it.
type State struct {
	Networks  []Network
	Endpoints []Endpoint
	Remotes   []Remote
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

var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ErrInvalid is wrapped by every error about bad input to Reconcile.
var ErrInvalid = errors.New("invalid datapath state")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Validate checks the state as a whole before any kernel change: every
// field in range, every reference resolvable, nothing claimed twice.
func (s State) Validate() error {
	nets := map[uint32]Network{}
	for _, n := range s.Networks {
		if !tenantPattern.MatchString(n.Tenant) {
			return invalid("network %q: tenant %q: must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit", n.Name, n.Tenant)
		}
		if n.Name == "" {
			return invalid("network of tenant %q with vni %d: empty name", n.Tenant, n.VNI)
		}
		if n.VNI < MinVNI || n.VNI > MaxVNI {
			return invalid("network %s/%s: vni %d: must be %d-%d", n.Tenant, n.Name, n.VNI, MinVNI, MaxVNI)
		}
		if n.MTU != 0 && (n.MTU < MinMTU || n.MTU > MaxMTU) {
			return invalid("network %s/%s: mtu %d: must be %d-%d", n.Tenant, n.Name, n.MTU, MinMTU, MaxMTU)
		}
		if o, dup := nets[n.VNI]; dup {
			return invalid("network %s/%s: vni %d already used by network %s/%s", n.Tenant, n.Name, n.VNI, o.Tenant, o.Name)
		}
		if n.Egress && !n.Gateway.IsValid() {
			return invalid("network %s/%s: egress needs a gateway", n.Tenant, n.Name)
		}
		if n.Gateway.IsValid() {
			g := n.Gateway
			if !g.Addr().Is4() || g.Bits() > 30 || g.Addr() == g.Masked().Addr() {
				return invalid("network %s/%s: gateway %s: must be an IPv4 host address in a /30 or larger", n.Tenant, n.Name, g)
			}
		}
		for _, p := range n.Peers {
			if !p.IsValid() || p.IsUnspecified() || p.IsMulticast() {
				return invalid("network %s/%s: peer vtep %v: must be a unicast address", n.Tenant, n.Name, p)
			}
		}
		nets[n.VNI] = n
	}
	ids := map[string]bool{}
	tags := map[string]string{}              // endpointTag -> endpoint ID
	owners := map[uint32]map[string]string{} // vni -> "mac x" or "ip y" -> who
	claim := func(vni uint32, what, who string) error {
		if owners[vni] == nil {
			owners[vni] = map[string]string{}
		}
		if o, dup := owners[vni][what]; dup {
			return invalid("%s: %s already used by %s in vni %d", who, what, o, vni)
		}
		owners[vni][what] = who
		return nil
	}
	claimAll := func(vni uint32, mac net.HardwareAddr, ips []netip.Addr, who string) error {
		if err := claim(vni, "mac "+mac.String(), who); err != nil {
			return err
		}
		for _, ip := range ips {
			if err := claim(vni, "ip "+ip.String(), who); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range s.Endpoints {
		who := fmt.Sprintf("endpoint %q", e.ID)
		if e.ID == "" {
			return invalid("endpoint with empty id")
		}
		if ids[e.ID] {
			return invalid("%s: listed twice", who)
		}
		ids[e.ID] = true
		if o, dup := tags[endpointTag(e.ID)]; dup {
			return invalid("%s: interface names collide with endpoint %q's (%s)", who, o, BridgeVeth(e.ID))
		}
		tags[endpointTag(e.ID)] = e.ID
		if _, ok := nets[e.VNI]; !ok {
			return invalid("%s: vni %d: no such network on this host", who, e.VNI)
		}
		if err := checkIPs(who, e.IPs); err != nil {
			return err
		}
		if e.MAC != nil {
			if err := checkMAC(who, e.MAC); err != nil {
				return err
			}
		}
		if err := claimAll(e.VNI, e.macOrDerived(), e.IPs, who); err != nil {
			return err
		}
	}
	for _, r := range s.Remotes {
		who := fmt.Sprintf("remote endpoint %s at %v", r.MAC, r.VTEP)
		if _, ok := nets[r.VNI]; !ok {
			return invalid("%s: vni %d: no such network on this host", who, r.VNI)
		}
		if err := checkMAC(who, r.MAC); err != nil {
			return err
		}
		if !r.VTEP.IsValid() || r.VTEP.IsUnspecified() || r.VTEP.IsMulticast() {
			return invalid("%s: vtep %v: must be a unicast address", who, r.VTEP)
		}
		if err := checkIPs(who, r.IPs); err != nil {
			return err
		}
		if err := claimAll(r.VNI, r.MAC, r.IPs, who); err != nil {
			return err
		}
	}
	return nil
}

func checkMAC(who string, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return invalid("%s: mac %q: must be 6 bytes", who, mac.String())
	}
	if mac[0]&1 != 0 {
		return invalid("%s: mac %s: must be unicast", who, mac)
	}
	if slices.Equal(mac, make(net.HardwareAddr, 6)) {
		return invalid("%s: mac %s: must not be all zero", who, mac)
	}
	return nil
}

func checkIPs(who string, ips []netip.Addr) error {
	for _, ip := range ips {
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" {
			return invalid("%s: ip %v: must be a unicast address without zone", who, ip)
		}
	}
	return nil
}

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
	mac := net.HardwareAddr{0x02, 0x7e, 0, 0, 0, 0}
	var src []byte
	for _, ip := range ips {
		if ip.Is4() {
			b := ip.As4()
			src = b[:]
			break
		}
	}
	if src == nil && len(ips) > 0 {
		b := ips[0].As16()
		src = b[12:]
	}
	if src == nil {
		h := hash48(id)
		src = h[2:]
	}
	copy(mac[2:], src)
	return mac
}
