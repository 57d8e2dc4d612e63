// Package coretest provides fakes of what the core depends on, for unit
// tests of the core and of its front ends: Datapath records what it is
// asked to program, Cluster is one host's in-memory view of a gossip ring
// whose other hosts a test plays.
package coretest

import (
	"bytes"
	"cmp"
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/overlay"
)

// Call is one Apply.
type Call struct {
	State overlay.State
	Scope core.Scope
}

// Datapath is a fake core.Datapath. Safe for concurrent use.
type Datapath struct {
	mu    sync.Mutex // guards the fields below
	calls []Call
	fail  error
	when  func(core.Scope) bool
	block chan struct{}
	// MTU is what MaxMTU answers (0: unknown).
	MTU int
	// Kernel, if set, is what ObserveRemotes answers: the remote entries
	// the kernel held at start-up, by VNI, and flood peers.
	Kernel      map[uint32][]overlay.Remote
	KernelPeers map[uint32][]netip.Addr
	findings    []overlay.Finding
	diagnosed   []overlay.State
	broken      error
	inUse       map[overlay.Reservation]bool
	// NoCrypt, if set, is what CryptSupport answers (a kernel without
	// WireGuard); KernelKey and KernelCryptPeers what ObserveCrypt
	// answers (a key and peers an earlier run left).
	NoCrypt          error
	KernelKey        overlay.PrivateKey
	KernelCryptPeers []overlay.CryptPeer
}

// SetInUse makes Apply refuse, as the kernel would, to publish these
// ports on an endpoint of its scope: another program holds them.
func (d *Datapath) SetInUse(rs ...overlay.Reservation) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inUse = map[overlay.Reservation]bool{}
	for _, r := range rs {
		d.inUse[r] = true
	}
}

var _ core.Datapath = (*Datapath)(nil)
var _ core.RemoteObserver = (*Datapath)(nil)
var _ core.Diagnoser = (*Datapath)(nil)

// Diagnose validates s and answers what SetFindings set.
func (d *Datapath) Diagnose(ctx context.Context, s overlay.State) ([]overlay.Finding, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.diagnosed = append(d.diagnosed, s)
	return slices.Clone(d.findings), nil
}

// SetFindings sets what Diagnose answers.
func (d *Datapath) SetFindings(fs []overlay.Finding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.findings = fs
}

// Diagnosed lists the states Diagnose was asked about.
func (d *Datapath) Diagnosed() []overlay.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.diagnosed)
}

var _ core.Crypter = (*Datapath)(nil)

// CryptSupport answers d.NoCrypt.
func (d *Datapath) CryptSupport() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.NoCrypt
}

// SetNoCrypt makes CryptSupport answer err from now on.
func (d *Datapath) SetNoCrypt(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.NoCrypt = err
}

// CryptPort is WireGuard's usual port.
func (d *Datapath) CryptPort() uint16 { return overlay.DefaultWireGuardPort }

// ObserveCrypt answers d.KernelKey and d.KernelCryptPeers.
func (d *Datapath) ObserveCrypt(context.Context) (overlay.PrivateKey, []overlay.CryptPeer, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.KernelKey, slices.Clone(d.KernelCryptPeers), !d.KernelKey.IsZero(), nil
}

// Apply validates s as the real datapath does, then records it.
func (d *Datapath) Apply(ctx context.Context, s overlay.State, scope core.Scope) error {
	if err := s.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	block := d.block
	d.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.broken != nil {
		return d.broken
	}
	if err := d.fail; err != nil && (d.when == nil || d.when(scope)) {
		d.fail, d.when = nil, nil
		return err
	}
	for _, e := range s.Endpoints {
		if !scope.All && !slices.Contains(scope.Endpoints, e.ID) {
			continue
		}
		for _, p := range e.Ports {
			if r := p.Reservation(); d.inUse[r] {
				return &overlay.PortInUseError{Res: r}
			}
		}
	}
	d.calls = append(d.calls, Call{s, scope})
	return nil
}

