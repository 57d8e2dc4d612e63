package driver

import (
	"context"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// Datapath is what the driver needs of the kernel side: overlay.Datapath,
// or a fake in unit tests.
type Datapath interface {
	Reconcile(ctx context.Context, s overlay.State) error
}

// Cluster is what the driver needs of the gossip ring: the tables it
// publishes to and the stream of everybody's changes. GossipCluster adapts
// a *gossip.Node.
type Cluster interface {
	PutNetwork(gossip.Network) error
	DeleteNetwork(key string)
	Network(key string) (gossip.Network, bool)
	Networks() []gossip.Network
	PutEndpoint(gossip.Endpoint) error
	DeleteEndpoint(id string)
	Attach(network string) error
	Detach(network string)
	Members() []gossip.Member
	Subscribe(buf int) (<-chan gossip.Event, func())
}

// GossipCluster adapts a gossip node to Cluster.
type GossipCluster struct{ Node *gossip.Node }

func (g GossipCluster) PutNetwork(n gossip.Network) error { return g.Node.Networks().Put(n) }
func (g GossipCluster) DeleteNetwork(key string)          { g.Node.Networks().Delete(key) }
func (g GossipCluster) Network(key string) (gossip.Network, bool) {
	return g.Node.Networks().Get(key)
}
func (g GossipCluster) Networks() []gossip.Network          { return g.Node.Networks().List() }
func (g GossipCluster) PutEndpoint(e gossip.Endpoint) error { return g.Node.Endpoints().Put(e) }
func (g GossipCluster) DeleteEndpoint(id string)            { g.Node.Endpoints().Delete(id) }
func (g GossipCluster) Attach(network string) error         { return g.Node.Attachments().Attach(network) }
func (g GossipCluster) Detach(network string)               { g.Node.Attachments().Detach(network) }
func (g GossipCluster) Members() []gossip.Member            { return g.Node.Members() }
func (g GossipCluster) KeyInUse() string                    { return g.Node.KeyInUse() }
func (g GossipCluster) Subscribe(buf int) (<-chan gossip.Event, func()) {
	return g.Node.Subscribe(buf)
}

func gossipNetwork(n *netDef) gossip.Network {
	return gossip.Network{ID: n.key(), Name: n.Name, Tenant: n.Tenant, VNI: n.VNI, Subnet: n.Subnet}
}
