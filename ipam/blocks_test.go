package ipam

import (
	"net/netip"
	"testing"
)

func cl(writer string, epoch uint64, to string) claim {
	return claim{writer: writer, blockEntry: blockEntry{Epoch: epoch, To: to}}
}

func TestOwnerOf(t *testing.T) {
	none := func(string) bool { return false }
	removedD := func(h string) bool { return h == "d" }
	for _, tc := range []struct {
		name         string
		claims       []claim
		removed      func(string) bool
		wantOwner    string
		wantEpoch    uint64
		wantConflict bool
	}{
		{"no claims: genesis", nil, none, "g", 0, false},
		{"genesis accepted", []claim{cl("g", 0, "g")}, none, "g", 0, false},
		{"handover not yet accepted", []claim{cl("g", 1, "b")}, none, "b", 1, false},
		{"handover accepted", []claim{cl("g", 1, "b"), cl("b", 1, "b")}, none, "b", 1, false},
		{"chain, stale entries lose", []claim{cl("g", 3, "c"), cl("b", 2, "g"), cl("c", 3, "c")}, none, "c", 3, false},
		{"handover by removed host ignored", []claim{cl("b", 1, "d"), cl("d", 2, "e")}, removedD, "d", 1, false},
		{"accept by removed host counts", []claim{cl("d", 4, "d")}, removedD, "d", 4, false},
		{"impossible tie: lowest wins", []claim{cl("x", 5, "y"), cl("z", 5, "z"), cl("a", 5, "a")}, none, "a", 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ownerOf(tc.claims, tc.removed, "g", 0)
			if got.owner != tc.wantOwner || got.epoch != tc.wantEpoch || (got.conflict != nil) != tc.wantConflict {
				t.Fatalf("ownerOf = %+v; want owner %s epoch %d conflict %v", got, tc.wantOwner, tc.wantEpoch, tc.wantConflict)
			}
			// The answer must not depend on the order claims arrive in.
			rev := make([]claim, len(tc.claims))
			for i, c := range tc.claims {
				rev[len(rev)-1-i] = c
			}
			if r := ownerOf(rev, tc.removed, "g", 0); r.owner != got.owner || r.epoch != got.epoch {
				t.Fatalf("reversed order gives %+v, forward %+v", r, got)
			}
		})
	}
}

func TestGenesisOwner(t *testing.T) {
	seeds := []string{"a", "b", "c"}
	if got, e := genesisOwner(seeds, 4, nil); got != "b" || e != 0 {
		t.Fatalf("block 4 = %s at %d, want b at 0", got, e)
	}
	heirs := map[string]string{"b": "c", "c": "a"}
	if got, e := genesisOwner(seeds, 4, heirs); got != "a" || e != 2 {
		t.Fatalf("block 4 after b->c->a = %s at %d, want a at 2", got, e)
	}
	// An unseen claim of the removed seed at epoch 0 loses to the heir's share.
	o := ownerOf([]claim{cl("b", 0, "b")}, func(h string) bool { return h == "b" }, "c", 1)
	if o.owner != "c" || o.epoch != 1 {
		t.Fatalf("heir share vs stale claim: %+v", o)
	}
}

func TestBlockKeyRoundTrip(t *testing.T) {
	b := netip.MustParsePrefix("10.1.0.64/26")
	k := blockKey("acme/10.1.0.0/24", b)
	id, got, ok := parseBlockKey(k)
	if !ok || id != "acme/10.1.0.0/24" || got != b {
		t.Fatalf("parseBlockKey(%q) = %q, %v, %v", k, id, got, ok)
	}
}

// FuzzSegmentsMatchOwnerOf: segmentsOf, which decides a whole block at
// once, gives every address the owner ownerOf gives it from the claims on
// the parts containing it, whatever claims other hosts wrote. Each 4 bytes
// of input make one claim on a part of a /28: the part, its epoch, writer
// and recipient.
func FuzzSegmentsMatchOwnerOf(f *testing.F) {
	f.Add([]byte{0x00, 1, 0, 1, 0x48, 2, 1, 2, 0x4c, 3, 2, 3})
	f.Add([]byte{0x00, 0, 0, 0, 0x21, 0, 1, 2, 0x3f, 5, 3, 3, 0x3f, 5, 2, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		block := netip.MustParsePrefix("10.1.0.0/28")
		hosts := []string{"g", "a", "b", "d"} // d is removed
		removed := func(h string) bool { return h == "d" }
		var cs []claim
		for len(in) >= 4 && len(cs) < 64 {
			bits := 28 + int(in[0]>>4)%5 // /28 to /32
			addr := netip.AddrFrom4([4]byte{10, 1, 0, in[0] & 0x0f})
			cs = append(cs, claim{writer: hosts[in[2]%4], prefix: netip.PrefixFrom(addr, bits).Masked(),
				blockEntry: blockEntry{Epoch: uint64(in[1] % 8), To: hosts[in[3]%4]}})
			in = in[4:]
		}
		ge := uint64(len(cs) % 2)
		segs := segmentsOf(block, cs, removed, "g", ge)
		next := block.Addr()
		for _, s := range segs {
			if s.prefix.Addr() != next || s.prefix.Masked() != s.prefix || !block.Contains(s.prefix.Addr()) {
				t.Fatalf("segments do not tile the block in order: %v", segs)
			}
			next = lastAddr(s.prefix).Next()
		}
		if next != lastAddr(block).Next() {
			t.Fatalf("segments end at %s: %v", next, segs)
		}
		for a := block.Addr(); block.Contains(a); a = a.Next() {
			var on []claim
			for _, c := range cs {
				if c.prefix.Contains(a) {
					on = append(on, c)
				}
			}
			want := ownerOf(on, removed, "g", ge)
			for _, s := range segs {
				if s.prefix.Contains(a) && (s.owner != want.owner || s.epoch != want.epoch || (s.conflict != nil) != (want.conflict != nil)) {
					t.Fatalf("address %s: segment says %+v, ownerOf says %+v", a, s.ownership, want)
				}
			}
		}
	})
}
