package core

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// NetworkSpec is a tenant network as a front end asks for it on this host.
type NetworkSpec struct {
	Tenant string
	Name   string
	// VNI is the network's VXLAN identifier, unique in the cluster; zero:
	// derived from the key (rules.DeriveVNI).
	VNI    uint32
	Subnet netip.Prefix
	// Gateway is the same address on every host (each host's tenant router
	// answers it); invalid: the network has none and no egress.
	Gateway netip.Addr
	// Internal networks reach nothing but their own containers.
	Internal bool
	// MTU of the network; zero: the underlay's MTU minus the VXLAN overhead
	// (and WireGuard's, if Encrypted).
	MTU int
	// Encrypted networks carry their traffic between hosts only inside
	// WireGuard (overlay/crypt.go). The setting is part of the network's
	// cluster-wide definition: the same on every host.
	Encrypted bool
	// Ref is the front end's own handle for the network on this host
	// (Docker's network ID), unique on this host. The core only stores it.
	Ref string
}

// Key is the network's cluster-wide identity, "tenant/name".
func (s NetworkSpec) Key() string { return rules.Key(s.Tenant, s.Name) }

// Egress says whether the network's containers reach outside it through
// the host: it has a gateway and is not internal.
func (s NetworkSpec) Egress() bool { return !s.Internal && s.Gateway.IsValid() }

// Network is a network present on this host.
type Network struct {
	NetworkSpec
	Created time.Time
}

// EndpointSpec is a container's interface on a network, as a front end asks
// for it.
type EndpointSpec struct {
	// ID is unique on this host (Docker's endpoint ID).
	ID string
	// Network is the network's key, "tenant/name".
	Network string
	// IP is the container's address with the subnet's length.
	IP netip.Prefix
	// MAC of the container's interface; nil: derived from IP, so that a
	// container restarted with the same address keeps its MAC and its
	// peers' ARP caches stay right.
	MAC net.HardwareAddr
	// Names the container answers to on this network: its name first,
	// then its aliases (each a DNS name). A front end learns them from
	// its engine (Docker does not tell a driver) and sets them with
	// SetEndpointNames.
	Names []string
}

// Endpoint is an endpoint on this host.
type Endpoint struct {
	EndpointSpec
	// Netns is the network namespace the container's interface was moved
	// into (Docker's sandbox key); empty until the endpoint is attached.
	Netns string
	// NetnsSeen says the namespace has existed: Docker names it at Join,
	// but it appears only when the container's process starts, so only
	// one that was there and is gone means the container is gone.
	NetnsSeen bool
	// Ports are the endpoint's published ports (PublishPorts).
	Ports   []PortBinding
	Created time.Time
}

// normalize fills the defaults of s and checks it on its own: names, VNI,
// subnet, gateway and MTU (maxMTU: the most the underlay carries for this
// network, encrypted or not).
func (s *NetworkSpec) normalize(forbidden []rules.Forbidden, maxMTU int) error {
	if err := rules.Tenant(s.Tenant); err != nil {
		return err
	}
	if err := rules.Network(s.Name); err != nil {
		return err
	}
	if s.VNI == 0 {
		s.VNI = rules.DeriveVNI(s.Key())
	} else if err := rules.VNI(uint64(s.VNI)); err != nil {
		return err
	}
	if err := rules.Subnet(s.Subnet, forbidden); err != nil {
		return err
	}
	if s.Gateway.IsValid() {
		if err := hostAddress(s.Subnet, s.Gateway); err != nil {
			return fmt.Errorf("gateway %s: %w", s.Gateway, err)
		}
	}
	if s.MTU != 0 {
		if s.MTU < overlay.MinMTU {
			return fmt.Errorf("mtu %d: must be at least %d", s.MTU, overlay.MinMTU)
		}
		if maxMTU > 0 && s.MTU > maxMTU {
			if s.Encrypted {
				return fmt.Errorf("mtu %d: must be at most %d for an encrypted network (the underlay's MTU minus the VXLAN and WireGuard overhead)", s.MTU, maxMTU)
			}
			return fmt.Errorf("mtu %d: must be at most %d (the underlay's MTU minus %d bytes of VXLAN overhead)", s.MTU, maxMTU, overlay.VXLANOverhead)
		}
		if s.MTU > overlay.MaxMTU {
			return fmt.Errorf("mtu %d: must be at most %d", s.MTU, overlay.MaxMTU)
		}
	}
	return nil
}

// hostAddress checks that a is an address a host may have in p: inside it,
// neither its network nor its broadcast address.
func hostAddress(p netip.Prefix, a netip.Addr) error {
	switch {
	case !p.Contains(a):
		return fmt.Errorf("not in subnet %s", p)
	case a == p.Masked().Addr():
		return fmt.Errorf("is the network address of %s", p)
	case a.Is4() && a == broadcast(p):
		return fmt.Errorf("is the broadcast address of %s", p)
	}
	return nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

// MaxNames bounds the names of one endpoint.
const MaxNames = 32

// checkNames checks endpoint names: DNS names (labels of 1-63 letters,
// digits, '-' and '_', at most 253 bytes in all), at most MaxNames.
func checkNames(names []string) error {
	if len(names) > MaxNames {
		return fmt.Errorf("%d names: at most %d", len(names), MaxNames)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[strings.ToLower(n)] {
			return fmt.Errorf("name %q: given twice", n)
		}
		seen[strings.ToLower(n)] = true
		if len(n) == 0 || len(n) > 253 {
			return fmt.Errorf("name %q: must be 1-253 bytes", n)
		}
		for _, l := range strings.Split(n, ".") {
			if len(l) == 0 || len(l) > 63 {
				return fmt.Errorf("name %q: each label must be 1-63 bytes", n)
			}
			for _, r := range l {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
					return fmt.Errorf("name %q: only letters, digits, '-', '_' and '.'", n)
				}
			}
		}
	}
	return nil
}

// CheckName checks one endpoint name by the rules SetEndpointNames
// applies, for front ends that drop a bad name and keep the others.
func CheckName(name string) error { return checkNames([]string{name}) }

// normalize checks an endpoint against its network n and fills its MAC.
func (e *EndpointSpec) normalize(n NetworkSpec) error {
	if e.ID == "" {
		return errors.New("endpoint id: must not be empty")
	}
	if !e.IP.IsValid() {
		return errors.New("no IPv4 address")
	}
	if e.IP.Bits() != n.Subnet.Bits() {
		e.IP = netip.PrefixFrom(e.IP.Addr(), n.Subnet.Bits())
	}
	if err := hostAddress(n.Subnet, e.IP.Addr()); err != nil {
		return fmt.Errorf("address %s: %w", e.IP.Addr(), err)
	}
	if n.Gateway.IsValid() && e.IP.Addr() == n.Gateway {
		return fmt.Errorf("address %s: is the gateway of network %s", e.IP.Addr(), n.Key())
	}
	if err := checkNames(e.Names); err != nil {
		return err
	}
	if e.MAC == nil {
		e.MAC = overlay.DeriveMAC([]netip.Addr{e.IP.Addr()}, e.ID)
		return nil
	}
	switch {
	case len(e.MAC) != 6:
		return fmt.Errorf("mac %s: must be 6 bytes", e.MAC)
	case e.MAC[0]&1 != 0:
		return fmt.Errorf("mac %s: must be unicast", e.MAC)
	case slices.Equal([]byte(e.MAC), make([]byte, 6)):
		return fmt.Errorf("mac %s: must not be all zero", e.MAC)
	}
	return nil
}
