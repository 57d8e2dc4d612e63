package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// spoofPort is a local endpoint's port as the rules need it.
type spoofPort struct {
	Port string
	MAC  [6]byte
	IPv4 netip.Addr // invalid: the endpoint has none, so it may send no IPv4 or ARP
}

func spoofDigest(ports []spoofPort) string {
	parts := []string{"spoof-v2"}
	for _, p := range ports {
		parts = append(parts, fmt.Sprintf("%s %x %v", p.Port, p.MAC, p.IPv4))
	}
	return digest(parts...)
}

// desireSpoof sets each tenant's anti-spoofing rules for its local
// endpoints. Pure.
func desireSpoof(snap *Snapshot, s State) {
	tenantOf := map[uint32]string{}
	for _, n := range s.Networks {
		tenantOf[n.VNI] = n.Tenant
	}
	ports := map[string][]spoofPort{}
	for _, e := range s.Endpoints {
		p := spoofPort{Port: BridgeVeth(e.ID)}
		copy(p.MAC[:], e.macOrDerived())
		for _, ip := range e.IPs {
			if ip.Is4() {
				p.IPv4 = ip
				break
			}
		}
		ports[tenantOf[e.VNI]] = append(ports[tenantOf[e.VNI]], p)
	}
	for t, ps := range ports {
		slices.SortFunc(ps, func(a, b spoofPort) int { return strings.Compare(a.Port, b.Port) })
		o := snap.Tenants[t]
		o.Spoof, o.spoofPorts = spoofDigest(ps), ps
	}
}
