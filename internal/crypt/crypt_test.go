package crypt

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

type kv []gossip.KVEntry

func (k kv) List(prefix string) []gossip.KVEntry {
	var out []gossip.KVEntry
	for _, e := range k {
		if len(e.Key) >= len(prefix) && e.Key[:len(prefix)] == prefix {
			out = append(out, e)
		}
	}
	return out
}

func TestHostRoundTripAndRefusals(t *testing.T) {
	k := overlay.PrivateKey{0, 5}.Public()
	h := Host{Port: 51820, Key: k, Share: Share{7, 8, 9}}
	b := EncodeHost(h)
	got, err := DecodeHost(b)
	if err != nil || got != h {
		t.Fatalf("DecodeHost(EncodeHost(%v)) = %v, %v", h, got, err)
	}
	bad := map[string][]byte{
		"empty":        nil,
		"short":        b[:len(b)-1],
		"long":         append(slices.Clone(b), 0),
		"version 1":    append([]byte{1}, b[1:]...),
		"version 3":    append([]byte{3}, b[1:]...),
		"port 0":       append([]byte{2, 0, 0}, b[3:]...),
		"all-zero key": EncodeHost(Host{Port: 1}),
	}
	for name, v := range bad {
		if _, err := DecodeHost(v); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNetworkRoundTripAndRefusals(t *testing.T) {
	for _, enc := range []bool{false, true} {
		if got, err := DecodeNetwork(EncodeNetwork(enc)); err != nil || got != enc {
			t.Errorf("DecodeNetwork(EncodeNetwork(%t)) = %t, %v", enc, got, err)
		}
	}
	for _, v := range [][]byte{nil, {1}, {1, 2}, {2, 1}, {1, 1, 0}} {
		if _, err := DecodeNetwork(v); err == nil {
			t.Errorf("DecodeNetwork(%x) accepted", v)
		}
	}
}

func TestReaders(t *testing.T) {
	k := overlay.PrivateKey{0, 5}.Public()
	table := kv{
		{Key: HostKey, Host: "h1", Value: EncodeHost(Host{Port: 51820, Key: k})},
		{Key: HostKey, Host: "h2", Value: []byte("junk")},
		{Key: HostKey + "x", Host: "h3", Value: EncodeHost(Host{Port: 1, Key: k})}, // another key
		{Key: NetworkKey("acme/web"), Host: "h2", Value: EncodeNetwork(true)},
		{Key: NetworkKey("acme/web"), Host: "h1", Value: EncodeNetwork(false)},
		{Key: NetworkKey("acme/web"), Host: "h4", Value: []byte{9}},
		{Key: NetworkKey("acme/web2"), Host: "h5", Value: EncodeNetwork(true)},
	}
	hosts, bad := Hosts(table)
	if len(hosts) != 1 || hosts["h1"].Port != 51820 || !slices.Equal(bad, []string{"h2"}) {
		t.Errorf("Hosts = %v, bad %v", hosts, bad)
	}
	got := Networks(table, "acme/web")
	want := []NetworkSetting{{"h1", false}, {"h2", true}}
	if !slices.Equal(got, want) {
		t.Errorf("Networks = %v, want %v", got, want)
	}
	if h, theirs := Conflict(table, "acme/web", "h1", false); h != "h2" || !theirs {
		t.Errorf("Conflict for a clear one on h1 = %q %t", h, theirs)
	}
	if h, _ := Conflict(table, "acme/web", "h2", true); h != "h1" {
		t.Errorf("Conflict for an encrypted one on h2 = %q", h)
	}
	if h, _ := Conflict(table, "acme/web2", "h1", true); h != "" {
		t.Errorf("Conflict with no other setting = %q", h)
	}
	if n, ok := IsNetworkKey(NetworkKey("acme/web")); !ok || n != "acme/web" {
		t.Errorf("IsNetworkKey = %q %t", n, ok)
	}
}

// FuzzDecode: the decoders never panic, and what they accept encodes back
// to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(EncodeHost(Host{Port: 51820, Key: overlay.PrivateKey{0, 5}.Public()}))
	f.Add(EncodeNetwork(true))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := DecodeHost(b); err == nil && !bytes.Equal(EncodeHost(h), b) {
			t.Errorf("DecodeHost(%x) = %v, which encodes to %x", b, h, EncodeHost(h))
		}
		if enc, err := DecodeNetwork(b); err == nil && !bytes.Equal(EncodeNetwork(enc), b) {
			t.Errorf("DecodeNetwork(%x) = %t, which encodes to %x", b, enc, EncodeNetwork(enc))
		}
	})
}

// TestPresharedKeyIsThePairs: both hosts of a pair derive the same key,
// every other pair another, and either host's new share makes a new one.
func TestPresharedKeyIsThePairs(t *testing.T) {
	a, b, c := Share{1}, Share{2}, Share{3}
	ab := PresharedKey("h0", a, "h1", b)
	if ba := PresharedKey("h1", b, "h0", a); ba != ab {
		t.Error("h0 and h1 derive different keys")
	}
	if ab.IsZero() {
		t.Error("zero key")
	}
	others := map[string]overlay.PresharedKey{
		"another pair":          PresharedKey("h0", a, "h2", c),
		"h0's new share":        PresharedKey("h0", c, "h1", b),
		"h1's new share":        PresharedKey("h0", a, "h1", c),
		"names moved to shares": PresharedKey("h0h", a, "1", b),
		"the shares swapped":    PresharedKey("h0", b, "h1", a),
	}
	for name, k := range others {
		if k == ab {
			t.Errorf("%s: the same key as h0/h1's", name)
		}
	}
	if s := fmt.Sprintf("%v %+v %#v", a, Host{Share: a}, a); !strings.Contains(s, "(share)") || strings.Contains(s, "[1 0") {
		t.Errorf("a share prints: %s", s)
	}
}
