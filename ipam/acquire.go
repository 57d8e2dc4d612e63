package ipam

// How this host obtains space: first its own unused genesis share
// (materialize), then by asking owners one at a time for a handover
// (acquire). Reads of ownership go through segmentsLocked, the same rule
// every host applies (blocks.go). Nothing here calls the Replica with the
// lock held: entries are queued for the writer (outbox.go).

import (
	"context"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"
)

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
// else the lowest one), recording the accept entry that tells everyone.
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
	m.writeBlockLocked(p, p.alloc.Block(i), blockEntry{Epoch: m.genesisEpoch(i), To: m.cfg.Host})
	p.alloc.AddBlock(i)
	if !exact {
		p.genNext = i + 1
	}
	m.log.Debug("block taken from genesis share", "pool", p.req.PoolID(), "block", p.alloc.Block(i))
	return true
}

// acquireLocked obtains space by handover: any part with space, or the part
// holding address want if valid. It releases m.mu while it waits and holds
// it again on return.
func (m *IPAM) acquireLocked(ctx context.Context, p *pool, want netip.Addr) error {
	exact := want.IsValid()
	r0 := p.received
	done := func() bool {
		if exact {
			return p.alloc.OwnsAddr(want)
		}
		// Another request of this host may already have used up what came;
		// it still counts as an answer.
		return p.alloc.Free() > 0 || p.received != r0
	}
	m.mu.Unlock()
	select {
	case p.acquirer <- struct{}{}:
	case <-ctx.Done():
		m.mu.Lock()
		return kindErrorf(ErrUnavailable, "waiting for a block: %w", ctx.Err())
	}
	members := m.rep.Members() // never under m.mu
	m.mu.Lock()
	defer func() { <-p.acquirer }()
	if done() {
		return nil
	}
	alive := map[string]bool{}
	for _, mb := range members {
		alive[mb.Name] = mb.Alive
	}
	var donors []string
	if exact {
		o := m.ownerOfAddrLocked(p, want)
		switch {
		case o.owner == m.cfg.Host:
			// Handed to this host and not accepted yet: the reconciler will.
			if a, _, err := m.awaitLocked(ctx, p, "", 0, done); err != nil || a == answerGiven {
				return err
			}
			return kindErrorf(ErrNotOwned, "address %s: owned by this host by the cluster's entries but not usable here (a bug)", want)
		case m.removed[o.owner]:
			return kindErrorf(ErrUnavailable, "address %s is owned by removed host %s until its reclaim completes", want, o.owner)
		}
		donors = []string{o.owner}
	} else {
		donors = m.donorsLocked(p)
	}
	asked := map[string]bool{m.cfg.Host: true}
	// A refusing donor names the hosts it handed space to, and a host may be
	// named when it has already refused: it was asked before the handover
	// reached it. Such a host is asked once more (again), after the table
	// shows it accepted (handoverOnItsWayLocked).
	again := map[string]int{} // 1: asking again is due, 2: done
	var timedOut, refused []string
	inUse := false
	for k := 0; k < len(donors); k++ {
		d := donors[k]
		if m.removed[d] {
			continue
		}
		if asked[d] {
			if again[d] != 1 {
				continue
			}
			again[d] = 2
			refused = slices.DeleteFunc(refused, func(h string) bool { return h == d })
		}
		asked[d] = true
		if !alive[d] {
			timedOut = append(timedOut, d)
			continue
		}
		if m.handoverOnItsWayLocked(p, d) {
			// Asked now, d would refuse what it is about to hold.
			if _, _, err := m.awaitLocked(ctx, p, "", 0, func() bool { return done() || !m.handoverOnItsWayLocked(p, d) }); err != nil {
				return err
			}
			if done() {
				return nil
			}
		}
		m.seq++
		w := wantEntry{Seq: m.seq, Donor: d, Range: p.rangeString()}
		if exact {
			w.Block = netip.PrefixFrom(want, want.BitLen()).String()
		}
		m.putLocked(prefixWant+p.req.PoolID(), encode(w))
		answer, reply, err := m.awaitLocked(ctx, p, d, w.Seq, done)
		if err != nil {
			return err
		}
		switch answer {
		case answerGiven:
			return nil
		case answerRefused:
			refused = append(refused, d)
			inUse = inUse || reply.InUse
			for _, h := range reply.Ask { // hosts it gave space to
				if slices.Contains(refused, h) && again[h] == 0 {
					again[h] = 1
				}
				donors = append(donors, h)
			}
		case answerTimeout:
			timedOut = append(timedOut, d)
		}
	}
	switch {
	case exact && inUse:
		return kindErrorf(ErrInUse, "address %s is allocated or reserved on host %s", want, donors[0])
	case len(timedOut) > 0 && exact:
		return kindErrorf(ErrUnavailable, "address %s is owned by host %s, which did not answer", want, donors[0])
	case exact:
		return kindErrorf(ErrNotOwned, "address %s is owned by host %s, which did not hand it over", want, donors[0])
	case len(timedOut) > 0:
		return kindErrorf(ErrUnavailable, "no free address on this host and hosts %v did not answer (refused: %v)", timedOut, refused)
	}
	return kindErrorf(ErrExhausted, "no free address on this host and no host could hand over any (asked %v)", refused)
}

