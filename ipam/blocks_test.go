package ipam

import (
	"net/netip"
	"testing"
)

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
		{"genesis accepted", []claim{{"g", blockEntry{Epoch: 0, To: "g"}}}, none, "g", 0, false},
		{"handover not yet accepted", []claim{{"g", blockEntry{Epoch: 1, To: "b"}}}, none, "b", 1, false},
		{"handover accepted", []claim{{"g", blockEntry{Epoch: 1, To: "b"}}, {"b", blockEntry{Epoch: 1, To: "b"}}}, none, "b", 1, false},
		{"chain, stale entries lose", []claim{{"g", blockEntry{Epoch: 3, To: "c"}}, {"b", blockEntry{Epoch: 2, To: "g"}}, {"c", blockEntry{Epoch: 3, To: "c"}}}, none, "c", 3, false},
		{"handover by removed host ignored", []claim{{"b", blockEntry{Epoch: 1, To: "d"}}, {"d", blockEntry{Epoch: 2, To: "e"}}}, removedD, "d", 1, false},
		{"accept by removed host counts", []claim{{"d", blockEntry{Epoch: 4, To: "d"}}}, removedD, "d", 4, false},
		{"impossible tie: lowest wins", []claim{{"x", blockEntry{Epoch: 5, To: "y"}}, {"z", blockEntry{Epoch: 5, To: "z"}}, {"a", blockEntry{Epoch: 5, To: "a"}}}, none, "a", 5, true},
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
	o := ownerOf([]claim{{"b", blockEntry{Epoch: 0, To: "b"}}}, func(h string) bool { return h == "b" }, "c", 1)
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
