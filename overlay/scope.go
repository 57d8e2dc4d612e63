package overlay

import (
	"net"
)

// Scope names what changed since the kernel last matched the desired state.
// ReconcileScope computes the desired objects from the whole State, but
// reads, plans and changes only the kernel objects of the scope; nothing
// outside it is read or touched, so its cost does not grow with the rest
// of the host (another network's endpoints, the remotes of a network that
// did not change).
type Scope struct {
	// Tenants: everything of each tenant on this host, as Reconcile would
	// do it for that tenant alone: its namespace, networks, endpoints,
	// remote entries and egress.
	Tenants []string
	// Networks, by VNI: the bridge (with its gateway), the VXLAN device
	// with every forwarding and neighbour entry on it (the flood list from
	// Peers, and the network's remote endpoints), the network's part of
	// its tenant's egress (rule elements, the uplink and the host's rules),
	// and the tenant's namespace. Not the network's local endpoints: name
	// those in Endpoints (also when a change reaches their ports, as a new
	// MTU does). A network gone from the State is removed (found in the
	// kernel by its VNI); with the last network of a tenant, the tenant's
	// namespace goes too. A VNI that moves to another tenant needs the old
	// tenant named in Tenants.
	Networks []uint32
	// Endpoints, by ID: a local endpoint's veth pair and its port guard,
	// and its published ports: its tenant's egress with the tenant's port
	// map, and the host's port maps and reservations (ports are few;
	// those are read whole). An endpoint the State no longer has is looked
	// for by its port in each tenant's namespace: its link, or, when the
	// veth pair went with the container's namespace, its guard.
	Endpoints []string
	// Remotes: the forwarding entry of a remote endpoint's MAC and the
	// neighbour entries of its addresses. Removing one reads the
	// neighbour table of its network's VXLAN device (to find the
	// addresses it had); adding or changing one reads only its own
	// entries. The flood list is the network's (Networks).
	Remotes []RemoteKey
	// Infra: the elements of the host's rules that keep tenants from the
	// infrastructure (State.Infra).
	Infra bool
	// Crypt: the crypt namespace, its WireGuard device (with this host's
	// key) and its peers (State.Crypt). A scope naming Tenants or Networks
	// has them too: a network may be the first or last encrypted one.
	Crypt bool
}

// RemoteKey names a remote endpoint: its network's VNI and its MAC in
// canonical form (net.HardwareAddr.String: lower case, colons).
type RemoteKey struct {
	VNI uint32
	MAC string
}

// Key returns the remote's key.
func (r Remote) Key() RemoteKey { return RemoteKey{VNI: r.VNI, MAC: r.MAC.String()} }

// Empty reports whether the scope names nothing.
func (sc Scope) Empty() bool {
	return len(sc.Tenants) == 0 && len(sc.Networks) == 0 && len(sc.Endpoints) == 0 && len(sc.Remotes) == 0 && !sc.Infra && !sc.Crypt
}

// validate checks the scope's own fields.
func (sc Scope) validate() error {
	for _, t := range sc.Tenants {
		if !validTenant(t) {
			return invalid("scope: tenant %q: must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit", t)
		}
	}
	for _, v := range sc.Networks {
		if v < MinVNI || v > MaxVNI {
			return invalid("scope: vni %d: must be %d-%d", v, MinVNI, MaxVNI)
		}
	}
	for _, id := range sc.Endpoints {
		if id == "" {
			return invalid("scope: endpoint with empty id")
		}
	}
	for _, k := range sc.Remotes {
		if k.VNI < MinVNI || k.VNI > MaxVNI {
			return invalid("scope: remote %s: vni %d: must be %d-%d", k.MAC, k.VNI, MinVNI, MaxVNI)
		}
		m, err := net.ParseMAC(k.MAC)
		if err != nil || m.String() != k.MAC {
			return invalid("scope: remote mac %q in vni %d: must be 6 bytes in canonical form (02:7e:0a:01:00:05)", k.MAC, k.VNI)
		}
		if err := checkMAC("scope: remote", m); err != nil {
			return err
		}
	}
	return nil
}
