package ipam

// Block ownership: who may allocate from which block. The safety argument is
// in doc.go; this file is the pure part of it, shared by every host, so that
// every host that has seen the same entries computes the same owner.
//
// Entries, all written by their host only (keys under "ipam/"):
//
//	block/<pool>|<block>   {epoch, to}: the writer handed the block to "to" at
//	                       epoch (to != writer), or accepted it at epoch
//	                       (to == writer). Epoch 0 is the genesis owner.
//	want/<pool>            {seq, donor, block}: the writer asks donor for a
//	                       block (a given one, or any empty one).
//	reply/<pool>|<host>    {seq, block}: the donor's answer to host's want seq;
//	                       block "" means no.
//	removal/<host>         {requester, requesters, held, heir, done}: the writer
//	                       requested (or acknowledged) the removal of host;
//	                       requesters are those it has seen; held lists its own
//	                       block entries when it first wrote; the heir sets done
//	                       once it took the removed host's blocks.

import (
	"encoding/json"
	"net/netip"
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
	Block string `json:"block,omitempty"` // a given block, for a requested address
	Range string `json:"range,omitempty"` // the pool's ip-range
}

type replyEntry struct {
	Seq   uint64 `json:"seq"`
	Block string `json:"block,omitempty"` // "" is a refusal
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
	return poolID, b, err == nil
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

// claim is one host's statement about a block: its entry, or an entry it
// listed as held when it acknowledged a removal.
type claim struct {
	writer string
	blockEntry
}

// ownership is the outcome of the max-epoch rule for one block.
type ownership struct {
	owner    string
	epoch    uint64
	conflict []claim // non-nil when two claims name different owners at the top epoch
}

// ownerOf applies the rule every host uses: the owner of a block is the host
// named by the claim with the highest epoch; with no claims it is the genesis
// owner at epoch 0. Handovers written by a removed host are ignored (the
// recipient has either accepted, and then its own claim stands, or never
// will). Two different owners at the top epoch cannot happen while hosts
// follow the protocol; if it does, the lowest name wins on every host and
// the claims are returned for a loud log.
func ownerOf(claims []claim, removed func(string) bool, genesis string, genesisEpoch uint64) ownership {
	best := ownership{owner: genesis, epoch: genesisEpoch}
	found := false
	for _, c := range claims {
		if c.To != c.writer && removed(c.writer) {
			continue
		}
		switch {
		case !found && c.Epoch < genesisEpoch:
			// Older than the genesis share passing to an heir.
		case !found || c.Epoch > best.epoch:
			best = ownership{owner: c.To, epoch: c.Epoch}
			found = true
		case c.Epoch == best.epoch && c.To != best.owner:
			if best.conflict == nil {
				best.conflict = []claim{{writer: "?", blockEntry: blockEntry{Epoch: best.epoch, To: best.owner}}}
			}
			best.conflict = append(best.conflict, c)
			best.owner = min(best.owner, c.To)
		}
	}
	return best
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
