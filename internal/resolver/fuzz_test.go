package resolver

import (
	"net/netip"
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
