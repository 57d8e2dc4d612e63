package gossip

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// maxAhead bounds how far an entry's version may be ahead of this host's
// wall clock. Versions track the wall clock in microseconds (see clock),
// so a much larger one comes from a broken or hostile sender; accepting
// it would drag every host's clock up to it, and near 2^64 the clock
// would wrap. A day tolerates badly set clocks (time zones) between hosts.
const maxAhead = 24 * time.Hour

// inboxDepth bounds the packets of ours waiting for the receive worker;
// beyond it they are dropped (counted as queue-full) and repaired.
const inboxDepth = 4096

var (
	errOwnership = errors.New("entry owned by another host")
	errFuture    = errors.New("version too far ahead of the clock")
	errScope     = errors.New("entry outside the message's scopes")
	errQueueFull = errors.New("receive queue full")
	errRefused   = errors.New("too many incoming streams")
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
	streamMu      sync.Mutex    // guards streamQ and streamWorkers
	streamQ       []streamJob
	streamWorkers int
	backlogAt     atomic.Int64 // unix nanoseconds: when input last waited to be handled
	closing       sync.RWMutex // write-held once stopping: no new stream starts
	closed        bool         // guarded by closing
	stopped       sync.Once
	rejoining     atomic.Bool
	running       atomic.Bool

	addr string // host:port others join
	port uint16

	mu     sync.Mutex            // guards the fields below
	inFrom map[string]int        // incoming streams being read, by sender
	busy   map[string]time.Time  // scopes with recent traffic: when last
	failed map[string]failed     // recently failed peers, joined again by Run
	syncs  map[string]*scopeSync // first-sync state per scope ("" and networks)
	gaps   map[want]*gap         // writers whose digest differs from our copy
	warned map[string]bool       // peers warned about for their wire version
}

type failed struct {
	addr  string
	since time.Time
}

