// Package ipam hands out addresses that are unique across the whole cluster:
// each host allocates only from address blocks it owns, and ownership is
// replicated through gossip. Tenants are address spaces.
//
// Not built yet: see issue "IPAM".
package ipam
