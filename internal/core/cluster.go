package core

import (
	"cmp"
	"net"
	"net/netip"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// Cluster is what the core needs of the gossip ring: the tables it
// publishes this host's state to, and reads of everybody else's, made at
// the moment the core plans. Writes return once stored; they never wait on
// the network. GossipCluster adapts a *gossip.Node.
type Cluster interface {
	PutNetwork(gossip.Network) error
	DeleteNetwork(key string)
	PutEndpoint(gossip.Endpoint) error
	DeleteEndpoint(id string)
	Attach(network string) error
	Detach(network string)

	// Network and Networks read the networks table (every host's).
	Network(key string) (gossip.Network, bool)
	Networks() []gossip.Network
	// Remotes lists other hosts' endpoints on network, those of hosts
	// reported down included (with DownSince set).
	Remotes(network string) []Remote
	// Peers lists the other hosts that have network, those reported down
	// included.
	Peers(network string) []Peer
	// Hosts lists every host known, this one included.
	Hosts() []HostInfo
	// Synced says whether this host has merged network's state from the
	// other hosts that have it since it started.
	Synced(network string) bool
	// Subscribe streams the tables' changes.
	Subscribe(buf int) (<-chan gossip.Event, func())

	// PutKV writes this host's entry under key in the key-value table;
	// DeleteKV deletes it; KV lists every host's entries under prefix
	// (those of hosts reported down included). The core keeps what
	// encrypted networks need there (package crypt).
	PutKV(key string, value []byte) error
	DeleteKV(key string)
	KV(prefix string) []gossip.KVEntry
}

// Remote is another host's endpoint.
type Remote struct {
	ID      string
	Network string // key
	MAC     net.HardwareAddr
	IP      netip.Addr
	VTEP    netip.Addr
	Host    string
	Version uint64
	// Names the endpoint answers to (its container's name, then its
	// aliases), as its host published them.
	Names []string
	// DownSince is when gossip reported the endpoint's host down; zero
	// while it is up.
	DownSince time.Time
}

// NewerClaimFirst orders remote endpoints as the planner weighs claims of
// one address or MAC: the newer (higher version) first, then by ID and
// host, so that every host makes the same choice whatever order gossip
// listed them in.
func NewerClaimFirst(a, b *Remote) int {
	return cmp.Or(cmp.Compare(b.Version, a.Version), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Host, b.Host))
}

// ClaimReader is implemented by clusters that can read a network's remote
// endpoints by MAC: RemoteClaims returns, of what Remotes would list, the
// endpoints whose MAC is one of macs and those whose IP is the IP of one of
// these. A pass over a few remote entries reads those instead of the whole
// network (Core.readClaims).
type ClaimReader interface {
	RemoteClaims(network string, macs []net.HardwareAddr) []Remote
}

// OwnEntries is implemented by clusters that can say what the ring holds
// of this host's own state, which Diagnose compares with the local state.
type OwnEntries interface {
	// OwnEndpoints lists the endpoints the ring holds as host's.
	OwnEndpoints(host string) []gossip.Endpoint
	// Attached says whether the ring holds host's attachment to network.
	Attached(host, network string) bool
}

// Peer is another host that has a network.
type Peer struct {
	Host      string
	VTEP      netip.Addr
	DownSince time.Time
}

// HostInfo is a host of the cluster as gossip knows it.
type HostInfo struct {
	Name      string
	VTEP      netip.Addr
	Alive     bool
	DownSince time.Time // when it was reported down; zero if alive or unknown
}
