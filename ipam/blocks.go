package ipam

// Block ownership: who may allocate from which addresses. The safety
// argument is in doc.go; this file is the pure part of it, shared by every
// host, so that every host that has seen the same entries computes the same
// owner for every address.
//
// Entries, all written by their host only (keys under "ipam/"):
//
//	block/<pool>|<part>    {epoch, to}: the writer handed the part (a block,
//	                       or an aligned part of one down to one address)
//	                       to "to" at epoch (to != writer), or accepted it
//	                       at epoch (to == writer). Epoch 0 is the genesis
//	                       owner.
//	want/<pool>            {seq, donor, block}: the writer asks donor for
//	                       space (the part holding a given address, or any).
//	reply/<pool>|<host>    {seq, block, inuse, ask}: the donor's answer to
//	                       host's want seq; block "" means no, ask names
//	                       hosts the donor gave space to.
//	removal/<host>         {requester, requesters, held, heir, done}: the writer
//	                       requested (or acknowledged) the removal of host;
//	                       requesters are those it has seen; held lists its own
//	                       block entries when it first wrote; the heir sets done
//	                       once it took the removed host's blocks.
//
// The owner of an address is decided by the claims on every part that
// contains it: the highest epoch wins (ownerOf). segmentsOf applies that
// rule to a whole block at once.

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
)

const (
	prefixIPAM    = "ipam/"
	prefixBlock   = "ipam/block/"
	prefixWant    = "ipam/want/"
	prefixReply   = "ipam/reply/"
	prefixRemoval = "ipam/removal/"
)

type blockEntry struct {
	Epoch uint64 `json:"epoch"`
	To    string `json:"to"`
	Range string `json:"range,omitempty"` // the pool's ip-range, so any host can number its blocks
}

type wantEntry struct {
	Seq   uint64 `json:"seq"`
	Donor string `json:"donor"`
	Block string `json:"block,omitempty"` // a requested address as a full-length prefix (or a block, from older hosts)
	Range string `json:"range,omitempty"` // the pool's ip-range
}

type replyEntry struct {
	Seq   uint64   `json:"seq"`
	Block string   `json:"block,omitempty"` // the part handed over; "" is a refusal
	InUse bool     `json:"inuse,omitempty"` // refused: the requested address is allocated or reserved there
	Ask   []string `json:"ask,omitempty"`   // hosts the donor handed parts of the pool to: ask them next
}

type removalEntry struct {
	Requester  bool                  `json:"requester"`
	Requesters []string              `json:"requesters,omitempty"` // requesters the writer has seen, sorted; only grows
	Held       map[string]blockEntry `json:"held,omitempty"`
	Heir       string                `json:"heir,omitempty"`
	Done       bool                  `json:"done,omitempty"`
}

func blockKey(poolID string, b netip.Prefix) string { return prefixBlock + poolID + "|" + b.String() }

func parseBlockKey(k string) (poolID string, b netip.Prefix, ok bool) {
	rest, ok := strings.CutPrefix(k, prefixBlock)
	if !ok {
		return "", netip.Prefix{}, false
	}
	poolID, bs, ok := strings.Cut(rest, "|")
	if !ok {
		return "", netip.Prefix{}, false
	}
	b, err := netip.ParsePrefix(bs)
	return poolID, b, err == nil && b.Masked() == b && b.Addr().Zone() == ""
}

func replyKey(poolID, host string) string { return prefixReply + poolID + "|" + host }

func decode[T any](b []byte) (T, bool) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err == nil
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs of strings and integers are encoded
	}
	return b
}

// claim is one host's statement about a part of a block: its entry, or an
// entry it listed as held when it acknowledged a removal.
type claim struct {
	writer string
	prefix netip.Prefix
	blockEntry
}

// ownership is the outcome of the max-epoch rule for one address.
type ownership struct {
	owner    string
	epoch    uint64
	conflict []claim // non-nil when two claims name different owners at the top epoch
}

// fold applies the max-epoch rule one claim at a time; the result does not
// depend on the order. A copy can be folded on independently.
type fold struct {
	best          ownership
	found         bool
	genesisEpoch  uint64
	removedWriter func(string) bool
}

