package overlay

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Published ports (firewall_linux.go shows the rules). A packet for a
// published host port is translated twice: in the host namespace its
// destination becomes the tenant's end of its uplink (the port stays),
// and in the tenant's namespace the container's address and port. Each
// translation is one element of a map, so publishing a port adds two
// elements (one in a host map, one in its tenant's) and one reserved
// socket, and nothing else changes. Two tenants with the same container
// address never meet: each host port leads to one uplink, and each
// uplink to one tenant.
//
// A host port of a protocol belongs to at most one endpoint on a host
// (checkPortClaims), so the tenant's map needs only the protocol and the
// host port as its key.

// PortInUseError says a published port's reservation failed: another
// program (or this host port on another address) holds it, or its host
// address is none of the host's (NotLocal).
type PortInUseError struct {
	Res      Reservation
	NotLocal bool
	Err      error
}

func (e *PortInUseError) Error() string {
	if e.NotLocal {
		return fmt.Sprintf("%s port %d on %s: %s is not an address of this host", e.Res.Proto, e.Res.Port, e.Res.IP, e.Res.IP)
	}
	return fmt.Sprintf("%s port %d on %s is in use on this host", e.Res.Proto, e.Res.Port, e.Res.IP)
}

func (e *PortInUseError) Unwrap() error { return e.Err }

// Names of the maps that publish ports.
const (
	setPub    = "pub"    // tenant: proto . host port : container ip . port
	setPubAny = "pubany" // host: proto . host port : the tenant's uplink address
	setPubIP  = "pubip"  // host: proto . host ip . host port : the tenant's uplink address
)

// pubElem is a port's element of its tenant's map.
func pubElem(ip netip.Addr, p Port) Elem {
	return Elem{Set: setPub, Key: fmt.Sprintf("%s . %d : %s . %d", p.Proto, p.HostPort, ip, p.Port)}
}

// hostPubElem is a port's element of the host's maps, leading to the
// tenant end of an uplink.
func hostPubElem(p Port, uplink netip.Addr) Elem {
	if p.anyHost() {
		return Elem{Set: setPubAny, Key: fmt.Sprintf("%s . %d : %s", p.Proto, p.HostPort, uplink)}
	}
	return Elem{Set: setPubIP, Key: fmt.Sprintf("%s . %s . %d : %s", p.Proto, p.HostIP, p.HostPort, uplink)}
}

// elemPort returns the protocol and host port an element of a port map
// publishes; ok is false for other elements.
func elemPort(e Elem) (Proto, uint16, bool) {
	key, _, _ := strings.Cut(e.Key, " : ")
	f := strings.Split(key, " . ")
	var ps string
	switch {
	case (e.Set == setPub || e.Set == setPubAny) && len(f) == 2:
		ps = f[1]
	case e.Set == setPubIP && len(f) == 3:
		ps = f[2]
	default:
		return 0, 0, false
	}
	proto, ok := parseProto(f[0])
	n, err := strconv.ParseUint(ps, 10, 16)
	if !ok || err != nil {
		return 0, 0, false
	}
	return proto, uint16(n), true
}

func parseProto(s string) (Proto, bool) {
	switch s {
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	}
	return 0, false
}

// published is a port with the tenant whose uplink it leads to.
type published struct {
	tenant string
	ip     netip.Addr // the endpoint's
	port   Port
}

// publishedPorts lists the published ports of the endpoints on egress
// networks, sorted. Pure.
func publishedPorts(s State, nets map[uint32]*Network) []published {
	var out []published
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if len(e.Ports) == 0 {
			continue
		}
		n := nets[e.VNI]
		ip := e.ipv4()
		if n == nil || !n.Egress || !ip.IsValid() {
			continue
		}
		for _, p := range e.Ports {
			out = append(out, published{tenant: n.Tenant, ip: ip, port: p})
		}
	}
	slices.SortFunc(out, func(a, b published) int {
		return cmp.Or(cmp.Compare(a.port.Proto, b.port.Proto), cmp.Compare(a.port.HostPort, b.port.HostPort),
			a.port.Reservation().IP.Compare(b.port.Reservation().IP))
	})
	return out
}

// desirePorts adds the port objects of the host to snap: the host maps'
// elements (made with the host rule set too, in hostAll) and the
// reservations. uplink gives the index of a tenant's uplink; a tenant
// without one yet gets its host elements once it has one.
func desirePorts(snap *Snapshot, pubs []published, h Host, uplink func(tenant string) (int, bool)) {
	for _, p := range pubs {
		snap.Reserved[p.port.Reservation()] = true
		i, ok := uplink(p.tenant)
		if !ok {
			continue
		}
		_, end := uplinkAddrs(h.UplinkNet, i)
		e := hostPubElem(p.port, end.Addr())
		snap.HostElems[e] = true
		snap.hostAll = append(snap.hostAll, e)
	}
}

// tenantPubElems are the elements of tenant t's port map, sorted.
func tenantPubElems(pubs []published, t string) []Elem {
	seen := map[Elem]bool{}
	var out []Elem
	for _, p := range pubs {
		if p.tenant != t {
			continue
		}
		if e := pubElem(p.ip, p.port); !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// Tenet's accepts in the host's iptables filter table, in a chain of its
// own that the FORWARD chain jumps to (firewall_linux.go says why). As
// iptables -S prints them.
const filterChain = "TENET-FORWARD"

var filterRules = []string{
	"-A " + filterChain + " -i " + hostUplinkPref + "+ -j ACCEPT",
	"-A " + filterChain + " -o " + hostUplinkPref + "+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
	"-A " + filterChain + " -o " + hostUplinkPref + "+ -m conntrack --ctstate DNAT -j ACCEPT",
}

// filterDigest names the wanted accepts.
func filterDigest() string { return digest(append([]string{"filter-v1"}, filterRules...)...) }