type answer int

const (
	answerGiven answer = iota
	answerRefused
	answerTimeout
)

// awaitLocked waits, with m.mu released, until done, or donor's refusal of
// want seq, or AnswerTimeout. With no donor it waits only for done.
func (m *IPAM) awaitLocked(ctx context.Context, p *pool, donor string, seq uint64, done func() bool) (answer, replyEntry, error) {
	timer := time.NewTimer(m.cfg.AnswerTimeout)
	defer timer.Stop()
	rk := p.req.PoolID() + "|" + donor
	m.kickNow()
	for {
		if done() {
			return answerGiven, replyEntry{}, nil
		}
		if m.fenced {
			return answerRefused, replyEntry{}, ErrRemoved
		}
		if r, ok := m.replies[rk]; ok && donor != "" && r.Seq == seq && r.Block == "" {
			return answerRefused, r, nil
		}
		ch := m.notify
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-timer.C:
			m.mu.Lock()
			if done() {
				return answerGiven, replyEntry{}, nil
			}
			return answerTimeout, replyEntry{}, nil
		case <-ctx.Done():
			m.mu.Lock()
			return answerTimeout, replyEntry{}, kindErrorf(ErrUnavailable, "waiting for host %s to hand over space: %w", donor, ctx.Err())
		}
	}
}

// handoverOnItsWayLocked reports whether the table shows a part of p handed
// to host h by another host that h has not accepted yet.
func (m *IPAM) handoverOnItsWayLocked(p *pool, h string) bool {
	for _, bk := range m.poolBlockKeysLocked(p.req.PoolID()) {
		cs := append(slices.Clone(m.claims[bk]), m.ownClaimsLocked(bk)...)
		for _, c := range cs {
			if c.writer == h || c.To != h {
				continue
			}
			accepted := slices.ContainsFunc(cs, func(a claim) bool {
				return a.writer == h && a.Epoch >= c.Epoch && a.prefix.Overlaps(c.prefix)
			})
			if !accepted {
				return true
			}
		}
	}
	return false
}

// donorsLocked orders the hosts to ask for space: the seeds first (they hold
// the unused genesis space), starting at a place that depends on this host
// so that requesters spread out, then every other owner, most addresses
// first. Hosts a refusing donor names are asked after these.
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
	for _, bk := range m.poolBlockKeysLocked(p.req.PoolID()) {
		_, b, ok := parseBlockKey(bk)
		if !ok {
			continue
		}
		for _, s := range segmentsOf(b, append(slices.Clone(m.claims[bk]), m.ownClaimsLocked(bk)...), m.isRemoved, "", 0) {
			if s.owner != "" {
				count[s.owner] += 1 << (s.prefix.Addr().BitLen() - s.prefix.Bits())
			}
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
