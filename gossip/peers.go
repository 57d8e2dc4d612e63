package gossip

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tenet-net/tenet/internal/atomicfile"
)

// Peers a host saw are kept across restarts (Config.PeersFile), so a host
// whose seeds are down when it starts can still find the ring. Seeds alone
// are not enough: a host that left cleanly is rejoined by nobody (it said
// it was leaving), so after a reboot only its own joins bring it back, and
// its seeds may be the hosts that are down.
//
// The list is the alive peers, those kept before first (so a sample of a
// large ring stays the same), then kept peers that are down but not known
// to have left, each until it has been missing for ReapDeadAfter: a
// partition or a storm of false downs does not shrink it to the few hosts
// still in sight, and hosts restarted together, which found each other
// first, still know the rest of the ring. A host alone writes nothing.
const (
	// maxKeptPeers bounds the addresses kept, written and read back.
	maxKeptPeers = 256
	// keptJoin bounds the kept peers the join at start tries, one at a
	// time until one answers: memberlist's Join makes a full exchange with
	// every address it is given, and a dead one can take a TCP timeout.
	keptJoin = 4
	// keptRejoin is the same bound for a rejoin round, which also dials
	// the seeds and failed peers: across a partition every dial may wait
	// out its timeout, and the round that heals it comes only after.
	keptRejoin = 1
	// maxPeersFile bounds the file read at start.
	maxPeersFile = 64 << 10
)

// peerState is what this host knows of a kept or alive address.
type peerState uint8

const (
	peerUnknown peerState = iota // no member has it (a host of a past run)
	peerAlive
	peerDown // failed, may come back
	peerGone // left cleanly, or down so long its entries were dropped
)

// readPeers returns the addresses in path, one "ip:port" a line. A missing
// file is no error; lines that are not an address are skipped and counted.
func readPeers(path string) (peers []string, bad int, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxPeersFile))
	for sc.Scan() && len(peers) < maxKeptPeers {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(line)
		if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			bad++
			continue
		}
		if p := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(); !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}
	if err := sc.Err(); err != nil {
		return peers, bad, fmt.Errorf("read %s: %w", path, err)
	}
	return peers, bad, nil
}

// peerStates returns what the store knows of every other host's gossip
// address.
func (s *store) peerStates(self string) map[string]peerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]peerState, len(s.owners))
	for _, o := range s.owners {
		a := o.addr.String()
		if !o.addr.IsValid() || a == self {
			continue
		}
		st := peerDown
		switch {
		case o.alive:
			st = peerAlive
		case o.left || o.reaped:
			st = peerGone
		}
		if out[a] != peerAlive { // an address reused by a new name: the alive one counts
			out[a] = st
		}
	}
	return out
}

// mergePeers returns the list to keep: the alive peers (those in old
// first), then the rest of old that is not gone and has not been missing
// since before forgetBefore, at most maxKeptPeers, sorted. missing holds
// when each address was first seen not alive; it is updated.
func mergePeers(old []string, states map[string]peerState, missing map[string]time.Time, now, forgetBefore time.Time) []string {
	var out []string
	add := func(p string) {
		if len(out) < maxKeptPeers && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for _, p := range old {
		if states[p] == peerAlive {
			add(p)
		}
	}
	var alive []string
	for p, st := range states {
		if st == peerAlive {
			alive = append(alive, p)
		}
	}
	slices.Sort(alive)
	for _, p := range alive {
		add(p)
		delete(missing, p)
	}
	for _, p := range old {
		st := states[p]
		if st == peerAlive || st == peerGone {
			delete(missing, p)
			continue
		}
		since, ok := missing[p]
		if !ok {
			missing[p], since = now, now
		}
		if !since.Before(forgetBefore) {
			add(p)
		}
	}
	for p := range missing {
		if !slices.Contains(out, p) {
			delete(missing, p)
		}
	}
	slices.Sort(out)
	return out
}

// savePeers writes Config.PeersFile when the list to keep changed. It runs
// in the rejoin goroutine (one at a time), never in Run's loop: the write
// syncs to disk.
func (n *Node) savePeers() {
	if n.cfg.PeersFile == "" {
		return
	}
	states := n.store.peerStates(n.addr)
	alone := true
	for _, st := range states {
		if st == peerAlive {
			alone = false
			break
		}
	}
	if alone {
		return
	}
	n.mu.Lock()
	old := n.keptPeers
	n.mu.Unlock()
	now := time.Now()
	next := mergePeers(old, states, n.missing, now, now.Add(-n.cfg.ReapDeadAfter))
	if slices.Equal(next, old) {
		return
	}
	if err := atomicfile.Write(n.cfg.PeersFile, []byte(strings.Join(next, "\n")+"\n"), 0o600); err != nil {
		n.log.Warn("keep the ring's addresses for the next start", "err", err)
		return
	}
	n.mu.Lock()
	n.keptPeers = next
	n.mu.Unlock()
}

// keptWanted says whether join rounds should try the kept peers: fewer
// than half of them are alive members (alone, or among hosts restarted
// together while the rest of the ring is elsewhere).
func (n *Node) keptWanted() bool {
	n.mu.Lock()
	none := len(n.keptPeers) == 0
	n.mu.Unlock()
	if none {
		return false // without PeersFile, every round: not worth a walk of the members
	}
	states := n.store.peerStates(n.addr)
	n.mu.Lock()
	defer n.mu.Unlock()
	alive := 0
	for _, p := range n.keptPeers {
		if states[p] == peerAlive {
			alive++
		}
	}
	return 2*alive < len(n.keptPeers)
}

// joinKept joins kept peers that are not alive members and not in skip,
// up to limit at random, one at a time until one answers.
func (n *Node) joinKept(skip []string, limit int) (reached string, err error) {
	states := n.store.peerStates(n.addr)
	avoid := map[string]bool{}
	for _, s := range skip {
		avoid[withPort(s, n.port)] = true
	}
	n.mu.Lock()
	var try []string
	for _, p := range n.keptPeers {
		if p != n.addr && states[p] != peerAlive && !avoid[p] {
			try = append(try, p)
		}
	}
	n.mu.Unlock()
	mrand.Shuffle(len(try), func(i, j int) { try[i], try[j] = try[j], try[i] })
	var errs []error
	for _, p := range try[:min(len(try), limit)] {
		if k, err := n.ml.Join([]string{p}); k > 0 {
			return p, nil
		} else {
			errs = append(errs, err)
		}
	}
	return "", errors.Join(errs...)
}
