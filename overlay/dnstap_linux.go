package overlay

// A tap on the answers of Docker's embedded DNS in one container's network
// namespace. Docker answers a name its own engine holds (an alias shared
// by a local container and containers on other hosts) with the local
// addresses only, and never asks Tenet's resolver. So the answers its
// embedded DNS (127.0.0.11:53, a socket of dockerd's inside the
// container's namespace) sends to the container are queued to tenetd
// (nf_tables queue with bypass, nfnetlink_queue), which lets each through
// unchanged or with other hosts' addresses added.
//
// It fails open: the queue rule has the bypass flag, so while no socket of
// tenetd's is bound to the queue (tenetd stopped, crashed or restarting)
// the kernel lets the answers through untouched, and the queue is set to
// let packets through when full. Only UDP answers from 127.0.0.11:53 go
// through it; everything else the container sends or receives does not.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dockerDNSTable is the table that queues Docker's DNS answers in a
// container's namespace.
const dockerDNSTable = "tenet-dns-answers"

// DockerDNSAddr is the address of Docker's embedded DNS in a container.
var DockerDNSAddr = netip.MustParseAddr("127.0.0.11")

// nfnetlink_queue (linux/netfilter/nfnetlink_queue.h), absent from x/sys.
const (
	nfqMsgPacket  = 0
	nfqMsgVerdict = 1
	nfqMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaPayload    = 10

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3
	nfqaCfgMask     = 4
	nfqaCfgFlags    = 5

	nfqCfgCmdBind   = 1
	nfqCopyPacket   = 2
	nfqCfgFFailOpen = 1

	nfAccept = 1

	nfqFlagBypass = 1 // xt_NFQUEUE's NFQ_FLAG_BYPASS
)

// tapQueueLen bounds the answers waiting for tenetd in one container's
// namespace; past it the kernel lets them through unchanged.
const tapQueueLen = 256

// DNSTap is the queue of one container's answers from Docker's embedded
// DNS (TapDockerDNS). Read and the verdicts may run on different
// goroutines; Close ends a Read.
type DNSTap struct {
	conn   *mnl.Conn
	ns     NSID
	closed atomic.Bool
}

// TappedAnswer is one UDP answer of Docker's embedded DNS on its way to
// the container: DNS is its DNS message.
type TappedAnswer struct {
	ID  uint32
	DNS []byte
	pkt []byte // the IPv4 packet
	ihl int
}

// TapDockerDNS queues the answers of Docker's embedded DNS in the network
// namespace at sandbox (Docker's sandbox key) to a new DNSTap: it puts the
// queue table there (replacing it whole, so a tap made again after a
// restart finds it as it left it) and binds queue 0 of that namespace.
// A second tap on the same namespace fails (the queue is bound).
func (d *Datapath) TapDockerDNS(sandbox string) (*DNSTap, error) {
	ns, err := netns.GetFromPath(sandbox)
	if err != nil {
		return nil, fmt.Errorf("tap DNS answers in %s: %w", sandbox, err)
	}
	defer ns.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(ns), &st); err != nil {
		return nil, fmt.Errorf("tap DNS answers in %s: %w", sandbox, err)
	}
	conn, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(ns)})
	if err != nil {
		return nil, fmt.Errorf("tap DNS answers in %s: netlink: %w", sandbox, err)
	}
	t := &DNSTap{conn: conn, ns: NSID(st.Ino)}
	if err := t.bind(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tap DNS answers in %s: bind queue: %w", sandbox, err)
	}
	if err := putTapTable(ns); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tap DNS answers in %s: %w", sandbox, err)
	}
	return t, nil
}

// UntapDockerDNS removes the queue table from the namespace at sandbox,
// if both are still there (a container that left its last Tenet network
// but runs on). Close the tap too.
func (d *Datapath) UntapDockerDNS(sandbox string) error {
	ns, err := netns.GetFromPath(sandbox)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("untap DNS answers in %s: %w", sandbox, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("untap DNS answers in %s: %w", sandbox, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: dockerDNSTable}
	c.AddTable(t) // so that the delete finds it
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("untap DNS answers in %s: %w", sandbox, err)
	}
	return nil
}