func newFold(removed func(string) bool, genesis string, genesisEpoch uint64) fold {
	return fold{best: ownership{owner: genesis, epoch: genesisEpoch}, genesisEpoch: genesisEpoch, removedWriter: removed}
}

func (f *fold) add(c claim) {
	if c.To != c.writer && f.removedWriter(c.writer) {
		return
	}
	switch {
	case !f.found && c.Epoch < f.genesisEpoch:
		// Older than the genesis share passing to an heir.
	case !f.found || c.Epoch > f.best.epoch:
		f.best = ownership{owner: c.To, epoch: c.Epoch}
		f.found = true
	case c.Epoch == f.best.epoch && c.To != f.best.owner:
		conflict := slices.Clip(f.best.conflict) // never append into a slice a copy shares
		if conflict == nil {
			conflict = []claim{{writer: "?", blockEntry: blockEntry{Epoch: f.best.epoch, To: f.best.owner}}}
		}
		f.best.conflict = append(conflict, c)
		f.best.owner = min(f.best.owner, c.To)
	}
}

// ownerOf applies the rule every host uses to the claims on the parts
// containing one address: the owner is the host named by the claim with the
// highest epoch; with no claims it is the genesis owner at its epoch.
// Handovers written by a removed host are ignored (the recipient has either
// accepted, and then its own claim stands, or never will). Two different
// owners at the top epoch cannot happen while hosts follow the protocol; if
// it does, the lowest name wins on every host and the claims are returned
// for a loud log.
func ownerOf(claims []claim, removed func(string) bool, genesis string, genesisEpoch uint64) ownership {
	f := newFold(removed, genesis, genesisEpoch)
	for _, c := range claims {
		f.add(c)
	}
	return f.best
}

// segment is an aligned part of a block whose addresses all have the same
// ownership.
type segment struct {
	prefix netip.Prefix
	ownership
}

// segmentsOf applies ownerOf to every address of block at once, with the
// claims on block and on its parts (others are ignored). It returns aligned
// parts covering block in address order; their number is at most twice the
// claims times the depth, whatever the block's size.
func segmentsOf(block netip.Prefix, claims []claim, removed func(string) bool, genesis string, genesisEpoch uint64) []segment {
	var in []claim
	for _, c := range claims {
		if c.prefix.IsValid() && c.prefix.Bits() >= block.Bits() && block.Contains(c.prefix.Addr()) {
			in = append(in, c)
		}
	}
	var out []segment
	var walk func(p netip.Prefix, f fold, cs []claim)
	walk = func(p netip.Prefix, f fold, cs []claim) {
		var inner []claim
		for _, c := range cs {
			if c.prefix.Bits() == p.Bits() {
				f.add(c)
			} else {
				inner = append(inner, c)
			}
		}
		if len(inner) == 0 || p.Bits() == p.Addr().BitLen() {
			out = append(out, segment{prefix: p, ownership: f.best})
			return
		}
		lo, hi := halves(p)
		var los, his []claim
		for _, c := range inner {
			if lo.Contains(c.prefix.Addr()) {
				los = append(los, c)
			} else {
				his = append(his, c)
			}
		}
		walk(lo, f, los)
		walk(hi, f, his)
	}
	walk(block, newFold(removed, genesis, genesisEpoch), in)
	return out
}

// halves splits p into its two aligned halves; p must have a host bit.
func halves(p netip.Prefix) (lo, hi netip.Prefix) {
	b := p.Bits() + 1
	step := u128{lo: 1}.shl(p.Addr().BitLen() - b)
	return netip.PrefixFrom(p.Addr(), b), netip.PrefixFrom(fromU128(toU128(p.Addr()).add(step), p.Addr().Is6()), b)
}

// genesisOwner is the owner of block i before any handover: the seeds share
// blocks round-robin, and a seed removed by an admin passes its share to the
// heir of that removal (and on, if the heir was removed too). epoch counts
// those passes, so an heir's first claim outranks any unseen claim the
// removed host made at the epoch before.
func genesisOwner(seeds []string, i uint64, heirs map[string]string) (owner string, epoch uint64) {
	h := seeds[i%uint64(len(seeds))]
	for range len(heirs) + 1 {
		next, ok := heirs[h]
		if !ok {
			return h, epoch
		}
		h = next
		epoch++
	}
	return h, epoch // a cycle: impossible, heirs are live hosts when chosen
}
