package gossip

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func fuzzSeeds(f *testing.F) {
	f.Add(encodeMessage(nil, sampleMessage()))
	m := sampleMessage()
	m.typ = msgUpdate
	m.entries = m.entries[:1]
	f.Add(encodeMessage(nil, m))
	f.Add(encodeMessage(nil, sampleSync()))
	f.Add([]byte{})
	f.Add([]byte{wireVersion, msgState, 0, 0, 0})
	f.Add([]byte{wireVersion, msgUpdate, 1, 'a', 1, 1, 'a', 1, 42, 0, 0, 1, 'k', 1, 0})
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
		if diff := cmp.Diff(m, again, cmp.AllowUnexported(message{}, entry{})); diff != "" {
			t.Fatalf("re-encode changed the message:\n%s", diff)
		}
	})
}

// FuzzHandleMessage feeds arbitrary input to a node's message handler, the
// path every received byte takes: it must not panic, and whatever it stores
// must be valid and readable through the table API.
func FuzzHandleMessage(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := newTestNode(t, "me")
		for _, h := range []string{"h1", "h2", "h3", "a"} {
			n.store.setAlive(h, true)
		}
		for _, nw := range []string{"net-a", "n", "a"} {
			if err := n.Attachments().Attach(nw); err != nil {
				t.Fatal(err)
			}
		}
		n.handle(b)
		for _, e := range n.store.snapshot() {
			if err := checkValue(&e); err != nil {
				t.Fatalf("stored an invalid entry %+v: %v", e, err)
			}
		}
		_ = n.Networks().List()
		_ = n.Endpoints().List("")
		_ = n.Blocks().List()
	})
}

// FuzzDecodeValue decodes arbitrary bytes as each table's value and as node
// metadata; a value that decodes must re-encode to the same bytes.
func FuzzDecodeValue(f *testing.F) {
	ep := testEndpoint("e", "n", 1)
	nw := Network{ID: "n", Name: "x", VNI: 7, Subnet: netip.MustParsePrefix("10.0.0.0/8")}
	bl := Block{Prefix: netip.MustParsePrefix("fd00::/120"), Network: "n"}
	f.Add(byte(tableEndpoints), encodeEndpoint(&ep))
	f.Add(byte(tableNetworks), encodeNetwork(&nw))
	f.Add(byte(tableBlocks), encodeBlock(&bl))
	f.Add(byte(0), appendAddr([]byte{metaVersion}, netip.MustParseAddr("203.0.113.1")))
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
			v, err := decodeEndpoint("e", b)
			if err != nil {
				return
			}
			re = encodeEndpoint(&v)
		case tableBlocks:
			v, err := decodeBlock(b)
			if err != nil {
				return
			}
			re = encodeBlock(&v)
		default:
			if a := decodeMeta(b); a.IsValid() {
				re = appendAddr([]byte{metaVersion}, a)
				b = b[:len(re)]
			} else {
				return
			}
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("value %x re-encodes as %x", b, re)
		}
	})
}
