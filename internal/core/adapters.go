package core

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// GossipCluster adapts a gossip node to Cluster.
type GossipCluster struct{ Node *gossip.Node }

var _ Cluster = GossipCluster{}
var _ OwnEntries = GossipCluster{}

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
func (g GossipCluster) Subscribe(buf int) (<-chan gossip.Event, func()) {
	return g.Node.Subscribe(buf)
}
func (g GossipCluster) PutKV(key string, value []byte) error { return g.Node.KV().Put(key, value) }
func (g GossipCluster) DeleteKV(key string)                  { g.Node.KV().Delete(key) }
func (g GossipCluster) KV(prefix string) []gossip.KVEntry    { return g.Node.KV().List(prefix) }

// Remotes reads the network's endpoints. Remote.Names stays empty until
// gossip.Endpoint carries names: then set Names: e.Names here (and publish
// them in Core.publishEndpoint), and tenetctl endpoint ls shows other
// hosts' containers by name.
func (g GossipCluster) Remotes(network string) []Remote {
	return remotesOf(g.Node.Endpoints().ListRemote(network, true))
}

// RemoteClaims reads the network's endpoints that claim one of macs, or
// an IP of one of those (ClaimReader).
func (g GossipCluster) RemoteClaims(network string, macs []net.HardwareAddr) []Remote {
	return remotesOf(g.Node.Endpoints().RemoteClaims(network, macs))
}

func remotesOf(list []gossip.Endpoint) []Remote {
	out := make([]Remote, 0, len(list))
	for _, e := range list {
		out = append(out, Remote{ID: e.ID, Network: e.Network, MAC: e.MAC, IP: e.IP, VTEP: e.VTEP, Host: e.Host,
			Version: e.Version, Names: e.Names, DownSince: e.DownSince})
	}
	return out
}

func (g GossipCluster) OwnEndpoints(host string) []gossip.Endpoint {
	var out []gossip.Endpoint
	for _, e := range g.Node.Endpoints().List("") {
		if e.Host == host {
			out = append(out, e)
		}
	}
	return out
}

func (g GossipCluster) Attached(host, network string) bool {
	return slices.Contains(g.Node.Attachments().Hosts(network), host)
}

func (g GossipCluster) Peers(network string) []Peer {
	vteps := map[string]netip.Addr{}
	for _, h := range g.Node.Hosts() {
		vteps[h.Name] = h.VTEP
	}
	var out []Peer
	for _, a := range g.Node.Attachments().ListNetwork(network, true) {
		if v, ok := vteps[a.Host]; ok && v.IsValid() {
			out = append(out, Peer{Host: a.Host, VTEP: v, DownSince: a.DownSince})
		}
	}
	return out
}

func (g GossipCluster) Hosts() []HostInfo {
	var out []HostInfo
	for _, h := range g.Node.Hosts() {
		out = append(out, HostInfo{Name: h.Name, VTEP: h.VTEP, Alive: h.Alive, DownSince: h.DownSince})
	}
	return out
}

// Synced says whether gossip has merged the network from its peers.
func (g GossipCluster) Synced(network string) bool { return g.Node.Synced(network) }

// OverlayDatapath adapts an overlay.Datapath to Datapath.
type OverlayDatapath struct{ DP *overlay.Datapath }

var _ Datapath = OverlayDatapath{}
var _ RemoteObserver = OverlayDatapath{}
var _ Diagnoser = OverlayDatapath{}

// Diagnose compares the kernel with s, changing nothing.
func (o OverlayDatapath) Diagnose(ctx context.Context, s overlay.State) ([]overlay.Finding, error) {
	return o.DP.Diagnose(ctx, s)
}

var _ Crypter = OverlayDatapath{}

// Apply reconciles the whole state for Scope.All, else only the scope's
// objects. "Every remote entry of a network" is the network's scope in
// overlay, which holds its VXLAN device's entries.
func (o OverlayDatapath) Apply(ctx context.Context, s overlay.State, sc Scope) error {
	if sc.All {
		return o.DP.Reconcile(ctx, s)
	}
	os := overlay.Scope{Tenants: sc.Tenants, Networks: union(sc.Networks, sc.RemoteNets), Endpoints: sc.Endpoints, Infra: sc.Infra,
		Crypt: sc.Crypt}
	for _, r := range sc.Remotes {
		os.Remotes = append(os.Remotes, overlay.RemoteKey{VNI: r.VNI, MAC: r.MAC})
	}
	return o.DP.ReconcileScope(ctx, s, os)
}

// MaxMTU is the underlay's MTU minus the VXLAN overhead.
func (o OverlayDatapath) MaxMTU() (int, error) { return o.DP.MaxMTU() }

// CryptSupport says whether the kernel has WireGuard.
func (o OverlayDatapath) CryptSupport() error { return o.DP.CryptSupport() }

// CryptPort is the datapath's WireGuard port.
func (o OverlayDatapath) CryptPort() uint16 { return o.DP.WireGuardPort() }

// ObserveCrypt reads the WireGuard device's key and peers, if there is one.
func (o OverlayDatapath) ObserveCrypt(ctx context.Context) (overlay.PrivateKey, []overlay.CryptPeer, bool, error) {
	c, err := o.DP.ObserveCrypt(ctx)
	if err != nil || c == nil || c.Device.Key.IsZero() {
		return overlay.PrivateKey{}, nil, false, err
	}
	var peers []overlay.CryptPeer
	for _, p := range c.Peers {
		if p.Allowed.IsValid() && p.Endpoint.IsValid() {
			peers = append(peers, overlay.CryptPeer{VTEP: p.Allowed.Addr(), Port: p.Endpoint.Port(), Key: p.Key, PSK: p.PSK})
		}
	}
	return c.Device.Key, peers, true, nil
}

// ObserveRemotes reads the remote entries of every VXLAN device: unicast
// FDB entries with their neighbour entries, and the flood entries' VTEPs.
func (o OverlayDatapath) ObserveRemotes(ctx context.Context) (map[uint32][]overlay.Remote, map[uint32][]netip.Addr, error) {
	snap, err := o.DP.Observe(ctx)
	if err != nil {
		return nil, nil, err
	}
	remotes, peers := map[uint32][]overlay.Remote{}, map[uint32][]netip.Addr{}
	for _, t := range snap.Tenants {
		ips := map[string][]netip.Addr{} // "dev/mac" -> IPs
		for n := range t.Neigh {
			ips[n.Dev+"/"+n.MAC] = append(ips[n.Dev+"/"+n.MAC], n.IP)
		}
		for f := range t.FDB {
			vni, ok := vxlanVNI(f.Dev)
			if !ok {
				continue
			}
			mac, err := net.ParseMAC(f.MAC)
			if err != nil {
				continue
			}
			if f.MAC == "00:00:00:00:00:00" {
				peers[vni] = append(peers[vni], f.Dst)
				continue
			}
			remotes[vni] = append(remotes[vni], overlay.Remote{VNI: vni, MAC: mac, VTEP: f.Dst, IPs: ips[f.Dev+"/"+f.MAC]})
		}
	}
	return remotes, peers, nil
}

func vxlanVNI(dev string) (uint32, bool) {
	s, ok := strings.CutPrefix(dev, "vx")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err == nil
}
