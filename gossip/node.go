package gossip

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
)

// udpBudget is the largest update sent as one UDP packet; larger ones go
// over TCP. memberlist's packets are 1400 bytes; this leaves room for its
// headers, the label and AES-GCM's nonce and tag.
const udpBudget = 1200

// maxAhead bounds how far an entry's version may be ahead of this host's
// wall clock. Versions track the wall clock in microseconds (see clock),
// so a much larger one comes from a broken or hostile sender; accepting
// it would drag every host's clock up to it, and near 2^64 the clock
// would wrap. A day tolerates badly set clocks (time zones) between hosts.
const maxAhead = 24 * time.Hour

var (
	errOwnership = errors.New("entry owned by another host")
	errFuture    = errors.New("version too far ahead of the clock")
	errScope     = errors.New("entry outside the synced network")
)

// Node is one host's member of the gossip ring and its replica of the
// tables. Create it with New, then call Run.
type Node struct {
	cfg       Config
	log       *slog.Logger
	store     *store
	stats     counters
	keyring   *memberlist.Keyring
	ml        *memberlist.Memberlist
	meta      []byte
	vtepFix   chan struct{} // an adopted endpoint carries an old VTEP
	stopped   sync.Once
	rejoining atomic.Bool
	running   atomic.Bool
	syncJobs  chan syncJob

	addr string // host:port others join
	port uint16

	mu       sync.Mutex                  // guards the fields below
	failed   map[string]failed           // recently failed peers, joined again by Run
	members  map[string]*memberlist.Node // copies taken in the event callbacks
	needSync map[string]bool             // networks attached here not yet synced with a peer
	parked   map[string][]syncJob        // syncs for peers not yet in members
}

type failed struct {
	addr  string
	since time.Time
}

// Member is a host in the ring as this host sees it.
type Member struct {
	Name string
	Addr netip.AddrPort // gossip address
	VTEP netip.Addr
}

// GenerateKey returns a new random 32-byte cluster key (AES-256-GCM).
func GenerateKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return k, nil
}

// New validates cfg, binds the gossip port and starts answering other
// hosts; it joins nobody until Run. Call Run next: it owns the node's
// lifetime and releases the port when it returns.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gossip", "host", cfg.NodeName),
		store:    newStore(cfg.NodeName, time.Now),
		meta:     appendAddr([]byte{metaVersion}, cfg.VTEP),
		vtepFix:  make(chan struct{}, 1),
		failed:   make(map[string]failed),
		members:  make(map[string]*memberlist.Node),
		needSync: make(map[string]bool),
		parked:   make(map[string][]syncJob),
		syncJobs: make(chan syncJob, 1024),
	}
	kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: Keys: %w", err)
	}
	n.keyring = kr

	mlog := memberlistLogger(n.log)
	// memberlist reports to go-metrics' process-wide sink; the label tells
	// whose metrics they are (package metrics routes by it).
	labels := []gometrics.Label{{Name: "node", Value: cfg.NodeName}}
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs:    []string{cfg.BindAddr.String()},
		BindPort:     cfg.BindPort,
		Logger:       mlog,
		MetricLabels: labels,
	})
	if err != nil {
		return nil, fmt.Errorf("gossip: listen on %s: %w", netip.AddrPortFrom(cfg.BindAddr, uint16(cfg.BindPort)), err)
	}
	var tr memberlist.NodeAwareTransport = nt
	if cfg.WrapTransport != nil {
		tr = cfg.WrapTransport(nt)
	}
	adv := cfg.AdvertiseAddr
	if !adv.IsValid() {
		adv = cfg.BindAddr
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Transport = tr
	mc.BindAddr = cfg.BindAddr.String()
	mc.BindPort = nt.GetAutoBindPort()
	mc.AdvertiseAddr = adv.String()
	mc.AdvertisePort = nt.GetAutoBindPort()
	mc.Label = cfg.Cluster
	mc.Keyring = kr
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.PushPullInterval = cfg.PushPullInterval
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.Delegate = (*delegate)(n)
	mc.Events = (*events)(n)
	mc.Logger = mlog
	mc.MetricLabels = labels
	if cfg.tuneMemberlist != nil {
		cfg.tuneMemberlist(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("gossip: start memberlist as %q: %w", cfg.NodeName, err)
	}
	n.ml = ml
	n.port = uint16(nt.GetAutoBindPort())
	n.addr = netip.AddrPortFrom(adv, n.port).String()
	return n, nil
}

// Addr returns the address other hosts join this one at.
func (n *Node) Addr() string { return n.addr }

// Run joins the seeds and keeps the node healthy until ctx is done: it
// re-joins seeds and failed peers every RejoinInterval, reaps tombstones
// and dead hosts' entries, and fixes the VTEP on entries adopted after a
// restart. On return it has left the ring and closed every subscription.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("gossip: Run called twice")
	}
	defer n.stop(true)
	var seeds []string
	for _, s := range n.cfg.Seeds {
		if withPort(s, n.port) != n.addr { // a shared seed list may name this host
			seeds = append(seeds, s)
		}
	}
	if len(seeds) > 0 {
		if k, err := n.ml.Join(seeds); err != nil && k == 0 {
			n.log.Warn("join seeds failed; retrying every rejoin interval", "seeds", seeds, "err", err)
		} else {
			n.log.Info("joined ring", "seeds", seeds, "reached", k)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go n.syncWorker(ctx)
	syncTimer := time.NewTimer(n.cfg.SyncInterval)
	defer syncTimer.Stop()
	rejoin := time.NewTicker(n.cfg.RejoinInterval)
	defer rejoin.Stop()
	reap := time.NewTicker(n.cfg.ReapInterval)
	defer reap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rejoin.C:
			// A join dials each target in turn and a dead host can take
			// TCPTimeout to fail, so it runs aside, one at a time.
			if n.rejoining.CompareAndSwap(false, true) {
				go func() {
					defer n.rejoining.Store(false)
					n.rejoin()
				}()
			}
		case <-reap.C:
			tomb, dead := n.store.reap(n.cfg.TombstoneTTL, n.cfg.ReapDeadAfter)
			if tomb+dead > 0 {
				n.log.Debug("reaped", "tombstones", tomb, "dead_entries", dead)
			}
			n.forgetFailed(time.Now().Add(-n.cfg.ReapDeadAfter))
		case <-n.vtepFix:
			n.fixVTEP()
		case <-syncTimer.C:
			syncTimer.Reset(n.syncRound())
		}
	}
}

