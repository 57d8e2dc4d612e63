// Package resolver answers the DNS queries of a tenant's containers with
// the names of every container on the same tenant network, on any host,
// and forwards the rest to the host's upstream servers.
//
// It owns a UDP and a TCP socket per tenant that has a network on this
// host, in the tenant's own namespace at overlay.ResolverAddr:53 (the
// overlay package opens them there; that TCP socket's answers reach
// networks with egress only, which have a route back, so each network
// without egress that has a container here gets a TCP socket bound to its
// bridge as well). Containers on Docker's own networks get the
// engine's "dns" setting too: in the host namespace, queries to that
// address go straight to the first upstream server (a DNAT the overlay
// package installs), so the setting costs them nothing; where that cannot
// be (a loopback upstream), a socket there forwards them. A query comes from the
// local endpoint of the tenant that has its source address (a tenant's
// subnets never overlap, and port guards pin each container's source
// address), and is answered from the names of every network of that
// tenant the container is on, as Docker answers a container on several
// networks; a source that is no endpoint of the tenant is refused. No
// query of another tenant ever reaches a tenant's socket: it lives in
// that tenant's namespace.
//
// This host's names are read when a query comes, from the core (with the
// names the driver's Namer learnt from the engine); other hosts' (with
// the names their hosts published) are indexed per network from gossip
// and the index is dropped at gossip's next event for that network, so
// a removed container stops resolving as soon as its removal reaches this
// host. A network answers, for each of
// its endpoints' names N (container name, then aliases): N and
// N.<Docker network name> (A; AAAA and other types get an empty answer),
// and PTR for the endpoint's address. Names nobody on the network has are
// forwarded upstream when one of the container's networks has egress, and
// refused otherwise (an internal network reaches nothing outside, its
// names included).
//
// Docker's embedded DNS answers the names its engine holds itself, so a
// name shared by a local container and other hosts' (an alias) would get
// the local addresses only. Its answers therefore pass through tenetd on
// their way to each container on a network where a name of a container
// here is another host's too (overlay's DNS tap, one per sandbox, kept by
// Run like the sockets; other containers' answers never leave the
// kernel): an answer for such a
// name gets the other hosts' addresses of the network Docker answered
// from (Widen); every other answer goes on unchanged. The tap fails open:
// while tenetd is down the kernel lets the answers through as Docker made
// them.
//
// It never writes state, never touches the kernel itself (overlay opens
// its sockets) and never speaks Docker's plugin protocol. Per source
// address, queries are rate-limited; forwarded queries in flight are
// bounded. Safe for concurrent use; Run owns every goroutine it starts.
package resolver
