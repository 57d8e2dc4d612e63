package gossip

// Sending. A write (Put, Delete, Attach, Detach, KV().Put) stores the
// change and marks its key pending; it never touches the network, so a
// caller holding its own locks cannot stall on an unreachable peer. One
// sender goroutine per node takes everything pending at once and sends it:
//
//   - coalescing: a key written many times before the sender gets to it is
//     sent once, at its latest version;
//   - batching: the changes of one scope go out together, packed into as
//     few packets as fit (packetBudget bytes each), each sealed once and the
//     same bytes written to every host that keeps the scope (the hosts
//     attached to an endpoint's network, every host for the global tables),
//     so the writer pays neither a send nor an encryption per receiver;
//   - once a scope has been quiet for trailDelay, a packet with the writer's
//     digest of its own entries there follows (the trail): a receiver whose
//     copy of the writer's entries differs pulls them from the writer (see
//     sync.go), so a lost packet is repaired within about a second of the
//     end of a burst instead of at the next anti-entropy round. The trail
//     goes out when nothing is pending, so it describes exactly what was
//     sent, and after it on the same socket, so it arrives after it.
//
// Large messages (an entry that does not fit a packet, a batch of more than
// maxBatchPackets packets, sync answers) go over TCP, which paces them
// where a burst of packets would overflow the receiver's socket buffer:
// queued, and written by up to maxOutStreams short-lived workers, one
// connection per stream. A full queue drops and counts (repair covers it).

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// packetBudget is the largest message sent as one UDP packet: with
	// sealOverhead it stays within 1,400 bytes, memberlist's own packet
	// size, which fits a 1,500-byte MTU with IP and UDP headers.
	packetBudget     = 1400 - sealOverhead
	trailDelay       = 200 * time.Millisecond
	maxOutStreams    = 8    // streams written at once
	maxQueuedStreams = 4096 // streams waiting; beyond, dropped and counted
	// maxQueuedBytes bounds what the waiting streams hold, so that a host
	// asked for much at once (many pulls in a repair storm) cannot queue
	// without limit: a 50-host ring holding 100,000 endpoints, every host
	// answering pulls of thousands of entries, grew past 24 GiB before it.
	// A first sync of 100,000 endpoints (about 15 MiB) fits with room.
	maxQueuedBytes  = 64 << 20
	maxBatchPackets = 64 // a scope's batch above this goes by stream
	dialTimeout     = 2 * time.Second
	// chunkBudget bounds one message of a stream, so a large answer is
	// encoded, sealed and applied a piece at a time.
	chunkBudget = 256 << 10
)

// pendKey is one of this host's entries waiting to be sent.
type pendKey struct {
	scope string
	table tableID
	key   string
}

// outbox holds the pending keys.
type outbox struct {
	mu      sync.Mutex // guards pending
	pending map[pendKey]struct{}
	wake    chan struct{}
}

func newOutbox() *outbox {
	return &outbox{pending: make(map[pendKey]struct{}), wake: make(chan struct{}, 1)}
}

func (o *outbox) add(pk pendKey) {
	o.mu.Lock()
	o.pending[pk] = struct{}{}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) take() []pendKey {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) == 0 {
		return nil
	}
	out := make([]pendKey, 0, len(o.pending))
	for pk := range o.pending {
		out = append(out, pk)
	}
	clear(o.pending)
	return out
}

func (o *outbox) depth() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