type inPacket struct {
	frame []byte
	from  netip.AddrPort
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
		failed:  make(map[string]failed),
		syncs:   map[string]*scopeSync{"": newScopeSync()},
		gaps:    make(map[want]*gap),
		warned:  make(map[string]bool),
		inFrom:  make(map[string]int),
		busy:    make(map[string]time.Time),
	}
	kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
	if err != nil {
		return nil, fmt.Errorf("gossip: Keys: %w", err)
	}
	n.keyring = kr
	if n.seal, err = newSealer(cfg.Cluster, kr); err != nil {
		return nil, fmt.Errorf("gossip: Keys: %w", err)
	}

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
	if len(n.seeds()) == 0 {
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
	if seeds := n.seeds(); len(seeds) > 0 {
		// Joined aside: a join dials each seed in turn, and Run's loop must
		// serve first syncs meanwhile.
		n.rejoining.Store(true)
		go func() {
			defer n.rejoining.Store(false)
			if k, err := n.ml.Join(seeds); err != nil && k == 0 {
				n.log.Warn("join seeds failed; retrying every rejoin interval", "seeds", seeds, "err", err)
			} else {
				n.log.Info("joined ring", "seeds", seeds, "reached", k)
			}
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
			// TCPTimeout to fail, so it runs aside, one at a time.
			if n.rejoining.CompareAndSwap(false, true) {
				go func() {
					defer n.rejoining.Store(false)
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
			n.heal(name)
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

// rejoin joins every seed and recently failed peer that is not an alive
// member. memberlist alone never contacts a peer again once it has given
// up on it, so without this a long partition would never heal.
func (n *Node) rejoin() {
	alive := map[string]bool{n.addr: true}
	for _, m := range n.store.members() {
		alive[m.Addr.String()] = true
	}
	var targets []string
	for _, s := range n.seeds() {
		if !alive[withPort(s, n.port)] {
			targets = append(targets, s)
		}
	}
	n.mu.Lock()
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
// events queue (unbounded) until read. It is closed by cancel or when Run
// returns.
func (n *Node) Subscribe(buf int) (<-chan Event, func()) { return n.store.subscribe(buf) }

// inbox queues our packets for the receive worker: a slice that grows
// only while packets wait (an idle node holds none), bounded by
// inboxDepth.
type inbox struct {
	mu    sync.Mutex // guards queue
	queue []inPacket
	wake  chan struct{}
}

func (q *inbox) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// onFrame queues a packet of ours for the receive worker; it runs on the
// socket reader and never blocks.
func (n *Node) onFrame(frame []byte, from netip.AddrPort) {
	q := &n.inbox
	q.mu.Lock()
	if len(q.queue) >= inboxDepth {
		q.mu.Unlock()
		n.drop(errQueueFull, "", "")
		return
	}
	q.queue = append(q.queue, inPacket{frame, from})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// receiver opens and handles queued packets until the node stops.
func (n *Node) receiver() {
	defer n.wg.Done()
	q := &n.inbox
	for {
		select {
		case <-n.quit:
			return
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			batch := q.queue
			q.queue = nil
			q.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if len(batch) > 1 {
				n.backlogAt.Store(time.Now().UnixNano())
			}
			for _, p := range batch {
				n.stats.bytesReceived.Add(uint64(len(p.frame)))
				plain, err := n.seal.open(p.frame)
				if err != nil {
					n.drop(err, p.from.String(), "")
					continue
				}
				n.handle(plain, p.from)
			}
		}
	}
}

// onStream reads and handles the messages of one incoming stream of ours;
// r is nil if it was refused (too many at once).
func (n *Node) onStream(r io.Reader, from net.Addr) {
	if r == nil {
		n.drop(errRefused, from.String(), "")
		return
	}
	var sender string
	defer func() {
		if sender != "" {
			n.streaming(sender, -1)
		}
	}()
	for {
		frame, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				n.log.Debug("read stream", "from", from, "err", err)
			}
			return
		}
		n.stats.bytesReceived.Add(uint64(len(frame) + 4))
		plain, err := n.seal.open(frame)
		if err != nil {
			n.drop(err, from.String(), "")
			return
		}
		if sender == "" {
			// Known before the message is handled, so no gap is judged
			// while the rest of this stream is on its way.
			if s := peekSender(plain); s != "" {
				sender = s
				n.streaming(sender, 1)
			}
		}
		n.handle(plain, netip.AddrPort{})
	}
}

// streaming counts the incoming streams from sender being read.
func (n *Node) streaming(sender string, delta int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inFrom[sender] += delta; n.inFrom[sender] <= 0 {
		delete(n.inFrom, sender)
	}
}

// peekSender returns the sender of an encoded message, or "".
func peekSender(b []byte) string {
	r := reader{b: b}
	if r.byte() != wireVersion {
		return ""
	}
	r.byte()
	r.byte()
	s := r.str(maxNameLen)
	if r.err != nil {
		return ""
	}
	return s
}

// handle decodes and applies one message from another host; from is the
// packet's source (invalid for streams and memberlist's channels).
func (n *Node) handle(b []byte, from netip.AddrPort) {
	m, err := decodeMessage(b)
	if err != nil {
		n.drop(err, "", "")
		return
	}
	if m.sender == "" || m.sender == n.cfg.NodeName {
		n.drop(fmt.Errorf("sender %q: %w", m.sender, errOwnership), m.sender, "")
		return
	}
	n.stats.received.Add(1)
	switch m.typ {
	case msgUpdate:
		n.apply(m)
		now := time.Now()
		for _, d := range m.digests {
			if d.owner == m.sender {
				n.noteDigest(d, now)
			}
		}
	case msgState:
		n.apply(m)
		n.markSynced("")
		n.caughtUp("")
		n.kickNow() // attachments are known now: first syncs can start
	case msgSyncReq:
		n.answerSyncReq(m, from)
	case msgDigest:
		n.answerDigest(m, from)
	case msgOwners:
		n.answerOwners(m, from)
	case msgEntries:
		n.progress(m.sender, m.scopes, time.Now())
		n.apply(m)
		if m.flags&flagDone != 0 {
			n.markSynced(m.scopes...)
			n.caughtUp(m.scopes...)
		}
		if len(m.wants) > 0 {
			n.answerWants(m, from)
		}
	}
}

// apply admits and merges a message's entries.
func (n *Node) apply(m *message) {
	if len(m.entries) == 0 {
		return
	}
	scopes := make(map[string]bool, len(m.scopes))
	for _, s := range m.scopes {
		scopes[s] = true
	}
	adopt := make(map[string]bool) // scope -> still adopting own entries
	var sends []pendKey
	defer n.active(m)
	for i := range m.entries {
		e := &m.entries[i]
		if err := n.admit(m, e, scopes); err != nil {
			n.drop(err, m.sender, e.key)
			continue
		}
		scope := scopeOf(e.table, e.value)
		a, ok := adopt[scope]
		if !ok && e.owner == n.cfg.NodeName {
			a = n.adopting(scope)
			adopt[scope] = a
		}
		switch n.store.merge(e, a) {
		case mergeApplied:
			n.stats.applied.Add(1)
			if e.table == tableAttachments && !e.deleted && n.store.isAttached(e.key) && !n.isSynced(e.key) {
				n.kickNow() // a host to sync the network with
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
		case mergeOwnStale:
			n.stats.stale.Add(1)
			if s, ok := n.mergeOwn(e); ok {
				sends = append(sends, s)
			}
		case mergeUnscoped:
			n.stats.unscoped.Add(1) // not ours to keep: this host lacks the network
		case mergeStale, mergeReaped:
			n.stats.stale.Add(1)
		}
	}
	for _, pk := range sends {
		n.out.add(pk)
	}
}

// mergeOwn answers a live copy of one of this host's entries that this
// host does not hold, met once it has caught up after its start: deleted
// so long ago that its tombstone expired everywhere, yet kept by a host
// that missed the delete (cut off for longer than TombstoneTTL). A fresh
// tombstone ends it on every host.
func (n *Node) mergeOwn(e *entry) (pendKey, bool) {
	if e.deleted {
		return pendKey{}, false
	}
	scope := n.store.retire(e.table, e.key, e.value)
	n.stats.retired.Add(1)
	return pendKey{scope, e.table, e.key}, true
}

// admit checks one received entry: its owner (an update carries only its
// sender's entries; push/pull states and syncs relay other hosts'
// entries), its scope (a state or sync carries only entries of the scopes
// it names), the version's distance from the clock, then its table and
// value.
func (n *Node) admit(m *message, e *entry, scopes map[string]bool) error {
	switch {
	case e.owner == "":
		return fmt.Errorf("empty owner: %w", errOwnership)
	case m.typ == msgUpdate && e.owner != m.sender:
		return fmt.Errorf("update from %q for %q: %w", m.sender, e.owner, errOwnership)
	case m.typ == msgState && (e.table == tableEndpoints || !scopes[""]):
		return fmt.Errorf("state carries %s %q: %w", e.table.name(), e.key, errScope)
	case e.version > uint64(time.Now().Add(maxAhead).UnixMicro()):
		return fmt.Errorf("version %d: %w", e.version, errFuture)
	}
	if err := checkValue(e); err != nil {
		return err
	}
	if m.typ != msgUpdate && !scopes[scopeOf(e.table, e.value)] {
		return fmt.Errorf("message about %q carries %s %q: %w", m.scopes, e.table.name(), e.key, errScope)
	}
	return nil
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

// metaVersion is the version of the node metadata: the VTEP, then the wire
// version the host speaks (absent before wire version 2; version 1
// decoders ignore it).
const metaVersion = 1

// nodeMeta is the metadata a host advertises.
func nodeMeta(vtep netip.Addr) []byte {
	return append(appendAddr([]byte{metaVersion}, vtep), wireVersion)
}

func decodeMeta(b []byte) (vtep netip.Addr, wire uint8) {
	r := reader{b: b}
	if r.byte() != metaVersion {
		return netip.Addr{}, 0
	}
	vtep = r.addr()
	if r.err != nil {
		return netip.Addr{}, 0
	}
	wire = 1
	if len(r.b) > 0 {
		wire = r.byte()
	}
	return vtep, wire
}
