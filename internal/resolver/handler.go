package resolver

import (
	"net/netip"

	"github.com/miekg/dns"
)

// Lookup finds the network a query from src belongs to: its view, and
// whether it has egress (unknown names are forwarded only then). ok is
// false for a source on no network of the tenant.
type Lookup func(src netip.Addr) (v NetView, egress bool, ok bool)

// handler turns one query datagram into at most one reply datagram.
type handler struct {
	lookup Lookup // nil: forward everything (the host's socket)
	fwd    *forwarder
	lim    *limiter
	// maxIn is the largest query accepted (bytes).
	maxIn int
}

// serve answers the query in buf from src through send, at once or (for a
// forwarded one) later from another goroutine. Malformed input gets
// FORMERR when its header can be read, and nothing otherwise; a source
// over its rate gets nothing.
func (h *handler) serve(buf []byte, src netip.Addr, send func([]byte)) {
	if len(buf) < 12 || len(buf) > h.maxIn || !h.lim.allow(src) {
		return
	}
	q := new(dns.Msg)
	if err := q.Unpack(buf); err != nil {
		// Answer what the header says, if it is a query: FORMERR.
		if buf[2]&0x80 == 0 {
			r := &dns.Msg{MsgHdr: dns.MsgHdr{Id: uint16(buf[0])<<8 | uint16(buf[1]), Response: true,
				Opcode: int(buf[2]>>3) & 0xf, Rcode: dns.RcodeFormatError}}
			send(pack(r, 512))
		}
		return
	}
	if q.Response {
		return // never answer an answer: no loops
	}
	size := 512
	if o := q.IsEdns0(); o != nil {
		size = max(512, min(int(o.UDPSize()), 4096))
	}
	h.respond(q, src, size, send)
}

// respond answers the decoded query q from src through send, in replies
// of at most size bytes.
func (h *handler) respond(q *dns.Msg, src netip.Addr, size int, send func([]byte)) {
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeNotImplemented)
		if len(q.Question) != 1 {
			r.SetRcode(q, dns.RcodeFormatError)
			r.Question = nil
		}
		send(pack(r, size))
		return
	}
	egress := true
	if h.lookup != nil {
		v, eg, ok := h.lookup(src)
		if !ok {
			r := new(dns.Msg)
			r.SetRcode(q, dns.RcodeRefused)
			send(pack(r, size))
			return
		}
		if resp, ok := Answer(q, v); ok {
			if o := q.IsEdns0(); o != nil {
				resp.SetEdns0(uint16(min(size, 4096)), false)
			}
			send(pack(resp, size))
			return
		}
		egress = eg
	}
	if !egress || h.fwd == nil {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeRefused)
		r.RecursionAvailable = false
		send(pack(r, size))
		return
	}
	h.fwd.forward(q, size, send)
}

// pack encodes m for a client that takes size bytes, truncated (TC set)
// if it does not fit; nil if it cannot be encoded.
func pack(m *dns.Msg, size int) []byte {
	m.Truncate(size)
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}
