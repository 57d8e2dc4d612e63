package ipam

// Everything IPAM hands to another component happens here, never under
// m.mu: saving the state (Store.Save) and writing this host's entries
// (Replica.Put, which with gossip can end in network sends to every peer,
// and stall for seconds on a peer that is unreachable but not yet declared
// dead).
//
// A change is made in memory under m.mu, which bumps m.gen; entries for
// the replica are queued in m.out (the last value per key wins: the table
// keeps only the last one anyway, and IPAM never relies on order between
// keys). Then, without the lock:
//
//   - A call that must not answer before its change is durable (an address
//     handed to Docker, a pool, a gateway) waits in commit until a save
//     covering its gen is done. Concurrent callers share one save. If its
//     ctx ends first, or the save fails, the change is taken back under
//     the lock: a caller that gives up leaves nothing behind.
//   - The writer (started by Run) saves, then writes the queued entries to
//     the replica. Saving first means an entry other hosts can see, such as
//     a handover, is on this host's disk before it leaves: a donor that
//     restarts never allocates again from what it gave away.
//
// A blocked Put holds up only the writer: allocation from owned space goes
// on, and so do other hosts' handovers to this host (accepting needs no
// write before this host may use what it was given). Wants and replies wait
// behind it, which only delays getting space from others.

import (
	"context"
	"maps"
	"slices"
	"time"
)

type outWrite struct {
	value []byte
	del   bool
}

// changedLocked notes a change of the state to persist and returns its gen.
func (m *IPAM) changedLocked() uint64 {
	m.gen++
	return m.gen
}

// putLocked queues this host's entry under key for the replica.
func (m *IPAM) putLocked(key string, value []byte) {
	m.out[key] = outWrite{value: value}
	m.changedLocked()
	m.kickWriter()
}

// deleteLocked queues the deletion of this host's entry under key.
func (m *IPAM) deleteLocked(key string) {
	m.out[key] = outWrite{del: true}
	m.changedLocked()
	m.kickWriter()
}

func (m *IPAM) kickWriter() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// persist returns once a save covering gen is done, starting one if none
// is under way. It returns ctx's error if ctx ends first (the save goes on:
// a store that hangs cannot hold the caller past its deadline), and the
// store's error if the save covering gen failed. Called without m.mu.
func (m *IPAM) persist(ctx context.Context, gen uint64) error {
	if m.cfg.Store == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.saved < gen {
		if m.failedGen >= gen {
			return m.saveErr
		}
		if !m.saving {
			m.saving = true
			go m.save(m.gen, m.encodeLocked())
		}
		ch := m.saveDone
		m.mu.Unlock()
		select {
		case <-ch:
			m.mu.Lock()
		case <-ctx.Done():
			m.mu.Lock()
			return ctx.Err()
		}
	}
	return nil
}

// save writes the snapshot b of gen g to the store, one save at a time.
func (m *IPAM) save(g uint64, b []byte) {
	err := m.cfg.Store.Save(b)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saving = false
	if err != nil {
		m.saveErr, m.failedGen = err, g
	} else {
		m.saved = max(m.saved, g)
	}
	close(m.saveDone)
	m.saveDone = make(chan struct{})
}

// commit makes the change recorded at gen durable before the caller
// answers, and checks ctx once more when it is. If ctx has ended or the
// save failed, undo (run under m.mu) takes the change back and the error is
// returned. Called without m.mu.
func (m *IPAM) commit(ctx context.Context, gen uint64, undo func()) error {
	err := m.persist(ctx, gen)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil && undo != nil {
		m.mu.Lock()
		undo()
		m.changedLocked()
		m.mu.Unlock()
		m.kickWriter() // the undo is saved by the writer
	}
	return err
}

// runWriter saves and writes queued entries whenever there are some, and
// retries failures on a timer, until ctx ends.
func (m *IPAM) runWriter(ctx context.Context) {
	retry := time.NewTicker(m.cfg.AnswerTimeout)
	defer retry.Stop()
	for {
		m.writeOut(ctx)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-retry.C:
		}
	}
}

// writeOut saves the state, then writes the queued entries to the replica,
// all without m.mu. What fails stays queued for the next try, unless a
// newer value was queued meanwhile.
func (m *IPAM) writeOut(ctx context.Context) {
	m.mu.Lock()
	batch, gen := m.out, m.gen
	m.out = map[string]outWrite{}
	m.mu.Unlock()
	if err := m.persist(ctx, gen); err != nil {
		if ctx.Err() == nil {
			m.logOnce("persist "+err.Error(), "cannot persist ipam state; entries for other hosts wait until it works", "err", err)
		}
		m.requeue(batch)
		return
	}
	failed := map[string]outWrite{}
	for _, k := range slices.Sorted(maps.Keys(batch)) {
		w := batch[k]
		var err error
		if w.del {
			err = m.rep.Delete(k)
		} else {
			err = m.rep.Put(k, w.value)
		}
		if err != nil {
			failed[k] = w
			m.logOnce("put "+k+err.Error(), "cannot write entry to the replicated table; retrying", "key", k, "err", err)
		}
	}
	m.requeue(failed)
}

func (m *IPAM) requeue(batch map[string]outWrite) {
	if len(batch) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, w := range batch {
		if _, newer := m.out[k]; !newer {
			m.out[k] = w
		}
	}
}

// logOnce logs an error once per key (bounded, as keys can vary).
func (m *IPAM) logOnce(key, msg string, args ...any) {
	m.mu.Lock()
	seen := m.logged[key]
	if !seen {
		if len(m.logged) > 10000 {
			clear(m.logged)
		}
		m.logged[key] = true
	}
	m.mu.Unlock()
	if !seen {
		m.log.Error(msg, args...)
	}
}
