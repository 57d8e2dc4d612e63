// Package overlay owns every kernel object Tenet creates: a network namespace
// per tenant on each host, a bridge and a VXLAN device per network, veth pairs
// for endpoints, and static FDB and neighbour entries for remote endpoints. It
// is the only package that talks netlink (the e2e testbed aside).
//
// Not built yet: see issue "Datapath".
package overlay