// stop leaves the ring (gracefully if leave) and shuts memberlist down;
// later calls do nothing.
func (n *Node) stop(leave bool) {
	n.stopped.Do(func() { n.stopOnce(leave) })
}

func (n *Node) stopOnce(leave bool) {
	if leave {
		if err := n.ml.Leave(2 * n.cfg.ProbeInterval); err != nil {
			n.log.Warn("leave ring", "err", err)
		}
	}
	if err := n.ml.Shutdown(); err != nil {
		n.log.Warn("shut down memberlist", "err", err)
	}
	n.store.closeSubs()
}

// rejoin joins every seed and recently failed peer that is not an alive
// member. memberlist alone never contacts a peer again once it has given
// up on it, so without this a long partition would never heal.
func (n *Node) rejoin() {
	alive := map[string]bool{n.addr: true}
	var targets []string
	n.mu.Lock()
	for _, m := range n.members {
		alive[m.Address()] = true
	}
	for _, s := range n.cfg.Seeds {
		if !alive[withPort(s, n.port)] {
			targets = append(targets, s)
		}
	}
	for _, f := range n.failed {
		if !alive[f.addr] {
			targets = append(targets, f.addr)
		}
	}
	n.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	k, err := n.ml.Join(targets)
	n.log.Debug("rejoin", "targets", targets, "reached", k, "err", err)
}

func withPort(hostport string, def uint16) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	return net.JoinHostPort(hostport, strconv.Itoa(int(def)))
}

func (n *Node) forgetFailed(before time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, f := range n.failed {
		if f.since.Before(before) {
			delete(n.failed, name)
		}
	}
}

// fixVTEP re-puts this host's endpoints that carry another VTEP: entries
// adopted after the host came back with a new underlay address.
func (n *Node) fixVTEP() {
	for _, e := range n.store.owned(tableEndpoints) {
		ep, err := decodeEndpoint(e.key, e.value)
		if err != nil || ep.VTEP == n.cfg.VTEP {
			continue
		}
		if err := n.Endpoints().Put(ep); err != nil {
			n.log.Warn("update VTEP of adopted endpoint", "endpoint", ep.ID, "err", err)
		}
	}
}

// Members returns the hosts in the ring, this one included, that are not
// known to be dead, sorted by name.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		addr, _ := netip.AddrFromSlice(m.Addr)
		out = append(out, Member{
			Name: m.Name,
			Addr: netip.AddrPortFrom(addr.Unmap(), m.Port),
			VTEP: decodeMeta(m.Meta),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peers returns copies of the other members' memberlist nodes. memberlist's
// own Members() hands out pointers it later writes to without our lock, so
// we keep copies taken inside its callbacks instead.
func (n *Node) peers() []*memberlist.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*memberlist.Node, 0, len(n.members))
	for name, m := range n.members {
		if name != n.cfg.NodeName {
			out = append(out, m)
		}
	}
	return out
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats { return n.stats.snapshot() }

// KeyInUse returns a fingerprint of the primary cluster key (the first 8 hex
// digits of its SHA-256), for showing which key a host encrypts with
// without showing the key.
func (n *Node) KeyInUse() string {
	k := n.keyring.GetPrimaryKey()
	if k == nil {
		return ""
	}
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:4])
}

// InstallKey adds a cluster key that is accepted on receive. Rotation
// without downtime: InstallKey on every host, then UseKey on every host,
// then RemoveKey of the old key on every host.
func (n *Node) InstallKey(key []byte) error {
	if err := n.keyring.AddKey(key); err != nil {
		return fmt.Errorf("install cluster key: %w", err)
	}
	return nil
}

