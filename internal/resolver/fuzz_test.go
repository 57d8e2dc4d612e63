package resolver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// FuzzHandler feeds arbitrary datagrams to the query path: it must not
// panic, answer at most once, and every reply must decode with the
// query's ID.
func FuzzHandler(f *testing.F) {
	for _, q := range []*dns.Msg{question("a1.", dns.TypeA), question("74.0.1.10.in-addr.arpa.", dns.TypePTR), question("shared.acme-web.", dns.TypeAAAA)} {
		b, _ := q.Pack()
		f.Add(b)
		q.SetEdns0(4096, true)
		b, _ = q.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	f.Add(make([]byte, 12))
	h := &handler{lookup: func(netip.Addr) (NetView, bool, bool) { return testView, false, true }, maxIn: maxQuery}
	src := netip.MustParseAddr("10.1.0.10")
	f.Fuzz(func(t *testing.T, b []byte) {
		replies := 0
		h.serve(b, src, func(out []byte) {
			replies++
			if out == nil {
				return
			}
			var m dns.Msg
			if err := m.Unpack(out); err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
			if m.Id != uint16(b[0])<<8|uint16(b[1]) {
				t.Fatalf("reply ID %d, query's %d", m.Id, uint16(b[0])<<8|uint16(b[1]))
			}
			if !m.Response {
				t.Fatal("reply without QR")
			}
		})
		if replies > 1 {
			t.Fatalf("%d replies", replies)
		}
		if replies == 0 && len(b) >= 12 && len(b) <= maxQuery && b[2]&0x80 == 0 {
			t.Fatal("a query got no reply")
		}
	})
}

// FuzzWiden feeds arbitrary datagrams to the tap's path (a container can
// send itself datagrams from 127.0.0.11:53): it must not panic, and a
// widened answer must decode, keep the ID, question and every address it
// had, and fit the client's size.
func FuzzWiden(f *testing.F) {
	for _, m := range []*dns.Msg{dockerAnswer("shared", dns.TypeA, "10.1.0.10"), dockerAnswer("both", dns.TypeA, "10.2.0.5"),
		dockerAnswer("shared.acme-web", dns.TypeAAAA, "10.1.0.10"), dockerAnswer("w0", dns.TypeA, "10.1.0.10")} {
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(1232, false)
		b, _ = m.Pack()
		f.Add(b)
	}
	nets := []NetNames{
		{Local: group("acme-web", rec("10.1.0.10", "w0", "shared")), Remote: group("acme-web", rec("10.1.0.74", "a1", "shared"), rec("fd00::7", "shared"))},
		{Local: group("acme-db", rec("10.2.0.5", "both")), Remote: group("acme-db", rec("10.2.0.9", "both"))},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := widenMsg(b, nets)
		if out == nil {
			return
		}
		var in, m dns.Msg
		if err := in.Unpack(b); err != nil {
			t.Fatalf("widened an answer that does not decode: %v", err)
		}
		if err := m.Unpack(out); err != nil {
			t.Fatalf("widened answer does not decode: %v", err)
		}
		size := dns.MinMsgSize
		if opt := in.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		if m.Id != in.Id || len(m.Question) != 1 || m.Question[0] != in.Question[0] || len(out) > size || m.Truncated != in.Truncated {
			t.Fatalf("widened %v into %v (%d bytes)", &in, &m, len(out))
		}
		have := answers(&m)
		for _, a := range answers(&in) {
			if !slices.Contains(have, a) {
				t.Fatalf("lost %s: %v", a, have)
			}
		}
		if len(have) <= len(answers(&in)) {
			t.Fatalf("widened without adding: %v", have)
		}
	})
}
