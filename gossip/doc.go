// Package gossip keeps the cluster's shared state (networks, endpoint
// locations, address block ownership) replicated on every host through an
// encrypted hashicorp/memberlist ring. It never touches the kernel.
//
// Not built yet: see issue "Gossip".
package gossip
