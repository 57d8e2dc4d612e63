package gossip

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
)

// Node is one host's member of the gossip ring and its replica of the
// tables. Create it with New, then call Run.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *store
	stats   counters
	keyring *memberlist.Keyring
	seal    *sealer
	tr      *transport                    // ours, under any wrapper
	wire    memberlist.NodeAwareTransport // what we send through: tr, or the wrapper around it
	ml      *memberlist.Memberlist
	meta    []byte
	out     *outbox
	inbox   inbox
	quit    chan struct{}
	wg      sync.WaitGroup // the sender, the receive worker, streams

	vtepFix       chan struct{} // an adopted endpoint carries an old VTEP
	kick          chan struct{} // housekeeping (first syncs, gaps) has work now
	healCh        chan string   // hosts back from down
	firstCh       chan string   // hosts seen for the first time: one heal, no repeats
	reheal        chan string   // hosts back from down, a heal again (healAgain)
	streamMu      sync.Mutex    // guards streamQ, streamBytes and streamWorkers
	streamQ       []streamJob
	streamBytes   int // about what streamQ holds, in bytes
	streamWorkers int
	backlogAt     atomic.Int64 // unix nanoseconds: when input last waited to be handled
	closing       sync.RWMutex // write-held once stopping: no new stream starts
	closed        bool         // guarded by closing
	stopped       sync.Once
	rejoining     atomic.Bool
	running       atomic.Bool
	leaving       atomic.Bool // set before a graceful leave: the meta says so
	joinGate      admission   // as a seed: joins let in (admit.go)
	admitCh       chan bool   // seeds' answers to our join asks

	addr string // host:port others join
	port uint16

	mu     sync.Mutex            // guards the fields below
	inFrom map[string]int        // incoming streams being read, by sender
	busy   map[string]time.Time  // scopes with recent traffic: when last
	failed map[string]failed     // recently failed peers, joined again by Run
	syncs  map[string]*scopeSync // first-sync state per scope ("" and networks)
	gaps   map[want]*gap         // writers whose digest differs from our copy
	warned map[string]bool       // peers warned about for their wire version
	// keptPeers are the addresses of Config.PeersFile: read at New,
	// replaced at each write.
	keptPeers []string

	missing map[string]time.Time // savePeers' own: kept peers not alive, since when
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
		cfg:     cfg,
		log:     cfg.Logger.With("component", "gossip", "host", cfg.NodeName),
		store:   newStore(cfg.NodeName, time.Now, cfg.TombstoneTTL),
		meta:    nodeMeta(cfg.VTEP),
		out:     newOutbox(),
		inbox:   inbox{wake: make(chan struct{}, 1)},
		quit:    make(chan struct{}),
		vtepFix: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		healCh:  make(chan string, 64),
		firstCh: make(chan string, 64),
		reheal:  make(chan string, 64),
		missing: map[string]time.Time{},
		failed:  make(map[string]failed),
		syncs:   map[string]*scopeSync{"": newScopeSync()},
		gaps:    make(map[want]*gap),
		warned:  make(map[string]bool),
		inFrom:  make(map[string]int),
		busy:    make(map[string]time.Time),
		admitCh: make(chan bool, 16),
	}
	kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: Keys: %w", err)
	}
	n.keyring = kr
	if n.seal, err = newSealer(cfg.Cluster, kr); err != nil {
		return nil, fmt.Errorf("gossip: Keys: %w", err)
	}

	// memberlist reports to go-metrics' process-wide sink; the label tells
	// whose metrics they are (package metrics routes by it).
	labels := []gometrics.Label{{Name: "node", Value: cfg.NodeName}}
	tr, err := listen(cfg.BindAddr, cfg.BindPort, n.log)
	if err != nil {
		return nil, fmt.Errorf("gossip: listen on %s: %w", netip.AddrPortFrom(cfg.BindAddr, uint16(cfg.BindPort)), err)
	}
	tr.onFrame, tr.onStream = n.onFrame, n.onStream
	n.tr, n.wire = tr, tr
	if cfg.WrapTransport != nil {
		n.wire = cfg.WrapTransport(tr)
	}
	adv := cfg.AdvertiseAddr
	if !adv.IsValid() {
		adv = cfg.BindAddr
	}
	n.port = uint16(tr.port)
	n.addr = netip.AddrPortFrom(adv, n.port).String()
	n.store.setMember(cfg.NodeName, netip.AddrPortFrom(adv, n.port), cfg.VTEP, wireVersion, true, false)
	if cfg.PeersFile != "" {
		peers, bad, err := readPeers(cfg.PeersFile)
		if err != nil || bad > 0 {
			n.log.Warn("peers kept from the last run, partly unreadable", "file", cfg.PeersFile, "bad_lines", bad, "err", err)
		}
		n.keptPeers = slices.DeleteFunc(peers, func(p string) bool { return p == n.addr })
	}
	if len(n.seeds())+len(n.keptPeers) == 0 {
		n.markSynced("") // nobody to catch up with
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Transport = n.wire
	mc.BindAddr = cfg.BindAddr.String()
	mc.BindPort = tr.port
	mc.AdvertiseAddr = adv.String()
	mc.AdvertisePort = tr.port
	mc.Label = cfg.Cluster
	mc.Keyring = kr
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// Compressing every probe cost ~12 µs and 78 KB of garbage a packet
	// (issue 12); memberlist's packets are small and its large push/pull
	// carries no tables but at a join. Receivers accept either.
	mc.EnableCompression = false
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
	mc.Logger = memberlistLogger(n.log)
	mc.MetricLabels = labels
	if cfg.tuneMemberlist != nil {
		cfg.tuneMemberlist(mc)
	}
	tr.start()
	n.wg.Add(2)
	go n.receiver()
	go n.sender()
	ml, err := memberlist.Create(mc)
	if err != nil {
		n.shutdown()
		_ = tr.Shutdown()
		return nil, fmt.Errorf("gossip: start memberlist as %q: %w", cfg.NodeName, err)
	}
	n.ml = ml
	return n, nil
}