// sender sends pending changes and trailing digests until the node stops.
func (n *Node) sender() {
	defer n.wg.Done()
	trails := make(map[string]time.Time) // scope -> when its trailing digest is due
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-n.out.wake:
		case <-timer.C:
		}
		if batch := n.out.take(); len(batch) > 0 {
			due := time.Now().Add(trailDelay)
			for _, scope := range n.sendUpdates(batch) {
				trails[scope] = due
			}
		}
		now := time.Now()
		var next time.Time
		busy := n.streamsBusy() // a trail must not overtake the batches still on streams
		for scope, due := range trails {
			if !due.After(now) && busy {
				due = now.Add(trailDelay)
				trails[scope] = due
			}
			if !due.After(now) {
				n.sendTrail(scope)
				delete(trails, scope)
			} else if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// sendUpdates sends the current state of the given entries of this host to
// the hosts that keep them; it returns the scopes it sent to.
func (n *Node) sendUpdates(batch []pendKey) []string {
	groups := n.store.ownRecords(batch)
	var sent []string
	for scope, es := range groups {
		peers := n.store.audience(scope)
		if len(peers) == 0 {
			continue
		}
		msgs := packUpdates(n.cfg.NodeName, es, packetBudget)
		if len(msgs) > maxBatchPackets {
			// A burst this large would overflow receivers' socket
			// buffers as packets; TCP paces it.
			var sealed [][]byte
			for _, plain := range packUpdates(n.cfg.NodeName, es, chunkBudget) {
				sealed = append(sealed, n.seal.seal(nil, plain))
			}
			for _, p := range peers {
				n.stream(p, nil, sealed)
			}
		} else {
			for _, plain := range msgs {
				n.broadcast(plain, peers)
			}
		}
		sent = append(sent, scope)
	}
	return sent
}

// sendTrail sends this host's digest of a scope alone to the hosts that
// keep it.
func (n *Node) sendTrail(scope string) {
	peers := n.store.audience(scope)
	if len(peers) == 0 {
		return
	}
	t, asOf := n.store.ownTally(scope)
	d := digest{scope: scope, owner: n.cfg.NodeName, count: t.count, sum: t.sum, asOf: asOf}
	n.broadcast(encodeMessage(nil, &message{typ: msgUpdate, sender: n.cfg.NodeName, digests: []digest{d}}), peers)
}

// packUpdates encodes this host's entries of one scope as msgUpdate
// messages of at most budget bytes each (an entry too large for one gets
// a message of its own).
func packUpdates(self string, es []entry, budget int) [][]byte {
	// Every entry is this host's, so the owner dictionary is [self] and
	// every entry's owner index is 0: the entries encode independently of
	// the rest of the message, whose head is the same for all.
	prefix := append([]byte{wireVersion, msgUpdate, 0}, appendStr(nil, self)...)
	prefix = append(prefix, 1)       // owners: one
	prefix = appendStr(prefix, self) // ... this host
	prefix = append(prefix, 0, 0, 0) // no scopes, digests or wants
	var out [][]byte
	var cur [][]byte
	size := len(prefix) + 2
	flush := func() {
		if len(cur) == 0 {
			return
		}
		b := make([]byte, 0, size+1)
		b = append(b, prefix...)
		b = binary.AppendUvarint(b, uint64(len(cur)))
		for _, e := range cur {
			b = append(b, e...)
		}
		out = append(out, b)
		cur, size = nil, len(prefix)+2
	}
	for i := range es {
		enc := appendEntry(nil, &es[i], 0)
		if size+len(enc) > budget {
			flush()
		}
		cur = append(cur, enc)
		size += len(enc)
	}
	flush()
	return out
}

// broadcast sends one message to every peer, sealed once: as a packet if
// it fits, else on a stream each.
func (n *Node) broadcast(plain []byte, peers []peer) {
	frame := n.seal.seal(nil, plain)
	if len(plain) > packetBudget {
		for _, p := range peers {
			n.stream(p, nil, [][]byte{frame})
		}
		return
	}
	for _, p := range peers {
		n.writePacket(frame, p)
	}
}

// writePacket sends one sealed frame as a UDP packet.
func (n *Node) writePacket(frame []byte, p peer) {
	var err error
	if n.wire == memberlist.NodeAwareTransport(n.tr) {
		_, err = n.tr.udp.WriteToUDPAddrPort(frame, p.addr) // no wrapper: skip the address's round trip through a string
	} else {
		_, err = n.wire.WriteToAddress(frame, memberlist.Address{Addr: p.addr.String(), Name: p.name})
	}
	if err != nil {
		n.stats.sendErrors.Add(1)
		n.log.Debug("send packet", "to", p.name, "err", err)
		return
	}
	n.stats.sent.Add(1)
	n.stats.bytesSent.Add(uint64(len(frame)))
}

// send sends one message to one peer: a packet if it fits, else a stream
// (an entries message is split into chunks).
func (n *Node) send(p peer, m *message) {
	if m.typ == msgEntries && approxSize(m.entries) > chunkBudget {
		n.stream(p, chunk(m), nil)
		return
	}
	plain := encodeMessage(nil, m)
	if len(plain) <= packetBudget {
		n.writePacket(n.seal.seal(nil, plain), p)
		return
	}
	n.stream(p, nil, [][]byte{n.seal.seal(nil, plain)})
}

// approxSize estimates the encoded size of entries.
func approxSize(es []entry) int {
	size := 0
	for i := range es {
		size += 16 + len(es[i].key) + len(es[i].value)
	}
	return size
}

// chunk splits an entries message into messages of about chunkBudget
// bytes; only the last keeps the done flag and the wants.
func chunk(m *message) []*message {
	var out []*message
	start, size := 0, 0
	for i := range m.entries {
		size += 16 + len(m.entries[i].key) + len(m.entries[i].value)
		if size >= chunkBudget {
			out = append(out, &message{typ: m.typ, sender: m.sender, scopes: m.scopes, entries: m.entries[start : i+1]})
			start, size = i+1, 0
		}
	}
	return append(out, &message{typ: m.typ, flags: m.flags, sender: m.sender, scopes: m.scopes, wants: m.wants, entries: m.entries[start:]})
}

// streamJob is what one stream carries to one peer: messages encoded and
// sealed when the stream is written, then frames sealed already (shared by
// every peer a batch goes to).
type streamJob struct {
	p      peer
	msgs   []*message
	sealed [][]byte
	size   int // about what it holds, in bytes (jobSize)
}

// jobSize estimates the bytes a stream job holds until it is written.
func jobSize(msgs []*message, sealed [][]byte) int {
	size := 0
	for _, m := range msgs {
		size += 64 + approxSize(m.entries) + 32*len(m.digests)
	}
	for _, f := range sealed {
		size += len(f)
	}
	return size
}

// stream queues a stream to a peer. Up to maxOutStreams workers write the
// queue, each stream on its own connection; workers start when there is
// work and end when there is none, so an idle node runs none.
func (n *Node) stream(p peer, msgs []*message, sealed [][]byte) {
	n.closing.RLock()
	defer n.closing.RUnlock()
	if n.closed {
		return
	}
	size := jobSize(msgs, sealed)
	n.streamMu.Lock()
	if len(n.streamQ) >= maxQueuedStreams || (len(n.streamQ) > 0 && n.streamBytes+size > maxQueuedBytes) {
		n.streamMu.Unlock()
		n.stats.sendErrors.Add(1)
		n.log.Debug("stream queue full; dropped a message", "to", p.name, "bytes", size)
		return
	}
	n.streamQ = append(n.streamQ, streamJob{p, msgs, sealed, size})
	n.streamBytes += size
	spawn := n.streamWorkers < maxOutStreams
	if spawn {
		n.streamWorkers++
		n.wg.Add(1)
	}
	n.streamMu.Unlock()
	if spawn {
		go n.streamWorker()
	}
}

// streamsBusy reports whether streams are queued or being written.
func (n *Node) streamsBusy() bool {
	n.streamMu.Lock()
	defer n.streamMu.Unlock()
	return n.streamWorkers > 0 || len(n.streamQ) > 0
}

func (n *Node) streamWorker() {
	defer n.wg.Done()
	for {
		n.streamMu.Lock()
		if len(n.streamQ) == 0 {
			n.streamWorkers--
			n.streamMu.Unlock()
			return
		}
		job := n.streamQ[0]
		n.streamQ[0] = streamJob{}
		n.streamQ = n.streamQ[1:]
		n.streamBytes -= job.size
		n.streamMu.Unlock()
		select {
		case <-n.quit:
			continue // drain without sending
		default:
		}
		if err := n.writeStream(job); err != nil {
			n.stats.sendErrors.Add(1)
			n.log.Debug("send stream", "to", job.p.name, "err", err)
		}
	}
}

func (n *Node) writeStream(job streamJob) error {
	c, err := n.wire.DialAddressTimeout(memberlist.Address{Addr: job.p.addr.String(), Name: job.p.name}, dialTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(streamTimeout))
	stop := closeOnQuit(n.quit, c)
	defer stop()
	buf := []byte{frameMagic}
	write := func(frame []byte) error {
		buf = appendFrameHeader(buf, len(frame))
		buf = append(buf, frame...)
		_, err := c.Write(buf)
		buf = buf[:0]
		if err == nil {
			n.stats.sent.Add(1)
			n.stats.bytesSent.Add(uint64(len(frame) + 4))
		}
		return err
	}
	for _, m := range job.msgs {
		if err := write(n.seal.seal(nil, encodeMessage(nil, m))); err != nil {
			return err
		}
	}
	for _, frame := range job.sealed {
		if err := write(frame); err != nil {
			return err
		}
	}
	return nil
}

// closeOnQuit closes c when quit closes, so a stream does not outlive the
// node; the returned func ends the watch.
func closeOnQuit(quit <-chan struct{}, c net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-quit:
			_ = c.Close()
		case <-done:
		}
	}()
	return func() { close(done) }
}
