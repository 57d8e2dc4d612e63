package gossip

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func fuzzSeeds(f *testing.F) {
	for _, m := range append([]*message{sampleMessage(), sampleUpdate()}, sampleDigests()...) {
		f.Add(encodeMessage(nil, m))
	}
	f.Add([]byte{})
	f.Add([]byte{wireVersion, msgState, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{wireVersion, msgUpdate, 0, 1, 'a', 1, 2, 'a', 0, 0, 0, 0, 1, 42, 0, 0, 2, 'k', 1, 0})
}

// FuzzDecodeMessage: any input either fails to decode or decodes to a
// message that re-encodes to the same bytes' meaning; validation of its
// entries never panics.
func FuzzDecodeMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		for i := range m.entries {
			_ = checkValue(&m.entries[i])
		}
		again, err := decodeMessage(encodeMessage(nil, m))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if diff := cmp.Diff(m, again, cmp.AllowUnexported(message{}, entry{}, digest{}, want{})); diff != "" {
			t.Fatalf("re-encode changed the message:\n%s", diff)
		}
	})
}

// FuzzHandleMessage feeds arbitrary input to a node's message handler, the
// path every received byte takes: it must not panic, whatever it stores
// must be valid and readable through the table API, and whatever it answers
// must decode.
func FuzzHandleMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := newTestNode(t, "me")
		for _, h := range []string{"h1", "h2", "h3", "h9", "a"} {
			n.store.setMember(h, addrOf(h), netip.Addr{}, wireVersion, true, false)
		}
		for _, nw := range []string{"net-a", "n", "a"} {
			if err := n.Attachments().Attach(nw); err != nil {
				t.Fatal(err)
			}
		}
		n.handle(b, addrOf("src"))
		for _, e := range n.store.snapshot() {
			if err := checkValue(&e); err != nil {
				t.Fatalf("stored an invalid entry %+v: %v", e, err)
			}
		}
		_ = n.Networks().List()
		_ = n.Endpoints().List("")
		_ = n.Endpoints().ListNetwork("net-a", true)
		_ = n.KV().List("")
		_ = n.Stats()
	})
}

// FuzzDecodeValue decodes arbitrary bytes as each table's value and as node
// metadata; a value that decodes must re-encode to the same bytes.
func FuzzDecodeValue(f *testing.F) {
	ep := testEndpoint("e", "n", 1)
	ep.Names = []string{"web", "web.acme"}
	nw := Network{ID: "n", Name: "x", VNI: 7, Subnet: netip.MustParsePrefix("10.0.0.0/8")}
	f.Add(byte(tableEndpoints), encodeEndpoint(&ep))
	hexNet := testEndpoint("e", "c0ffee", 2) // a network name stored decoded
	f.Add(byte(tableEndpoints), encodeEndpoint(&hexNet))
	f.Add(byte(tableNetworks), encodeNetwork(&nw))
	f.Add(byte(0), append(appendAddr([]byte{metaVersion}, netip.MustParseAddr("203.0.113.1")), wireVersion))
	f.Add(byte(0), appendAddr([]byte{metaVersion}, netip.MustParseAddr("203.0.113.1"))) // a version 1 host's
	f.Fuzz(func(t *testing.T, table byte, b []byte) {
		var re []byte
		switch tableID(table % 4) {
		case tableNetworks:
			v, err := decodeNetwork(b)
			if err != nil {
				return
			}
			re = encodeNetwork(&v)
		case tableEndpoints:
			mac, ip, claimOK := claimOf(b) // never panics, whatever b is
			v, err := decodeEndpoint("e", b)
			if err != nil {
				return
			}
			if err := v.validate(); err != nil {
				t.Fatalf("decoded endpoint %+v is invalid: %v", v, err)
			}
			// The in-place read that RemoteClaims compares agrees with
			// the decoder on every value the decoder accepts.
			if !claimOK || !bytes.Equal(mac, v.MAC) || ip != v.IP {
				t.Fatalf("claimOf = %x %v %v, decodeEndpoint has %x %v", mac, ip, claimOK, v.MAC, v.IP)
			}
			re = encodeEndpoint(&v)
		default:
			a, wire := decodeMeta(b)
			if !a.IsValid() {
				return
			}
			re = appendAddr([]byte{metaVersion}, a)
			if wire != 1 || len(b) > len(re) {
				re = append(re, wire)
			}
			b = b[:len(re)]
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("value %x re-encodes as %x", b, re)
		}
	})
}
