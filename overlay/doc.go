// Package overlay owns every kernel object Tenet creates on a host, and is
// the only package that talks netlink (the e2e testbed aside).
//
// Per host, each tenant present gets its own network namespace (prefix +
// tenant name, pinned under /run/netns): the tenant's private router, so
// tenants may use the same subnets. It has no addresses and forwards
// nothing, unless a network has egress: then that network's gateway is on
// its bridge, an uplink veth leads to the host, and nf_tables rules let
// the router forward only from egress networks out to the host (NATed),
// never between networks (egress.go, firewall_linux.go). Per endpoint port,
// bridge rules drop frames with a source MAC, IPv4 source or ARP sender
// other than the endpoint's own (spoof.go). In it, each network (VNI) is a bridge br<vni> and a VXLAN
// device vx<vni> (learning off, ARP/NDP proxy on), which is created in the
// host namespace, so that its UDP socket stays on the underlay, and then
// moved in. Each local endpoint is a veth pair: tv<hash> on the bridge, and
// tc<hash> in the host namespace for Docker to move into the container.
// Remote endpoints are static FDB entries (MAC -> VTEP) and permanent
// neighbour entries (IP -> MAC) on the VXLAN device; broadcast and unknown
// unicast go to every peer VTEP of the network (00:00:00:00:00:00 entries).
// ARP and NDP are answered by the VXLAN proxy and never cross the underlay;
// a request for an address with no entry is dropped.
//
// The datapath is driven by desired state: State (validated as a whole
// before any change) -> Desire (pure) -> Snapshot; Observe reads the kernel
// into a Snapshot; Plan (pure) lists the Ops between the two; Reconcile
// applies them, undoing its own creations if one fails. Matching objects are
// never touched, so a restarted daemon adopts the kernel state without
// interrupting traffic.
//
// Datapath is safe for concurrent use; Reconcile calls are serialized. It
// never calls netns.Set on a shared goroutine: namespace-bound work runs on
// a locked, fresh OS thread (nsDo).
package overlay
