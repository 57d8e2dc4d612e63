package ipam

// How this host obtains space: first its own unused genesis share
// (materialize), then by asking owners one at a time for a handover
// (acquire). Reads of ownership go through ownerLocked, the same rule every
// host applies (blocks.go).

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// claimsLocked returns the claims on block key, this host's own entry first.
func (m *IPAM) claimsLocked(key string) []claim {
	cs := slices.Clone(m.claims[key])
	if e, ok := m.own[key]; ok {
		cs = append(cs, claim{writer: m.cfg.Host, blockEntry: e})
	}
	return cs
}

func (m *IPAM) ownerLocked(p *pool, i uint64) ownership {
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	g, ge := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return ownerOf(m.claimsLocked(key), func(h string) bool { return m.removed[h] }, g, ge)
}

// genesisFreeLocked reports whether block i is one of this host's genesis
// blocks that nobody has written about: never used, never handed over.
func (m *IPAM) genesisFreeLocked(p *pool, i uint64) bool {
	if g, _ := genesisOwner(m.cfg.Seeds, i, m.heirs); g != m.cfg.Host {
		return false
	}
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	if _, mine := m.own[key]; mine {
		return false
	}
	// Claims older than our genesis epoch are the removed seeds' own.
	return m.ownerLocked(p, i).owner == m.cfg.Host
}

func (m *IPAM) genesisEpoch(i uint64) uint64 {
	_, e := genesisOwner(m.cfg.Seeds, i, m.heirs)
	return e
}

// nextGenesisLocked finds the lowest free genesis block of this host at or
// after p.genNext. The scan is bounded so a huge IPv6 pool cannot stall it.
func (m *IPAM) nextGenesisLocked(p *pool) (uint64, bool) {
	const maxScan = 1 << 20
	n := uint64(len(m.cfg.Seeds))
	mine := make([]bool, n) // seeds whose genesis share is now this host's
	some := false
	for k := range n {
		if g, _ := genesisOwner(m.cfg.Seeds, k, m.heirs); g == m.cfg.Host {
			mine[k], some = true, true
		}
	}
	if !some {
		return 0, false
	}
	for i, scanned := p.genNext, 0; i < p.alloc.Blocks() && scanned < maxScan; i, scanned = i+1, scanned+1 {
		if mine[i%n] && m.genesisFreeLocked(p, i) {
			return i, true
		}
	}
	return 0, false
}

// materializeLocked starts using a free genesis block (block i if exact,
// else the lowest one), writing the accept entry that tells everyone.
func (m *IPAM) materializeLocked(p *pool, i uint64, exact bool) bool {
	if !exact {
		var ok bool
		if i, ok = m.nextGenesisLocked(p); !ok {
			p.genNext = p.alloc.Blocks()
			return false
		}
	} else if !m.genesisFreeLocked(p, i) {
		return false
	}
	if err := m.putBlockLocked(p, i, blockEntry{Epoch: m.genesisEpoch(i), To: m.cfg.Host}); err != nil {
		m.log.Warn("cannot record block", "pool", p.req.PoolID(), "block", p.alloc.Block(i), "err", err)
		return false
	}
	p.alloc.AddBlock(i)
	if !exact {
		p.genNext = i + 1
	}
	m.log.Debug("block taken from genesis share", "pool", p.req.PoolID(), "block", p.alloc.Block(i))
	return true
}

// putBlockLocked writes this host's entry for block i. The replica's Put
// only writes the local copy and queues the broadcast, so it is called under
// the lock: deciding and recording a change of owner must be one step.
func (m *IPAM) putBlockLocked(p *pool, i uint64, e blockEntry) error {
	if p.req.Range.IsValid() {
		e.Range = p.req.Range.String()
	}
	key := blockKey(p.req.PoolID(), p.alloc.Block(i))
	if err := m.rep.Put(key, encode(e)); err != nil {
		return err
	}
	m.own[key] = e
	m.saveLocked()
	return nil
}

