package resolver

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// forwarder sends queries no network answers to the host's upstream
// servers, from the host's namespace, in order until one answers.
type forwarder struct {
	servers []netip.AddrPort
	timeout time.Duration
	slots   chan struct{} // bounds the queries in flight
	ctx     context.Context
	log     *slog.Logger
}

func newForwarder(ctx context.Context, servers []netip.AddrPort, timeout time.Duration, inflight int, log *slog.Logger) *forwarder {
	return &forwarder{servers: servers, timeout: timeout, slots: make(chan struct{}, inflight), ctx: ctx, log: log}
}

// forward answers q through send from a goroutine of its own; with every
// slot taken, or no upstream server, it answers SERVFAIL at once.
func (f *forwarder) forward(q *dns.Msg, size int, send func([]byte)) {
	fail := func() {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeServerFailure)
		send(pack(r, size))
	}
	if len(f.servers) == 0 {
		fail()
		return
	}
	select {
	case f.slots <- struct{}{}:
	default:
		fail()
		return
	}
	go func() {
		defer func() { <-f.slots }()
		resp := f.exchange(q)
		if resp == nil {
			fail()
			return
		}
		send(pack(resp, size))
	}()
}

// exchange asks each server in turn (UDP, then TCP if the answer was
// truncated) under a fresh ID, and returns the first answer that is not
// SERVFAIL or REFUSED (else the last one), with the client's ID.
func (f *forwarder) exchange(q *dns.Msg) *dns.Msg {
	out := q.Copy()
	out.Id = dns.Id()
	var last *dns.Msg
	for _, s := range f.servers {
		if f.ctx.Err() != nil {
			return nil
		}
		resp := f.ask(out, s, "udp")
		if resp != nil && resp.Truncated {
			if r := f.ask(out, s, "tcp"); r != nil {
				resp = r
			}
		}
		if resp == nil {
			continue
		}
		resp.Id = q.Id
		last = resp
		if resp.Rcode != dns.RcodeServerFailure && resp.Rcode != dns.RcodeRefused {
			return resp
		}
	}
	return last
}

func (f *forwarder) ask(q *dns.Msg, s netip.AddrPort, network string) *dns.Msg {
	c := &dns.Client{Net: network, Timeout: f.timeout, UDPSize: 4096}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	defer cancel()
	resp, _, err := c.ExchangeContext(ctx, q, s.String())
	if err != nil {
		f.log.Debug("forward query", "ip", s, "name", q.Question[0].Name, "err", err)
		return nil
	}
	return resp
}