// MaxMTU answers d.MTU.
func (d *Datapath) MaxMTU() (int, error) { return d.MTU, nil }

// ObserveRemotes answers d.Kernel and d.KernelPeers.
func (d *Datapath) ObserveRemotes(context.Context) (map[uint32][]overlay.Remote, map[uint32][]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Kernel, d.KernelPeers, nil
}

// FailNext makes the next Apply fail with err.
func (d *Datapath) FailNext(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = err
}

// Break makes every Apply fail with err until Break(nil).
func (d *Datapath) Break(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.broken = err
}

// FailWhen makes the next Apply whose scope matches fail with err.
func (d *Datapath) FailWhen(match func(core.Scope) bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail, d.when = err, match
}

// Block makes every Apply wait until the returned function is called.
func (d *Datapath) Block() (release func()) {
	ch := make(chan struct{})
	d.mu.Lock()
	d.block = ch
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			d.block = nil
			d.mu.Unlock()
			close(ch)
		})
	}
}

// Last returns the state of the last successful Apply.
func (d *Datapath) Last() (overlay.State, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.calls) == 0 {
		return overlay.State{}, false
	}
	return d.calls[len(d.calls)-1].State, true
}

// Calls returns every successful Apply so far.
func (d *Datapath) Calls() []Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// Cluster is a fake core.Cluster: this host's own writes, and other hosts'
// entries a test puts with AddRemote and friends, each change also sent as
// an event. Safe for concurrent use.
type Cluster struct {
	Host string

	mu       sync.Mutex // guards the fields below
	networks map[string]gossip.Network
	eps      map[string]gossip.Endpoint // this host's
	attached map[string]bool
	remotes  map[string]core.Remote // by ID
	peers    map[string]map[string]core.Peer
	hosts    map[string]core.HostInfo
	synced   map[string]bool
	kv       map[[2]string]gossip.KVEntry // by host, key
	subs     []chan gossip.Event
	version  uint64
	reads    map[string]int // Remotes calls by network
}

var _ core.Cluster = (*Cluster)(nil)
var _ core.OwnEntries = (*Cluster)(nil)

// NewCluster returns the view of host.
func NewCluster(host string) *Cluster {
	return &Cluster{Host: host, networks: map[string]gossip.Network{}, eps: map[string]gossip.Endpoint{},
		attached: map[string]bool{}, remotes: map[string]core.Remote{}, peers: map[string]map[string]core.Peer{},
		hosts: map[string]core.HostInfo{}, synced: map[string]bool{}, kv: map[[2]string]gossip.KVEntry{}}
}

func (c *Cluster) PutKV(key string, value []byte) error {
	c.AddKV(c.Host, key, value)
	return nil
}

func (c *Cluster) DeleteKV(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.kv, [2]string{c.Host, key})
}

func (c *Cluster) KV(prefix string) []gossip.KVEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gossip.KVEntry
	for _, e := range c.kv {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b gossip.KVEntry) int { return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Host, b.Host)) })
	return out
}

// AddKV puts host's entry in the key-value table, as gossip would
// deliver it, with an event.
func (c *Cluster) AddKV(host, key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	e := gossip.KVEntry{Key: key, Host: host, Value: slices.Clone(value), Version: c.version}
	c.kv[[2]string{host, key}] = e
	c.emitLocked(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableKV, Key: key, Host: host, Version: e.Version, KV: &e})
}

// OwnKV returns this host's entry under key.
func (c *Cluster) OwnKV(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.kv[[2]string{c.Host, key}]
	return e.Value, ok
}

func (c *Cluster) emitLocked(ev gossip.Event) {
	for _, s := range c.subs {
		s <- ev
	}
}

func (c *Cluster) PutNetwork(n gossip.Network) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n.Host = c.Host
	c.networks[n.ID] = n
	return nil
}