// putTapTable replaces the queue table in ns whole, in one transaction:
// UDP from 127.0.0.11:53, after conntrack has undone Docker's NAT of its
// port (input, after source NAT's priority), goes to queue 0, bypassed
// while nobody listens.
func putTapTable(ns netns.NsHandle) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: dockerDNSTable}
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := baseChain(c, t, "answers", nftables.ChainHookInput, nftables.ChainPriorityRef(150), nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
	src := DockerDNSAddr.As4()
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
		nfqueueTarget(),
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// nfqueueTarget is xtables' NFQUEUE target, revision 3 (queue 0 of 1,
// bypassed while unbound), through nft_compat: kernels without nf_tables'
// own queue expression (CONFIG_NFT_QUEUE, absent here) have it.
func nfqueueTarget() *expr.Target {
	info := make([]byte, 8)                    // struct xt_NFQ_info_v3, host order, aligned to 8
	binary.NativeEndian.PutUint16(info[0:], 0) // queuenum
	binary.NativeEndian.PutUint16(info[2:], 1) // queues_total
	binary.NativeEndian.PutUint16(info[4:], nfqFlagBypass)
	x := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &x}
}

// NS is the namespace the tap works in.
func (t *DNSTap) NS() NSID { return t.ns }

// Close unbinds the queue (the kernel lets answers through from then on)
// and ends a Read. The table stays (see UntapDockerDNS).
func (t *DNSTap) Close() error {
	t.closed.Store(true)
	return t.conn.Close()
}

func nfqHeader(msg int) mnl.HeaderType {
	return mnl.HeaderType(unix.NFNL_SUBSYS_QUEUE<<8 | msg)
}

// bind binds queue 0, whole packets, fail-open past tapQueueLen.
func (t *DNSTap) bind() error {
	cmd := mnl.NewAttributeEncoder()
	cmd.Bytes(nfqaCfgCmd, []byte{nfqCfgCmdBind, 0, 0, 0}) // command, pad, pf (unused)
	params := mnl.NewAttributeEncoder()
	params.ByteOrder = binary.BigEndian
	p := make([]byte, 5)
	binary.BigEndian.PutUint32(p, 0xffff)
	p[4] = nfqCopyPacket
	params.Bytes(nfqaCfgParams, p)
	params.Uint32(nfqaCfgQueueMax, tapQueueLen)
	params.Uint32(nfqaCfgMask, nfqCfgFFailOpen)
	params.Uint32(nfqaCfgFlags, nfqCfgFFailOpen)
	for _, ae := range []*mnl.AttributeEncoder{cmd, params} {
		attrs, err := ae.Encode()
		if err != nil {
			return err
		}
		if _, err := t.conn.Execute(mnl.Message{
			Header: mnl.Header{Type: nfqHeader(nfqMsgConfig), Flags: mnl.Request | mnl.Acknowledge},
			Data:   append(nfgen(unix.AF_UNSPEC), attrs...),
		}); err != nil {
			return err
		}
	}
	return nil
}

