package ipam

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func sampleState() *persistedState {
	return &persistedState{
		Seq: 7,
		Pools: []persistedPool{{
			Tenant: "acme", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Range: netip.MustParsePrefix("10.1.0.128/25"),
			Gateway: netip.MustParseAddr("10.1.0.1"), Aux: []netip.Addr{netip.MustParseAddr("10.1.0.2")},
			Addrs: []addrRun{{netip.MustParseAddr("10.1.0.130"), netip.MustParseAddr("10.1.0.130")}},
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
		{"version", `"version":2`, `"version":3`, "version 3"},
		{"tenant", `"tenant":"acme"`, `"tenant":"ACME"`, `tenant "ACME"`},
		{"unmasked subnet", `"10.1.0.0/24"`, `"10.1.0.5/24"`, "not a usable masked prefix"},
		{"range outside", `"10.1.0.128/25"`, `"10.2.0.128/25"`, "not inside the subnet"},
		{"gateway outside", `"gateway":"10.1.0.1"`, `"gateway":"10.9.0.1"`, "gateway 10.9.0.1"},
		{"address outside range", `"10.1.0.130"`, `"10.1.0.30"`, "address 10.1.0.30"},
		{"block key", `ipam/block/acme`, `ipam/blok/acme`, "block key"},
		{"owner", `"to":"h1"`, `"to":"h 1"`, `owner "h 1"`},
		{"not json", `{`, `[`, "decode ipam state"},
		{"address", `"10.1.0.130"`, `"10.1.0.x"`, `address "10.1.0.x"`},
		{"run backwards", `"10.1.0.130"`, `"10.1.0.130-10.1.0.129"`, "does not follow its first"},
		{"run of one", `"10.1.0.130"`, `"10.1.0.130-10.1.0.130"`, "does not follow its first"},
		{"run across families", `"10.1.0.130"`, `"10.1.0.130-fd00::1"`, "does not follow its first"},
		{"run's end", `"10.1.0.130"`, `"10.1.0.130-"`, `address run "10.1.0.130-"`},
		{"run past the range", `"10.1.0.130"`, `"10.1.0.130-10.1.1.1"`, "address 10.1.0.130-10.1.1.1: not in the range"},
		{"too many", `"subnet":"fd00::/64"`, `"subnet":"fd00::/64","addrs":["fd00::2-fd00::ffff:ffff"]`, "more than 1048576 addresses"},
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

// A pool's addresses are saved as runs of consecutive ones, across the
// blocks the host holds, and restored as they were; a version 1 state, an
// address each, reads the same.
func TestAddressesAreSavedAsRuns(t *testing.T) {
	a := netip.MustParseAddr
	alloc := NewAllocator(netip.MustParsePrefix("10.1.0.0/16"), 24, nil)
	for _, blk := range []string{"10.1.0.0/24", "10.1.1.0/24", "10.1.7.0/24"} {
		i, _ := alloc.BlockOf(a(strings.TrimSuffix(blk, "/24")))
		alloc.AddBlock(i)
	}
	held := []string{"10.1.0.7", "10.1.0.254", "10.1.0.255", "10.1.1.0", "10.1.1.1", "10.1.1.63", "10.1.1.64", "10.1.1.66", "10.1.7.0"}
	for _, h := range held {
		if err := alloc.AllocateAddr(a(h)); err != nil {
			t.Fatal(err)
		}
	}
	var runs []addrRun
	for _, i := range alloc.order {
		runs = alloc.appendRuns(runs, i)
	}
	var texts, back []string
	for _, r := range runs {
		b, _ := r.MarshalText()
		texts = append(texts, string(b))
		r.each(func(x netip.Addr) { back = append(back, x.String()) })
	}
	want := []string{"10.1.0.7", "10.1.0.254-10.1.1.1", "10.1.1.63-10.1.1.64", "10.1.1.66", "10.1.7.0"}
	if !slices.Equal(texts, want) {
		t.Errorf("runs %q, want %q", texts, want)
	}
	if !slices.Equal(back, held) {
		t.Errorf("runs hold %q, want %q", back, held)
	}

	s := sampleState()
	s.Pools[0].Addrs = []addrRun{{a("10.1.0.130"), a("10.1.0.131")}, {a("10.1.0.133"), a("10.1.0.133")}}
	enc := string(encodeState(s))
	if !strings.Contains(enc, `"addrs":["10.1.0.130-10.1.0.131","10.1.0.133"]`) || !strings.Contains(enc, `"version":2`) {
		t.Fatalf("encoding %s: want version 2 with the runs", enc)
	}
	v1 := strings.Replace(strings.Replace(enc, `"10.1.0.130-10.1.0.131"`, `"10.1.0.130","10.1.0.131"`, 1), `"version":2`, `"version":1`, 1)
	got, err := decodeState([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, r := range got.Pools[0].Addrs {
		r.each(func(x netip.Addr) { addrs = append(addrs, x.String()) })
	}
	if got.Version != stateVersion || !slices.Equal(addrs, []string{"10.1.0.130", "10.1.0.131", "10.1.0.133"}) {
		t.Fatalf("version 1 state reads as version %d with %q", got.Version, addrs)
	}
}

// BenchmarkEncodeState: what a save at every allocation and release costs
// (listing the allocator's addresses, encoding), with one address held and
// with 999 (a host's 1,000th container against its 1st).
func BenchmarkEncodeState(b *testing.B) {
	for _, held := range []int{1, 999} {
		s := sampleState()
		alloc := NewAllocator(netip.MustParsePrefix("10.2.0.0/20"), 26, nil)
		for range held {
			addr, ok := alloc.Allocate()
			if !ok {
				i, _ := alloc.BlockOf(netip.MustParseAddr("10.2.0.0"))
				for ; !ok; addr, ok = alloc.Allocate() {
					alloc.AddBlock(i)
					i++
				}
			}
			_ = addr
		}
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			for b.Loop() {
				p := &s.Pools[0]
				p.Addrs = p.Addrs[:0]
				for _, i := range alloc.order {
					p.Addrs = alloc.appendRuns(p.Addrs, i)
				}
				encodeState(s)
			}
		})
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(sampleState()))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":2,"pools":[{"tenant":"a","subnet":"10.0.0.0/8","gateway":"10.0.0.1","addrs":["10.0.0.2-10.0.1.0","10.0.9.9"]}]}`))
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
			for _, r := range p.Addrs {
				if r.len(4096) > 4096 {
					continue // long runs: too slow for fuzzing
				}
				r.each(func(addr netip.Addr) {
					if i, ok := a.BlockOf(addr); ok {
						a.AddBlock(i)
						_ = a.AllocateAddr(addr)
					}
				})
			}
		}
	})
}
