package gossip

// The transport: one UDP socket and one TCP listener on the gossip port,
// shared by memberlist and the tables, split at the door. memberlist gets
// everything that does not start with frameMagic, exactly as its own
// NetTransport would hand it over; our frames never enter memberlist's
// handler queue, so table traffic cannot crowd out probes and membership
// news there (issue 12: one 1,024-message queue shared by both dropped
// either under a burst, and hosts under load were declared dead).
//
// Our packets go to a queue of their own, drained by the node's receive
// worker; when it is full they are dropped and counted, never blocking the
// socket reader, and repair brings back what they carried. Our streams
// (large messages: syncs, repairs) are read on a goroutine each, at most
// maxInStreams at once. The reader allocates one exact-size copy per packet
// from a reused buffer (memberlist's NetTransport allocates 64 KiB per
// packet, and its handler queue kept up to 1,024 of them). The socket's receive buffer is asked for 2 MiB, as memberlist
// does; the kernel buffer is the one thing both still share.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	udpRecvBuf = 2 << 20
	// udpReadBuf fits any packet a member sends: memberlist's are at most
	// its UDPBufferSize (1,400 bytes), ours at most 1,400 too, and 9,000
	// covers a jumbo-frame MTU. A longer datagram is cut short, and then
	// refused by its authentication tag.
	udpReadBuf    = 9000
	maxInStreams  = 64
	streamTimeout = 10 * time.Second // a stream's whole exchange, like memberlist's TCPTimeout
)

// transport implements memberlist.NodeAwareTransport and carries our
// frames beside it.
type transport struct {
	log  *slog.Logger
	udp  *net.UDPConn
	tcp  *net.TCPListener
	port int

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	onFrame  func(frame []byte, from netip.AddrPort) // must not block
	onStream func(r io.Reader, from net.Addr)        // runs on the connection's goroutine

	inStreams atomic.Int32
	mu        sync.Mutex // guards conns
	conns     map[net.Conn]bool
	closed    atomic.Bool
	done      chan struct{}
	wg        sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// listen binds UDP and TCP on the same port (a free one if port is 0).
func listen(addr netip.Addr, port int, log *slog.Logger) (*transport, error) {
	t := &transport{
		log:      log,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		conns:    make(map[net.Conn]bool),
		done:     make(chan struct{}),
	}
	var err error
	for try := 0; try < 10; try++ {
		t.tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			return nil, err
		}
		p := t.tcp.Addr().(*net.TCPAddr).Port
		t.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(p))))
		if err == nil {
			t.port = p
			break
		}
		_ = t.tcp.Close()
		if port != 0 {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	for size := udpRecvBuf; size > 0; size /= 2 {
		if t.udp.SetReadBuffer(size) == nil {
			break
		}
	}
	return t, nil
}

// start begins reading; onFrame and onStream must be set.
func (t *transport) start() {
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
}

func (t *transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, udpReadBuf)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if t.closed.Load() {
				return
			}
			t.log.Warn("read UDP packet", "err", err)
			continue
		}
		if n < 1 {
			continue
		}
		b := make([]byte, n)
		copy(b, buf[:n])
		if b[0] == frameMagic {
			t.onFrame(b, from)
			continue
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: b, From: net.UDPAddrFromAddrPort(from), Timestamp: time.Now()}:
		case <-t.done:
			return
		}
	}
}

func (t *transport) accept() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed.Load() {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("accept TCP connection", "err", err)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		if !t.track(c, true) {
			_ = c.Close()
			return
		}
		t.wg.Add(1)
		go t.route(c)
	}
}

// route reads a connection's first byte and hands it to memberlist or to
// the node.
func (t *transport) route(c *net.TCPConn) {
	defer t.wg.Done()
	_ = c.SetDeadline(time.Now().Add(streamTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		t.track(c, false)
		_ = c.Close()
		return
	}
	t.track(c, false)
	if first[0] != frameMagic {
		_ = c.SetDeadline(time.Time{}) // memberlist sets its own
		select {
		case t.streamCh <- &prefixConn{Conn: c, first: first[0]}:
		case <-t.done:
			_ = c.Close()
		}
		return
	}
	if !t.track(c, true) {
		_ = c.Close()
		return
	}
	defer func() {
		t.track(c, false)
		_ = c.Close()
	}()
	if t.inStreams.Add(1) > maxInStreams {
		t.inStreams.Add(-1)
		t.onStream(nil, c.RemoteAddr()) // counted as refused
		return
	}
	defer t.inStreams.Add(-1)
	t.onStream(c, c.RemoteAddr())
}

// track adds (or removes) a connection Shutdown must close; it refuses
// to add once shut down.
func (t *transport) track(c net.Conn, add bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !add {
		delete(t.conns, c)
		return true
	}
	if t.closed.Load() {
		return false
	}
	t.conns[c] = true
	return true
}

// prefixConn gives back the byte route read.
type prefixConn struct {
	net.Conn
	first byte
	read  bool
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if !p.read && len(b) > 0 {
		p.read = true
		b[0] = p.first
		return 1, nil
	}
	return p.Conn.Read(b)
}

// readFrame reads one length-prefixed frame of a stream of ours.
func readFrame(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > maxFrameLen+sealOverhead {
		return nil, fmt.Errorf("stream frame of %d bytes: %w", n, errTooLong)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// appendFrameHeader appends the length of a frame of n bytes.
func appendFrameHeader(buf []byte, n int) []byte {
	return binary.BigEndian.AppendUint32(buf, uint32(n))
}

func (t *transport) GetAutoBindPort() int { return t.port }

func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		a := t.udp.LocalAddr().(*net.UDPAddr)
		if a.IP.IsUnspecified() {
			return nil, 0, errors.New("no advertise address and bound to all addresses")
		}
		return a.IP, t.port, nil
	}
	a := net.ParseIP(ip)
	if a == nil {
		return nil, 0, fmt.Errorf("advertise address %q: not an IP address", ip)
	}
	if a4 := a.To4(); a4 != nil {
		a = a4
	}
	return a, port, nil
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return time.Time{}, err
		}
		ap = ua.AddrPort()
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the sockets and waits for the readers; memberlist calls
// it from its own Shutdown.
func (t *transport) Shutdown() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(t.done)
	err := errors.Join(t.udp.Close(), t.tcp.Close())
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}
