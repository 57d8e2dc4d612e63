package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func TestGeometry(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rng       string
		blockBits int
		wantBits  int
		wantCount uint64
		addr      string
		wantIdx   uint64
		wantOff   int
		wantBlock string
	}{
		{"v4 /24 in /26", "10.1.0.0/24", 26, 26, 4, "10.1.0.130", 2, 2, "10.1.0.128/26"},
		{"v4 range smaller than block", "10.1.0.16/28", 26, 28, 1, "10.1.0.20", 0, 4, "10.1.0.16/28"},
		{"v4 /16", "10.2.0.0/16", 26, 26, 1024, "10.2.255.255", 1023, 63, "10.2.255.192/26"},
		{"v6 /64 capped", "fd00:1::/64", 122, 122, 1 << 58, "fd00:1::143", 5, 3, "fd00:1::140/122"},
		{"v6 /48 capped at 2^62", "fd00:2::/48", 122, 122, maxBlocks, "fd00:2::ff", 3, 63, "fd00:2::c0/122"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGeometry(netip.MustParsePrefix(tc.rng), tc.blockBits)
			if g.bits != tc.wantBits || g.count != tc.wantCount {
				t.Fatalf("bits, count = %d, %d; want %d, %d", g.bits, g.count, tc.wantBits, tc.wantCount)
			}
			i, off, ok := g.index(netip.MustParseAddr(tc.addr))
			if !ok || i != tc.wantIdx || off != tc.wantOff {
				t.Fatalf("index(%s) = %d, %d, %v; want %d, %d", tc.addr, i, off, ok, tc.wantIdx, tc.wantOff)
			}
			if got := g.block(i).String(); got != tc.wantBlock {
				t.Fatalf("block(%d) = %s, want %s", i, got, tc.wantBlock)
			}
			if j, ok := g.blockIndex(g.block(i)); !ok || j != i {
				t.Fatalf("blockIndex(block(%d)) = %d, %v", i, j, ok)
			}
		})
	}
	g := newGeometry(netip.MustParsePrefix("10.1.0.0/24"), 26)
	if _, _, ok := g.index(netip.MustParseAddr("10.1.1.0")); ok {
		t.Error("index of an address outside the range succeeded")
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.0.0/24": "10.1.0.255", "10.0.0.0/8": "10.255.255.255", "10.1.2.3/32": "10.1.2.3",
		"fd00::/64": "fd00::ffff:ffff:ffff:ffff", "::/0": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	} {
		if got := lastAddr(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func mustAddrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestAllocatorSkipsReservedAndFills(t *testing.T) {
	sub := netip.MustParsePrefix("10.1.0.0/24")
	res := sortedAddrs(reservedAddrs(sub, netip.MustParseAddr("10.1.0.1"), mustAddrs("10.1.0.3")))
	a := NewAllocator(sub, 26, res)
	if _, ok := a.Allocate(); ok {
		t.Fatal("allocated with no block owned")
	}
	a.AddBlock(0)
	a.AddBlock(3)
	seen := map[netip.Addr]bool{}
	for {
		addr, ok := a.Allocate()
		if !ok {
			break
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		if a.Reserved(addr) {
			t.Fatalf("reserved %s handed out", addr)
		}
		seen[addr] = true
	}
	// block 0: 64 minus .0 .1 .3; block 3: 64 minus .255.
	if want := 61 + 63; len(seen) != want {
		t.Fatalf("allocated %d addresses, want %d", len(seen), want)
	}
	if !seen[netip.MustParseAddr("10.1.0.2")] || seen[netip.MustParseAddr("10.1.0.64")] {
		t.Fatal("allocated outside the owned blocks, or skipped a free one")
	}
	if err := a.RemoveBlock(0); err == nil {
		t.Fatal("removed a block with allocations")
	}
	for addr := range seen {
		if rel, err := a.Release(addr); err != nil || !rel {
			t.Fatalf("release %s = %v, %v", addr, rel, err)
		}
	}
	if rel, err := a.Release(netip.MustParseAddr("10.1.0.2")); err != nil || rel {
		t.Fatalf("second release = %v, %v; want a no-op", rel, err)
	}
	if a.Free() != 124 {
		t.Fatalf("free = %d after releasing all, want 124", a.Free())
	}
	if err := a.RemoveBlock(0); err != nil {
		t.Fatal(err)
	}
	if got := a.Owned(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("owned = %v, want [3]", got)
	}
}

func TestAllocatorErrors(t *testing.T) {
	sub := netip.MustParsePrefix("10.1.0.0/24")
	a := NewAllocator(netip.MustParsePrefix("10.1.0.0/25"), 26, sortedAddrs(reservedAddrs(sub, netip.MustParseAddr("10.1.0.1"), nil)))
	a.AddBlock(0)
	if err := a.AllocateAddr(netip.MustParseAddr("10.1.0.10")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		op   string
		want error
	}{
		{"10.1.0.10", "alloc", ErrInUse},
		{"10.1.0.1", "alloc", ErrInUse},
		{"10.1.0.0", "alloc", ErrInUse},
		{"10.1.0.70", "alloc", ErrNotOwned},
		{"10.1.0.200", "alloc", ErrNotInPool},
		{"10.1.1.1", "alloc", ErrNotInPool},
		{"fd00::1", "alloc", ErrNotInPool},
		{"10.1.0.70", "release", ErrNotOwned},
		{"10.1.0.200", "release", ErrNotInPool},
	} {
		var err error
		if tc.op == "alloc" {
			err = a.AllocateAddr(netip.MustParseAddr(tc.addr))
		} else {
			_, err = a.Release(netip.MustParseAddr(tc.addr))
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s %s: err = %v, want %v", tc.op, tc.addr, err, tc.want)
		}
	}
	if err := a.Reserve(netip.MustParseAddr("10.1.0.10")); !errors.Is(err, ErrInUse) {
		t.Errorf("reserve of an allocated address: err = %v, want ErrInUse", err)
	}
}

func TestAllocatorIPv6DoesNotMaterialise(t *testing.T) {
	sub := netip.MustParsePrefix("fd00:1::/64")
	a := NewAllocator(sub, 122, sortedAddrs(reservedAddrs(sub, sub.Addr().Next(), nil)))
	a.AddBlock(0)
	a.AddBlock(1 << 50)
	n := 0
	for ; ; n++ {
		if _, ok := a.Allocate(); !ok {
			break
		}
	}
	if n != 128-2 {
		t.Fatalf("allocated %d, want 126 (two blocks of 64 minus the anycast and gateway)", n)
	}
	if got := a.Addresses(1 << 50); len(got) != 64 || got[0].String() != "fd00:1:0:0:100::" {
		t.Fatalf("block 2^50 addresses start %v (n=%d)", got[:1], len(got))
	}
}

func TestBlockNeverExceeds16HostBits(t *testing.T) {
	a := NewAllocator(netip.MustParsePrefix("fd00::/64"), 26, nil)
	if a.geo.shift != 16 || a.Block(1).String() != "fd00::1:0/112" {
		t.Fatalf("shift %d, block 1 %s; want 16, fd00::1:0/112", a.geo.shift, a.Block(1))
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func TestAllocatorParts(t *testing.T) {
	sub := mustPrefix("10.1.0.0/24")
	a := NewAllocator(sub, 26, sortedAddrs(reservedAddrs(sub, mustAddr("10.1.0.1"), nil)))
	if !a.AddPrefix(mustPrefix("10.1.0.0/27")) || !a.AddPrefix(mustPrefix("10.1.0.40/30")) {
		t.Fatal("AddPrefix refused a part")
	}
	for _, bad := range []string{"10.1.0.0/25", "10.1.1.0/28", "10.1.0.1/30", "fd00::/126"} {
		if a.AddPrefix(netip.MustParsePrefix(bad)) {
			t.Errorf("AddPrefix(%s) accepted a prefix that is no part of a block", bad)
		}
	}
	if got := fmt.Sprint(a.OwnedParts(0)); got != "[10.1.0.0/27 10.1.0.40/30]" {
		t.Fatalf("owned parts %s", got)
	}
	if a.Free() != 32-2+4 || a.OwnedCount(0) != 36 {
		t.Fatalf("free %d, owned %d; want 34 and 36", a.Free(), a.OwnedCount(0))
	}
	if err := a.AllocateAddr(mustAddr("10.1.0.41")); err != nil {
		t.Fatal(err)
	}
	if err := a.AllocateAddr(mustAddr("10.1.0.50")); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("allocating an address not owned: %v", err)
	}
	if err := a.RemovePrefix(mustPrefix("10.1.0.40/30")); err == nil {
		t.Fatal("removed a part with an address allocated")
	}
	// The largest empty part with at most 8 available addresses, then one
	// holding a given address.
	if p, n, ok := a.emptyPart(0, 8, netip.Addr{}); !ok || p.String() != "10.1.0.24/29" || n != 8 {
		t.Fatalf("emptyPart(8) = %s, %d, %v; want 10.1.0.24/29 (the highest of the largest)", p, n, ok)
	}
	if p, n, ok := a.emptyPart(0, 100, netip.Addr{}); !ok || p.String() != "10.1.0.0/27" || n != 30 {
		t.Fatalf("emptyPart(100) = %s, %d, %v; want 10.1.0.0/27 with 30 (reserved addresses go along)", p, n, ok)
	}
	if p, _, ok := a.emptyPart(0, 1, mustAddr("10.1.0.42")); !ok || p.String() != "10.1.0.42/32" {
		t.Fatalf("emptyPart holding .42 = %s, %v", p, ok)
	}
	if _, _, ok := a.emptyPart(0, 4, mustAddr("10.1.0.41")); ok {
		t.Fatal("emptyPart holding an allocated address")
	}
	if _, _, ok := a.emptyPart(0, 1, mustAddr("10.1.0.1")); ok {
		t.Fatal("emptyPart made only of a reserved address")
	}
	if err := a.RemovePrefix(mustPrefix("10.1.0.16/28")); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(a.OwnedParts(0)); got != "[10.1.0.0/28 10.1.0.40/30]" {
		t.Fatalf("owned parts after removing .16/28: %s", got)
	}
	// Lost to a conflict: the allocated address stays until released, and
	// is not handed out again.
	a.Disown(mustPrefix("10.1.0.40/30"))
	if !a.Allocated(mustAddr("10.1.0.41")) || a.OwnsAddr(mustAddr("10.1.0.41")) || !a.Frozen(0) {
		t.Fatal("Disown dropped the allocation or kept the ownership")
	}
	if rel, err := a.Release(mustAddr("10.1.0.41")); !rel || err != nil {
		t.Fatalf("release of a disowned allocation = %v, %v", rel, err)
	}
	if _, err := a.Release(mustAddr("10.1.0.41")); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("second release of it: %v, want ErrNotOwned", err)
	}
	for {
		addr, ok := a.Allocate()
		if !ok {
			break
		}
		if !mustPrefix("10.1.0.0/28").Contains(addr) {
			t.Fatalf("allocated %s outside the owned part", addr)
		}
	}
	if used, avail := a.PartStats(mustPrefix("10.1.0.0/28")); used != 14 || avail != 0 {
		t.Fatalf("part stats %d used, %d free; want 14, 0", used, avail)
	}
}