// acquireLocked obtains a block by handover: any block with space, or block
// i if exact. It releases m.mu while waiting and holds it again on return.
func (m *IPAM) acquireLocked(ctx context.Context, p *pool, i uint64, exact bool) error {
	r0 := p.received
	done := func() bool {
		if exact {
			return p.alloc.Owns(i)
		}
		// Another request of this host may already have used up the new
		// block; it still counts as an answer.
		return p.alloc.Free() > 0 || p.received != r0
	}
	m.mu.Unlock()
	select {
	case p.acquirer <- struct{}{}:
	case <-ctx.Done():
		m.mu.Lock()
		return kindErrorf(ErrUnavailable, "waiting for a block: %w", ctx.Err())
	}
	m.mu.Lock()
	defer func() { <-p.acquirer }()
	if done() {
		return nil
	}
	var donors []string
	if exact {
		o := m.ownerLocked(p, i)
		if o.owner == m.cfg.Host {
			return kindErrorf(ErrNotOwned, "block %s: owned by this host but not loaded (a bug)", p.alloc.Block(i))
		}
		if m.removed[o.owner] {
			return kindErrorf(ErrUnavailable, "block %s is owned by removed host %s until its reclaim completes", p.alloc.Block(i), o.owner)
		}
		donors = []string{o.owner}
	} else {
		donors = m.donorsLocked(p)
	}
	alive := m.aliveSet()
	timedOut, refused := []string{}, []string{}
	for _, d := range donors {
		if !alive[d] {
			timedOut = append(timedOut, d)
			continue
		}
		m.seq++
		w := wantEntry{Seq: m.seq, Donor: d}
		if exact {
			w.Block = p.alloc.Block(i).String()
		}
		if p.req.Range.IsValid() {
			w.Range = p.req.Range.String()
		}
		if err := m.rep.Put(prefixWant+p.req.PoolID(), encode(w)); err != nil {
			return fmt.Errorf("ask host %s for a block: %w", d, err)
		}
		m.saveLocked()
		answer, err := m.awaitLocked(ctx, p, d, w.Seq, done)
		if err != nil {
			return err
		}
		switch answer {
		case answerGiven:
			return nil
		case answerRefused:
			refused = append(refused, d)
		case answerTimeout:
			timedOut = append(timedOut, d)
		}
	}
	what := "no free address on this host"
	if exact {
		what = fmt.Sprintf("block %s is owned by host %s", p.alloc.Block(i), donors[0])
	}
	switch {
	case len(timedOut) > 0:
		return kindErrorf(ErrUnavailable, "%s and hosts %v did not answer (refused: %v)", what, timedOut, refused)
	case exact:
		return kindErrorf(ErrNotOwned, "%s, which has addresses allocated in it", what)
	}
	return kindErrorf(ErrExhausted, "%s and no host could hand over a block (asked %v)", what, refused)
}

type answer int

const (
	answerGiven answer = iota
	answerRefused
	answerTimeout
)

// awaitLocked waits for donor's answer to want seq, with m.mu released.
func (m *IPAM) awaitLocked(ctx context.Context, p *pool, donor string, seq uint64, done func() bool) (answer, error) {
	timer := time.NewTimer(m.cfg.AnswerTimeout)
	defer timer.Stop()
	rkey := replyKey(p.req.PoolID(), m.cfg.Host)
	m.kickNow()
	for {
		if done() {
			return answerGiven, nil
		}
		if m.fenced {
			return answerRefused, ErrRemoved
		}
		for _, e := range m.rep.List(rkey) {
			if r, ok := decode[replyEntry](e.Value); ok && e.Key == rkey && e.Host == donor && r.Seq == seq && r.Block == "" {
				return answerRefused, nil
			}
		}
		ch := m.notify
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-timer.C:
			m.mu.Lock()
			if done() {
				return answerGiven, nil
			}
			return answerTimeout, nil
		case <-ctx.Done():
			m.mu.Lock()
			return answerTimeout, kindErrorf(ErrUnavailable, "waiting for host %s to hand over a block: %w", donor, ctx.Err())
		}
	}
}

// donorsLocked orders the hosts to ask for space: the seeds first (they hold
// the unused genesis space), starting at a place that depends on this host
// so that requesters spread out, then every other owner, most blocks first.
func (m *IPAM) donorsLocked(p *pool) []string {
	seen := map[string]bool{m.cfg.Host: true}
	var out []string
	add := func(h string) {
		for range len(m.heirs) + 1 {
			if next, ok := m.heirs[h]; ok {
				h = next
			}
		}
		if !seen[h] && !m.removed[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	f := fnv.New32a()
	f.Write([]byte(m.cfg.Host))
	start := int(f.Sum32() % uint32(len(m.cfg.Seeds)))
	for k := range m.cfg.Seeds {
		add(m.cfg.Seeds[(start+k)%len(m.cfg.Seeds)])
	}
	count := map[string]int{}
	pfx := prefixBlock + p.req.PoolID() + "|"
	for key, cs := range m.claims {
		if !strings.HasPrefix(key, pfx) {
			continue
		}
		o := ownerOf(cs, func(h string) bool { return m.removed[h] }, "", 0)
		if o.owner != "" {
			count[o.owner]++
		}
	}
	var rest []string
	for h := range count {
		rest = append(rest, h)
	}
	slices.SortFunc(rest, func(a, b string) int {
		if count[a] != count[b] {
			return count[b] - count[a]
		}
		return strings.Compare(a, b)
	})
	for _, h := range rest {
		add(h)
	}
	return out
}

func (m *IPAM) aliveSet() map[string]bool {
	alive := map[string]bool{}
	for _, mb := range m.rep.Members() {
		if mb.Alive {
			alive[mb.Name] = true
		}
	}
	return alive
}