// Addr returns the address other hosts join this one at.
func (n *Node) Addr() string { return n.addr }

// seeds returns the configured seeds other than this host.
func (n *Node) seeds() []string {
	var out []string
	self := n.addr
	for _, s := range n.cfg.Seeds {
		if self == "" || withPort(s, n.port) != self { // a shared seed list may name this host
			out = append(out, s)
		}
	}
	return out
}

// Run joins the seeds and keeps the node healthy until ctx is done: it
// re-joins seeds and failed peers every RejoinInterval, runs the repair
// rounds, reaps tombstones and dead hosts' entries, and fixes the VTEP on
// entries adopted after a restart. On return it has left the ring and
// closed every subscription.
func (n *Node) Run(ctx context.Context) error {
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("gossip: Run called twice")
	}
	defer n.stop(true)
	n.mu.Lock()
	kept := len(n.keptPeers)
	n.mu.Unlock()
	if seeds := n.seeds(); len(seeds)+kept > 0 {
		// Joined aside: a join dials each seed in turn, and Run's loop must
		// serve first syncs meanwhile.
		n.rejoining.Store(true)
		go func() {
			defer n.rejoining.Store(false)
			n.joinAtStart(seeds)
		}()
	}
	syncTimer := time.NewTimer(n.cfg.SyncInterval)
	defer syncTimer.Stop()
	house := time.NewTimer(0)
	defer house.Stop()
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
			// TCPTimeout to fail, so it runs aside, one at a time; so
			// does keeping the peers, which syncs a file.
			if n.rejoining.CompareAndSwap(false, true) {
				go func() {
					defer n.rejoining.Store(false)
					n.savePeers()
					n.rejoin()
				}()
			}
		case <-reap.C:
			tomb, dead := n.store.reap(n.cfg.ReapDeadAfter)
			if tomb+dead > 0 {
				n.log.Debug("reaped", "tombstones", tomb, "dead_entries", dead)
			}
			n.forgetFailed(time.Now().Add(-n.cfg.ReapDeadAfter))
		case <-n.vtepFix:
			n.fixVTEP()
		case <-syncTimer.C:
			syncTimer.Reset(n.syncRound())
		case name := <-n.healCh:
			n.heal(name, true)
			n.healLater(name)
		case name := <-n.firstCh:
			n.heal(name, false)
		case name := <-n.reheal:
			n.heal(name, true) // nothing if it is down again
		case <-n.kick:
			house.Reset(0)
		case <-house.C:
			now := time.Now()
			next := n.firstSyncs(now)
			if g := n.checkGaps(now); !g.IsZero() && (next.IsZero() || g.Before(next)) {
				next = g
			}
			if !next.IsZero() {
				house.Reset(time.Until(next))
			}
		}
	}
}

// kickNow asks Run to run housekeeping now.
func (n *Node) kickNow() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// kickLocked is kickNow with n.mu held (it takes no lock).
func (n *Node) kickLocked() { n.kickNow() }

// stop leaves the ring (gracefully if leave) and shuts everything down;
// later calls do nothing.
func (n *Node) stop(leave bool) {
	n.stopped.Do(func() { n.stopOnce(leave) })
}

func (n *Node) stopOnce(leave bool) {
	if leave {
		// First advertise that this host is leaving: memberlist's leave
		// reaches the others as a host down, like a failure, and only
		// this flag in the meta lets them count it left and not try to
		// rejoin it (NotifyLeave). Best effort: a peer that misses it
		// counts a failure.
		n.leaving.Store(true)
		if n.ml.NumMembers() > 1 {
			if err := n.ml.UpdateNode(n.cfg.ProbeInterval); err != nil {
				n.log.Debug("advertise leaving", "err", err)
			}
		}
		if err := n.ml.Leave(2 * n.cfg.ProbeInterval); err != nil {
			n.log.Warn("leave ring", "err", err)
		}
	}
	if err := n.ml.Shutdown(); err != nil { // shuts our transport down too
		n.log.Warn("shut down memberlist", "err", err)
	}
	n.shutdown()
	n.store.closeSubs()
}