func (c *Cluster) DeleteNetwork(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.networks[key]; ok && n.Host == c.Host {
		delete(c.networks, key)
	}
}

func (c *Cluster) PutEndpoint(e gossip.Endpoint) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.Host = c.Host
	c.eps[e.ID] = e
	return nil
}

func (c *Cluster) DeleteEndpoint(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.eps, id)
}

func (c *Cluster) Attach(network string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attached[network] = true
	return nil
}

func (c *Cluster) Detach(network string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.attached, network)
}

func (c *Cluster) Network(key string) (gossip.Network, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.networks[key]
	return n, ok
}

func (c *Cluster) Networks() []gossip.Network {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gossip.Network
	for _, n := range c.networks {
		out = append(out, n)
	}
	return out
}

func (c *Cluster) Remotes(network string) []core.Remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reads == nil {
		c.reads = map[string]int{}
	}
	c.reads[network]++
	var out []core.Remote
	for _, r := range c.remotes {
		if r.Network == network {
			out = append(out, r)
		}
	}
	return out
}

// RemoteClaims is Remotes filtered as core.ClaimReader says, without
// counting as a read.
func (c *Cluster) RemoteClaims(network string, macs []net.HardwareAddr) []core.Remote {
	c.mu.Lock()
	defer c.mu.Unlock()
	ips := map[netip.Addr]bool{}
	var out []core.Remote
	took := map[string]bool{}
	for id, r := range c.remotes {
		if r.Network == network && slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return bytes.Equal(m, r.MAC) }) {
			out, took[id] = append(out, r), true
			if r.IP.IsValid() {
				ips[r.IP] = true
			}
		}
	}
	for id, r := range c.remotes {
		if r.Network == network && !took[id] && ips[r.IP] {
			out = append(out, r)
		}
	}
	return out
}

// RemoteReads is how many times Remotes was asked for network's.
func (c *Cluster) RemoteReads(network string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[network]
}

func (c *Cluster) Peers(network string) []core.Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []core.Peer
	for _, p := range c.peers[network] {
		out = append(out, p)
	}
	return out
}

func (c *Cluster) Hosts() []core.HostInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []core.HostInfo{{Name: c.Host, Alive: true}}
	for _, h := range c.hosts {
		out = append(out, h)
	}
	return out
}

func (c *Cluster) Synced(network string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced[network]
}

func (c *Cluster) Subscribe(buf int) (<-chan gossip.Event, func()) {
	ch := make(chan gossip.Event, max(buf, 1024))
	c.mu.Lock()
	c.subs = append(c.subs, ch)
	c.mu.Unlock()
	return ch, func() {}
}

// OwnEndpoints lists the endpoints published as host's (this host's only).
func (c *Cluster) OwnEndpoints(host string) []gossip.Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gossip.Endpoint
	for _, e := range c.eps {
		if e.Host == host {
			out = append(out, e)
		}
	}
	return out
}

// Attached says whether host (this one) is attached to network.
func (c *Cluster) Attached(host, network string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return host == c.Host && c.attached[network]
}

// PutOwn puts an endpoint as this host's, behind the core's back (as a
// ring that kept an old entry would hold it).
func (c *Cluster) PutOwn(e gossip.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.Host = c.Host
	c.eps[e.ID] = e
}

// Own returns this host's published endpoint and whether it exists.
func (c *Cluster) Own(id string) (gossip.Endpoint, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.eps[id]
	return e, ok
}

// OwnNetwork returns this host's published network and whether it is
// attached.
func (c *Cluster) OwnNetwork(key string) (gossip.Network, bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.networks[key]
	return n, ok && n.Host == c.Host, c.attached[key]
}

// AddHost makes another host known (alive).
func (c *Cluster) AddHost(name string, vtep netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts[name] = core.HostInfo{Name: name, VTEP: vtep, Alive: true}
}

// AddNetwork adds another host's network to the networks table.
func (c *Cluster) AddNetwork(n gossip.Network) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.networks[n.ID]; !ok || c.networks[n.ID].Host != c.Host {
		c.networks[n.ID] = n
	}
}

