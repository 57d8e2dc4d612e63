package gossip

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Peers a host saw alive are kept across restarts (Config.PeersFile), so a
// host whose seeds are all down when it starts can still find the ring.
// Seeds alone are not enough: a host that left cleanly is rejoined by
// nobody (it said it was leaving), so after a reboot only its own joins
// bring it back, and its seeds may be the hosts that are down.
const (
	// maxKeptPeers bounds the addresses written (a random sample of the
	// ring above it) and read back.
	maxKeptPeers = 256
	// keptJoin bounds the kept peers one join tries (chosen at random):
	// a dead address can take a TCP timeout to fail, and one live peer
	// is enough.
	keptJoin = 4
	// maxPeersFile bounds the file read at start.
	maxPeersFile = 64 << 10
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
		if err != nil || !ap.Addr().IsValid() || ap.Port() == 0 {
			bad++
			continue
		}
		peers = append(peers, ap.String())
	}
	if err := sc.Err(); err != nil {
		return peers, bad, fmt.Errorf("read %s: %w", path, err)
	}
	return peers, bad, nil
}

// writePeers replaces path with peers, one a line, through a temporary
// file and a rename: a crash leaves the old list or the new one.
func writePeers(path string, peers []string) error {
	var b bytes.Buffer
	for _, p := range peers {
		b.WriteString(p)
		b.WriteByte('\n')
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b.Bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// alivePeers returns the gossip addresses of the other alive members,
// sorted, at most maxKeptPeers (a random sample above it).
func (n *Node) alivePeers() []string {
	var out []string
	for _, m := range n.store.members() {
		if a := m.Addr.String(); a != n.addr {
			out = append(out, a)
		}
	}
	if len(out) > maxKeptPeers {
		mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		out = out[:maxKeptPeers]
	}
	slices.Sort(out)
	return out
}

// savePeers writes the alive peers to Config.PeersFile when they changed
// since the last write. It never writes an empty list: a host alone (cut
// off, or its peers stopping) keeps the peers it knew.
func (n *Node) savePeers() {
	if n.cfg.PeersFile == "" {
		return
	}
	peers := n.alivePeers()
	if len(peers) == 0 || slices.Equal(peers, n.savedPeers) {
		return
	}
	if err := writePeers(n.cfg.PeersFile, peers); err != nil {
		n.log.Warn("keep the ring's addresses for the next start", "err", err)
		return
	}
	n.savedPeers = peers
	n.mu.Lock()
	n.keptPeers = peers
	n.mu.Unlock()
}

// keptTargets returns up to keptJoin kept peers, at random, that are not
// alive members and not in skip.
func (n *Node) keptTargets(skip []string) []string {
	alive := map[string]bool{n.addr: true}
	for _, m := range n.store.members() {
		alive[m.Addr.String()] = true
	}
	for _, s := range skip {
		alive[withPort(s, n.port)] = true
	}
	n.mu.Lock()
	var out []string
	for _, p := range n.keptPeers {
		if !alive[p] {
			out = append(out, p)
		}
	}
	n.mu.Unlock()
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(len(out), keptJoin)]
}

// alone says whether no other host is an alive member.
func (n *Node) alone() bool {
	for _, m := range n.store.members() {
		if m.Addr.String() != n.addr {
			return false
		}
	}
	return true
}