// UseKey makes an installed key the primary, which encrypts what this host
// sends.
func (n *Node) UseKey(key []byte) error {
	if err := n.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use cluster key: %w", err)
	}
	return nil
}

// RemoveKey removes an installed key that is not the primary.
func (n *Node) RemoveKey(key []byte) error {
	if err := n.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove cluster key: %w", err)
	}
	return nil
}

// Subscribe returns a stream of changes, starting with a put for every
// visible entry, and a cancel function. The stream never blocks the node:
// events queue (unbounded) until read. It is closed by cancel or when Run
// returns.
func (n *Node) Subscribe(buf int) (<-chan Event, func()) { return n.store.subscribe(buf) }

// publish sends a change made here to the hosts that need it: endpoint
// changes to the hosts attached to the endpoint's network, everything else
// to every member. Errors are counted, not returned: the periodic full
// state exchange repairs what a send missed.
func (n *Node) publish(e entry, network string) {
	msg := encodeMessage(nil, &message{typ: msgUpdate, sender: n.cfg.NodeName, entries: []entry{e}})
	var want map[string]bool
	if e.table == tableEndpoints {
		want = make(map[string]bool)
		for _, h := range n.store.attached(network) {
			want[h] = true
		}
	}
	for _, m := range n.peers() {
		if want != nil && !want[m.Name] {
			continue
		}
		var err error
		if len(msg) <= udpBudget {
			err = n.ml.SendBestEffort(m, msg)
		} else {
			err = n.ml.SendReliable(m, msg)
		}
		if err != nil {
			n.stats.sendErrors.Add(1)
			n.log.Debug("send update", "to", m.Name, "err", err)
			continue
		}
		n.stats.sent.Add(1)
	}
}

// handle decodes and applies one message from another host.
func (n *Node) handle(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		n.drop(err, "", "")
		return
	}
	n.stats.received.Add(1)
	ask := make(map[string][]string) // peer -> networks to sync with it, one request each
	for i := range m.entries {
		e := &m.entries[i]
		if err := n.admit(m, e); err != nil {
			n.drop(err, m.sender, e.key)
			continue
		}
		if e.table == tableEndpoints && e.owner != n.cfg.NodeName && !n.store.isAttached(endpointNetwork(e.value)) {
			n.stats.unscoped.Add(1) // not ours to keep: this host lacks the network
			continue
		}
		switch n.store.merge(e) {
		case mergeApplied:
			n.stats.applied.Add(1)
			if e.table == tableAttachments && !e.deleted {
				if n.waitingSync(e.key) {
					ask[e.owner] = append(ask[e.owner], e.key)
				}
			}
		case mergeAdopted:
			n.stats.applied.Add(1)
			switch {
			case e.table == tableEndpoints && !e.deleted:
				select {
				case n.vtepFix <- struct{}{}:
				default:
				}
			case e.table == tableAttachments && !e.deleted:
				n.wantSync(e.key) // restarted: fetch the network's endpoints
			}
		case mergeStale, mergeReaped:
			n.stats.stale.Add(1)
		}
	}
	for peer, nws := range ask {
		n.requestSync(peer, nws, false)
	}
	var answer []string
	for _, nw := range m.networks {
		switch m.typ {
		case msgSyncReq:
			if n.store.isAttached(nw) {
				answer = append(answer, nw)
			}
		case msgSyncResp:
			n.synced(nw)
		}
	}
	n.requestSync(m.sender, answer, true)
}

// admit checks one received entry: its owner (an update carries only its
// sender's entries, and nobody may update this host's entries; push/pull
// states and syncs relay other hosts' entries), a sync's scope, the
// version's distance from the clock, then its table and value.
func (n *Node) admit(m *message, e *entry) error {
	switch {
	case e.owner == "":
		return fmt.Errorf("empty owner: %w", errOwnership)
	case m.typ == msgUpdate && (e.owner != m.sender || m.sender == n.cfg.NodeName):
		return fmt.Errorf("update from %q for %q: %w", m.sender, e.owner, errOwnership)
	case isSync(m.typ) && (e.table != tableEndpoints || !slices.Contains(m.networks, endpointNetwork(e.value))):
		return fmt.Errorf("sync of networks %q carries %s %q: %w", m.networks, e.table.name(), e.key, errScope)
	case e.version > uint64(time.Now().Add(maxAhead).UnixMicro()):
		return fmt.Errorf("version %d: %w", e.version, errFuture)
	}
	return checkValue(e)
}

func (n *Node) drop(err error, sender, key string) {
	r := reasonOf(err)
	n.stats.dropped[r].Add(1)
	level := slog.LevelDebug
	if n.stats.shouldWarn(time.Now()) {
		level = slog.LevelWarn
	}
	n.log.Log(context.Background(), level, "dropped gossip input", "reason", dropNames[r], "from", sender, "key", key, "err", err)
}

const metaVersion = 1

func decodeMeta(b []byte) netip.Addr {
	r := reader{b: b}
	if r.byte() != metaVersion {
		return netip.Addr{}
	}
	return r.addr()
}
