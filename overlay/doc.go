// Package overlay owns every kernel object Tenet creates on a host, and is
// the only package that talks netlink (the e2e testbed aside).
//
// Per host, each tenant present gets its own network namespace (prefix +
// tenant name, pinned under /run/netns): the tenant's private router, so
// tenants may use the same subnets. In it, each network (VNI) is a bridge
// br<vni> and a VXLAN device vx<vni> (learning off, ARP/NDP proxy on),
// which is created in the host namespace, so that its UDP socket stays on
// the underlay, and then moved in. Each local endpoint is a veth pair:
// tv<hash> on the bridge, and tc<hash> in the host namespace for Docker to
// move into the container. Remote endpoints are static FDB entries (MAC ->
// VTEP) and permanent neighbour entries (IP -> MAC) on the VXLAN device;
// broadcast and unknown unicast go to every peer VTEP of the network
// (00:00:00:00:00:00 entries). ARP and NDP are answered by the VXLAN proxy
// and never cross the underlay; a request for an address with no entry is
// dropped.
//
// An encrypted network (Network.Encrypted; crypt.go) differs in one place:
// its VXLAN device is made in the crypt namespace (prefix + "_crypt")
// instead of the host's, so its UDP socket sits where the only way out is
// the WireGuard device tnwg0 (itself made in the host namespace, so that
// WireGuard's own socket stays on the underlay, and moved in). Its frames
// leave the host only inside WireGuard, to peers whose allowed IP is their
// VTEP; State.Crypt carries this host's private key (kept in the kernel
// only) and its peers' public keys.
//
// Rules (firewall_linux.go, which shows them in nft syntax) are laid out so
// that adding an endpoint, a network or an infrastructure member adds one
// small chain or a few set elements, never a rewrite of a table:
//   - Each local endpoint's port has a guard (not in nf_tables: a BPF
//     program in a tc filter on the port's ingress, guard_linux.go) that
//     drops frames with a source MAC, IPv4 source or ARP sender other
//     than the endpoint's own, and any frame whose ethertype as sent is not
//     IPv4, ARP or IPv6, so VLAN-tagged (802.1Q, 802.1ad) frames too.
//   - A tenant with an egress network (one with a gateway, not --internal)
//     gets its gateway on that network's bridge, an uplink veth to the host
//     and a rule set whose set "pairs" lists, per network, where its bridge
//     may forward: out to the host, never between networks.
//   - The host exempts Tenet's tunnels (the VXLAN port) from conntrack; when
//     any tenant has egress, it NATs the uplinks out and keeps tenants from
//     the cluster's infrastructure (State.Infra: the members'
//     addresses, the underlay subnets, gossip's port; the VXLAN port
//     always), from the host itself and from Docker's bridge networks,
//     unless an operator allows a destination. It adds accepts for the
//     uplinks to the host's iptables FORWARD chain, whose policy may be
//     drop (Docker sets it so).
//   - A published port (Endpoint.Ports) is one element of a host map
//     (host port -> the tenant's uplink) and one of the tenant's (host
//     port -> container address and port): a connection to the host's
//     port is translated twice, and only such connections enter a tenant
//     from outside. Its host port is held by a socket the Datapath binds
//     (without SO_REUSEADDR, never listening), so a port another program
//     holds is refused before any rule leads to it (PortInUseError), and
//     no other program takes it meanwhile.
//   - The name resolver (package resolver) gets its sockets from here, not
//     from the planned state: ListenResolver puts ResolverAddr on a tenant
//     namespace's lo and binds UDP 53 there (the tenant's input rules let
//     its bridges reach it); RedirectHostResolver makes table ip tenet-dns
//     in the host namespace, which sends Docker's own networks' queries to
//     that address straight to the upstream server. Uplink /30s never hold
//     ResolverAddr. TapDockerDNS puts table ip tenet-dns-answers in a
//     container's own namespace (the one object Tenet makes there besides
//     the interface): the UDP answers of Docker's embedded DNS
//     (127.0.0.11:53) go to nfnetlink queue 0, which tenetd binds and
//     which the kernel bypasses while nobody does (xtables' NFQUEUE
//     target, revision 3, through nft_compat: this kernel lacks nf_tables'
//     own queue expression). It goes with the namespace, or with
//     UntapDockerDNS.
//
// The datapath is driven by desired state: State (validated before any
// change) -> Desire (pure) -> Snapshot; Observe reads the kernel into a
// Snapshot; Plan (pure) lists the Ops between the two; Reconcile applies
// them, undoing its own creations if one fails. Matching objects are never
// touched, so a restarted daemon adopts the kernel state without
// interrupting traffic. ReconcileScope does the same for the objects of a
// Scope only (tenants, networks, endpoints, remotes, infrastructure): it
// computes their desired form from the whole State but reads and changes
// nothing else, each object by its name or key, so its cost does not grow
// with the rest of the host. Reconcile is for start-up and periodic repair.
// Diagnose runs the same observation and plan and changes nothing: it tells
// each op Reconcile would run as a Finding (an object missing, stale or
// differing, and the op that fixes it), for tenetctl diagnose.
//
// The reservations live in the process: Close releases them, and a new
// Datapath takes them back at its first reconcile while the rules, in the
// kernel, keep the ports working.
//
// Datapath is safe for concurrent use; reconciles are serialized, and each
// scoped one applies only its scope, so concurrent callers may each pass
// the State they saw. It never calls netns.Set on a shared goroutine:
// namespace-bound work runs on a locked, fresh OS thread (nsDo).
package overlay