// Read waits for queued answers. A packet that is not a whole IPv4 UDP
// datagram is let through at once and not returned. After Close it
// returns net.ErrClosed (wrapped); other errors (the socket's buffer ran
// over: the kernel let those answers through) may be followed by more
// reads.
func (t *DNSTap) Read() ([]TappedAnswer, error) {
	msgs, err := t.conn.Receive()
	if err != nil {
		if t.closed.Load() {
			return nil, fmt.Errorf("DNS tap: %w", net.ErrClosed)
		}
		return nil, err
	}
	var out []TappedAnswer
	for _, m := range msgs {
		if m.Header.Type != nfqHeader(nfqMsgPacket) || len(m.Data) < 4 {
			continue
		}
		ad, err := mnl.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			continue
		}
		var id uint32
		var pkt []byte
		haveID := false
		for ad.Next() {
			switch ad.Type() {
			case nfqaPacketHdr:
				if b := ad.Bytes(); len(b) >= 4 {
					id, haveID = binary.BigEndian.Uint32(b), true
				}
			case nfqaPayload:
				pkt = ad.Bytes()
			}
		}
		if !haveID {
			continue
		}
		a, ok := parseUDP4(id, pkt)
		if !ok {
			_ = t.verdict(id, nfAccept, nil)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// parseUDP4 finds the UDP payload of an IPv4 packet.
func parseUDP4(id uint32, pkt []byte) (TappedAnswer, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != unix.IPPROTO_UDP {
		return TappedAnswer{}, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total != len(pkt) || len(pkt) < ihl+8 || binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 {
		return TappedAnswer{}, false // short, or a fragment
	}
	if int(binary.BigEndian.Uint16(pkt[ihl+4:ihl+6])) != len(pkt)-ihl {
		return TappedAnswer{}, false
	}
	return TappedAnswer{ID: id, DNS: pkt[ihl+8:], pkt: pkt, ihl: ihl}, true
}

// Pass lets a through unchanged.
func (t *DNSTap) Pass(a TappedAnswer) error { return t.verdict(a.ID, nfAccept, nil) }

// Replace lets a through with msg as its DNS message instead (lengths
// and checksums made right).
func (t *DNSTap) Replace(a TappedAnswer, msg []byte) error {
	pkt, err := withUDPPayload(a.pkt, a.ihl, msg)
	if err != nil {
		_ = t.Pass(a)
		return err
	}
	return t.verdict(a.ID, nfAccept, pkt)
}

// withUDPPayload builds the IPv4 packet pkt (header length ihl) with
// payload as its UDP payload.
func withUDPPayload(pkt []byte, ihl int, payload []byte) ([]byte, error) {
	total := ihl + 8 + len(payload)
	if total > 0xffff {
		return nil, fmt.Errorf("answer of %d bytes is too long", len(payload))
	}
	out := make([]byte, total)
	copy(out, pkt[:ihl+8])
	copy(out[ihl+8:], payload)
	binary.BigEndian.PutUint16(out[2:4], uint16(total))
	out[10], out[11] = 0, 0
	binary.BigEndian.PutUint16(out[10:12], ^sum16(0, out[:ihl]))
	udp := out[ihl:]
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	udp[6], udp[7] = 0, 0
	var pseudo [12]byte
	copy(pseudo[0:8], out[12:20]) // source and destination
	pseudo[9] = unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(pseudo[10:12], uint16(len(udp)))
	c := ^sum16(sum16(0, pseudo[:]), udp)
	if c == 0 {
		c = 0xffff // 0 means no checksum
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
	return out, nil
}

// sum16 adds b to the ones' complement sum s.
func sum16(s uint16, b []byte) uint16 {
	acc := uint32(s)
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

func (t *DNSTap) verdict(id uint32, v uint32, pkt []byte) error {
	ae := mnl.NewAttributeEncoder()
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint32(hdr, v)
	binary.BigEndian.PutUint32(hdr[4:], id)
	ae.Bytes(nfqaVerdictHdr, hdr)
	if pkt != nil {
		ae.Bytes(nfqaPayload, pkt)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = t.conn.Send(mnl.Message{
		Header: mnl.Header{Type: nfqHeader(nfqMsgVerdict), Flags: mnl.Request},
		Data:   append(nfgen(unix.AF_UNSPEC), attrs...),
	})
	return err
}

// SetReadDeadline bounds the next Read (tests).
func (t *DNSTap) SetReadDeadline(at time.Time) error { return t.conn.SetReadDeadline(at) }