// AddRemote puts another host's endpoint, as gossip would deliver it.
func (c *Cluster) AddRemote(r core.Remote) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	if r.Version == 0 {
		r.Version = c.version
	}
	c.remotes[r.ID] = r
	c.emitLocked(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: r.ID, Host: r.Host, Version: r.Version,
		Endpoint: &gossip.Endpoint{ID: r.ID, Network: r.Network, MAC: r.MAC, IP: r.IP, VTEP: r.VTEP, Host: r.Host}})
}

// DeleteRemote deletes another host's endpoint; the event carries its last
// value, as gossip's do.
func (c *Cluster) DeleteRemote(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.remotes[id]
	if !ok {
		return
	}
	delete(c.remotes, id)
	c.emitLocked(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: id, Host: r.Host,
		Endpoint: &gossip.Endpoint{ID: id, Network: r.Network, MAC: r.MAC, IP: r.IP, VTEP: r.VTEP}})
}

// AddPeer attaches another host to a network.
func (c *Cluster) AddPeer(network string, p core.Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers[network] == nil {
		c.peers[network] = map[string]core.Peer{}
	}
	c.peers[network][p.Host] = p
	c.emitLocked(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableAttachments, Key: network, Host: p.Host,
		Attachment: &gossip.Attachment{Network: network, Host: p.Host}})
}

// HostDown marks host down at since: its endpoints and attachments are
// hidden, as gossip reports a failed host.
func (c *Cluster) HostDown(host string, since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[host]
	h.Name, h.Alive, h.DownSince = host, false, since
	c.hosts[host] = h
	for id, r := range c.remotes {
		if r.Host == host {
			r.DownSince = since
			c.remotes[id] = r
			c.emitLocked(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: id, Host: host, Hidden: true,
				Endpoint: &gossip.Endpoint{ID: id, Network: r.Network, MAC: r.MAC, IP: r.IP, VTEP: r.VTEP, Host: host}})
		}
	}
	for network, ps := range c.peers {
		if p, ok := ps[host]; ok {
			p.DownSince = since
			ps[host] = p
			c.emitLocked(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableAttachments, Key: network, Host: host, Hidden: true,
				Attachment: &gossip.Attachment{Network: network, Host: host}})
		}
	}
}

// SetSynced says that network has been synced from its peers.
func (c *Cluster) SetSynced(network string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced[network] = true
}

// Emit sends an arbitrary event, as a hostile or confused peer might.
func (c *Cluster) Emit(ev gossip.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.emitLocked(ev)
}

// HostUp marks a host that was down alive again: its entries reappear,
// as gossip reports a host that came back.
func (c *Cluster) HostUp(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.hosts[host]
	h.Name, h.Alive, h.DownSince = host, true, time.Time{}
	c.hosts[host] = h
	for id, r := range c.remotes {
		if r.Host == host {
			r.DownSince = time.Time{}
			c.remotes[id] = r
			c.emitLocked(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: id, Host: host, Hidden: true, Version: r.Version,
				Endpoint: &gossip.Endpoint{ID: id, Network: r.Network, MAC: r.MAC, IP: r.IP, VTEP: r.VTEP, Host: host}})
		}
	}
	for network, ps := range c.peers {
		if p, ok := ps[host]; ok {
			p.DownSince = time.Time{}
			ps[host] = p
			c.emitLocked(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableAttachments, Key: network, Host: host, Hidden: true,
				Attachment: &gossip.Attachment{Network: network, Host: host}})
		}
	}
}

// RemovePeer detaches another host from a network.
func (c *Cluster) RemovePeer(network, host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.peers[network][host]; !ok {
		return
	}
	delete(c.peers[network], host)
	c.emitLocked(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableAttachments, Key: network, Host: host,
		Attachment: &gossip.Attachment{Network: network, Host: host}})
}