// shutdown stops the sender, the receive worker and the streams.
func (n *Node) shutdown() {
	n.closing.Lock()
	n.closed = true
	n.closing.Unlock()
	close(n.quit)
	n.wg.Wait()
}

// joinAtStart joins the seeds, or when none answers (or there are none),
// peers kept from the last run (joinKept). Failing both, the rejoin rounds
// go on trying; a host without seeds then has nobody to catch up with.
func (n *Node) joinAtStart(seeds []string) {
	var errs []error
	if len(seeds) > 0 {
		if !n.awaitAdmission(seeds) {
			return // stopped
		}
		k, err := n.ml.Join(seeds)
		if k > 0 {
			n.log.Info("joined ring", "seeds", seeds, "reached", k)
			return
		}
		errs = append(errs, err)
	}
	if p, err := n.joinKept(seeds, keptJoin); p != "" {
		n.log.Info("joined ring through a peer of the last run", "seeds", seeds, "peer", p)
		return
	} else if err != nil {
		errs = append(errs, err)
	}
	if len(seeds) == 0 {
		n.markSynced("")
	}
	n.log.Warn("join failed; retrying every rejoin interval", "seeds", seeds, "err", errors.Join(errs...))
}

// rejoinFailed bounds the failed peers a rejoin round contacts (chosen at
// random; seeds come on top), and a failed peer is contacted only once it
// has been down a whole RejoinInterval. One exchange across a healed
// partition is enough to start it healing: each side learns the other
// counted it down and refutes. In a storm of false downs (a large ring
// after a CPU stall) hosts come back by refuting within seconds, and a
// join then would only add a full membership exchange, whose merge spreads
// this host's stale "dead" views as suspicions.
const rejoinFailed = 2

// rejoin joins every seed and up to rejoinFailed failed peers that are not
// alive members. memberlist alone never contacts a peer again once it has
// given up on it, so without this a long partition would never heal.
func (n *Node) rejoin() {
	targets := n.rejoinTargets()
	if len(targets) > 0 {
		k, err := n.ml.Join(targets)
		n.log.Debug("rejoin", "targets", targets, "reached", k, "err", err)
	}
	if n.keptWanted() {
		// Alone, or among few of the hosts kept: the seeds may be the
		// hosts that are down, or the rest of the ring may not know us.
		p, err := n.joinKept(targets, keptRejoin)
		n.log.Debug("rejoin a kept peer", "reached", p, "err", err)
	}
}

// rejoinTargets returns the addresses a rejoin round joins: the seeds and
// up to rejoinFailed peers down for a RejoinInterval at least, none of
// them alive members.
func (n *Node) rejoinTargets() []string {
	downBefore := time.Now().Add(-n.cfg.RejoinInterval)
	alive := map[string]bool{n.addr: true}
	for _, m := range n.store.members() {
		alive[m.Addr.String()] = true
	}
	var targets []string
	for _, s := range n.seeds() {
		if a := withPort(s, n.port); !alive[a] {
			targets = append(targets, s)
			alive[a] = true // a failed seed is joined once, as a seed
		}
	}
	var failed []string
	n.mu.Lock()
	for _, f := range n.failed {
		if !alive[f.addr] && f.since.Before(downBefore) {
			failed = append(failed, f.addr)
		}
	}
	n.mu.Unlock()
	mrand.Shuffle(len(failed), func(i, j int) { failed[i], failed[j] = failed[j], failed[i] })
	return append(targets, failed[:min(len(failed), rejoinFailed)]...)
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
// known to be down, sorted by name.
func (n *Node) Members() []Member { return n.store.members() }

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
	return n.seal.reload()
}

// UseKey makes an installed key the primary, which encrypts what this host
// sends.
func (n *Node) UseKey(key []byte) error {
	if err := n.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use cluster key: %w", err)
	}
	return n.seal.reload()
}

// RemoveKey removes an installed key that is not the primary.
func (n *Node) RemoveKey(key []byte) error {
	if err := n.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove cluster key: %w", err)
	}
	return n.seal.reload()
}

// Subscribe returns a stream of changes, starting with a put for every
// visible entry, and a cancel function. The stream never blocks the node:
// events queue until read, at most one per entry (a newer event of an entry
// whose event is still queued replaces it, so a slow reader gets each
// entry's latest state, never an unbounded backlog). It is closed by
// cancel or when Run returns.
func (n *Node) Subscribe(buf int) (<-chan Event, func()) { return n.store.subscribe(buf) }
