package gossip

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// newTestNode is a Node without memberlist or sockets: its sender and
// receive worker run, and what it sends is recorded by a fakeWire.
func newTestNode(t testing.TB, name string) *Node {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := memberlist.NewKeyring([][]byte{key}, key)
	if err != nil {
		t.Fatal(err)
	}
	seal, err := newSealer("tenet", kr)
	if err != nil {
		t.Fatal(err)
	}
	w := &testLog{}
	if tt, ok := t.(*testing.T); ok {
		w.out = tt.Output()
	}
	t.Cleanup(w.close)
	n := &Node{
		cfg:     Config{NodeName: name, VTEP: netip.MustParseAddr("203.0.113.99"), TombstoneTTL: 30 * time.Minute, SyncInterval: time.Second},
		log:     slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})),
		store:   newStore(name, time.Now, 30*time.Minute),
		keyring: kr,
		seal:    seal,
		out:     newOutbox(),
		inbox:   inbox{wake: make(chan struct{}, 1)},
		quit:    make(chan struct{}),
		vtepFix: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		healCh:  make(chan string, 64),
		firstCh: make(chan string, 64),
		reheal:  make(chan string, 64),
		failed:  make(map[string]failed),
		syncs:   map[string]*scopeSync{"": newScopeSync()},
		gaps:    make(map[want]*gap),
		warned:  make(map[string]bool),
		inFrom:  make(map[string]int),
		busy:    make(map[string]time.Time),
		admitCh: make(chan bool, 16),
	}
	fw := &fakeWire{seal: seal}
	n.wire = fw
	n.store.setMember(name, addrOf(name), n.cfg.VTEP, wireVersion, true, false)
	n.wg.Add(2)
	go n.sender()
	go n.receiver()
	t.Cleanup(n.shutdown)
	return n
}

func (n *Node) fake() *fakeWire { return n.wire.(*fakeWire) }

// sentMsg is a message a test node sent, opened.
type sentMsg struct {
	to string
	m  *message
}

// fakeWire records what a node sends, by packet or by stream; block, if
// set, makes every send wait until it is closed (an unreachable peer).
type fakeWire struct {
	seal    *sealer
	block   chan struct{}
	blocked atomic.Int32 // sends waiting on block
	discard bool         // record nothing (benchmarks)

	mu   sync.Mutex
	sent []sentMsg
}

func (f *fakeWire) record(to string, frame []byte) {
	if f.discard {
		return
	}
	plain, err := f.seal.open(frame)
	if err != nil {
		panic(err)
	}
	m, err := decodeMessage(plain)
	if err != nil {
		panic(err)
	}
	f.mu.Lock()
	f.sent = append(f.sent, sentMsg{to, m})
	f.mu.Unlock()
}

// await waits for a sent message that match accepts and returns it.
func (f *fakeWire) await(t testing.TB, match func(sentMsg) bool) sentMsg {
	t.Helper()
	var found sentMsg
	eventually(t, 5*time.Second, "message sent", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sent {
			if match(s) {
				found = s
				return nil
			}
		}
		return errors.New("not yet")
	})
	return found
}

func (f *fakeWire) wait() {
	if f.block != nil {
		f.blocked.Add(1)
		<-f.block
		f.blocked.Add(-1)
	}
}

func (f *fakeWire) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	f.wait()
	f.record(a.Addr, b)
	return time.Now(), nil
}

func (f *fakeWire) DialAddressTimeout(a memberlist.Address, _ time.Duration) (net.Conn, error) {
	f.wait()
	c, s := net.Pipe()
	go func() {
		defer s.Close()
		var magic [1]byte
		if _, err := io.ReadFull(s, magic[:]); err != nil {
			return
		}
		for {
			frame, err := readFrame(s)
			if err != nil {
				return
			}
			f.record(a.Addr, frame)
		}
	}()
	return c, nil
}

func (f *fakeWire) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return nil, 0, errors.New("fake")
}
func (f *fakeWire) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}
func (f *fakeWire) PacketCh() <-chan *memberlist.Packet { return nil }
func (f *fakeWire) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	return f.DialAddressTimeout(memberlist.Address{Addr: addr}, d)
}
func (f *fakeWire) StreamCh() <-chan net.Conn { return nil }
func (f *fakeWire) Shutdown() error           { return nil }
