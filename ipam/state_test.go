package ipam

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func sampleState() *persistedState {
	return &persistedState{
		Seq: 7,
		Pools: []persistedPool{{
			Tenant: "acme", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Range: netip.MustParsePrefix("10.1.0.128/25"),
			Gateway: netip.MustParseAddr("10.1.0.1"), Aux: []netip.Addr{netip.MustParseAddr("10.1.0.2")},
			Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.130")},
		}, {
			Tenant: "bolt", Subnet: netip.MustParsePrefix("fd00::/64"), Gateway: netip.MustParseAddr("fd00::1"),
		}},
		Own:     map[string]blockEntry{blockKey("acme/10.1.0.0/24", netip.MustParsePrefix("10.1.0.128/26")): {Epoch: 2, To: "h1"}},
		Removed: []string{"h9"},
	}
}

func TestStateRoundTrip(t *testing.T) {
	s := sampleState()
	got, err := decodeState(encodeState(s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
}

func TestDecodeStateRejects(t *testing.T) {
	good := string(encodeState(sampleState()))
	for _, tc := range []struct{ name, from, to, want string }{
		{"version", `"version":1`, `"version":2`, "version 2"},
		{"tenant", `"tenant":"acme"`, `"tenant":"ACME"`, `tenant "ACME"`},
		{"unmasked subnet", `"10.1.0.0/24"`, `"10.1.0.5/24"`, "not a usable masked prefix"},
		{"range outside", `"10.1.0.128/25"`, `"10.2.0.128/25"`, "not inside the subnet"},
		{"gateway outside", `"gateway":"10.1.0.1"`, `"gateway":"10.9.0.1"`, "gateway 10.9.0.1"},
		{"address outside range", `"10.1.0.130"`, `"10.1.0.30"`, "address 10.1.0.30"},
		{"block key", `ipam/block/acme`, `ipam/blok/acme`, "block key"},
		{"owner", `"to":"h1"`, `"to":"h 1"`, `owner "h 1"`},
		{"not json", `{`, `[`, "decode ipam state"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if bad == good {
			t.Fatalf("%s: %q not in the encoding %s", tc.name, tc.from, good)
		}
		if _, err := decodeState([]byte(bad)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(sampleState()))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"pools":[{"tenant":"a","subnet":"::/0","gateway":"::1"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeState(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same state, and
		// must be usable: build the allocators it describes.
		again, err := decodeState(encodeState(s))
		if err != nil {
			t.Fatalf("re-decoding an accepted state: %v", err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("not stable:\n%+v\n%+v", s, again)
		}
		for _, p := range s.Pools {
			req := PoolRequest{Tenant: p.Tenant, Subnet: p.Subnet, Range: p.Range}
			a := NewAllocator(req.allocRange(), 26, sortedAddrs(reservedAddrs(p.Subnet, p.Gateway, p.Aux)))
			for _, addr := range p.Addrs {
				if i, ok := a.BlockOf(addr); ok {
					a.AddBlock(i)
					_ = a.AllocateAddr(addr)
				}
			}
		}
	})
}
