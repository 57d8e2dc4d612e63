package gossip

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReadPeersSkipsBadLines: a kept list is read bounded, bad lines are
// skipped and counted, never fatal; addresses come out in one form.
func TestReadPeersSkipsBadLines(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "peers")
	if peers, bad, err := readPeers(file); peers != nil || bad != 0 || err != nil {
		t.Errorf("missing file: %v, %d bad, %v", peers, bad, err)
	}
	in := "not an address\n\n 198.51.100.7:7946 \n198.51.100.8:0\n0.0.0.0:7946\n[::ffff:198.51.100.9]:7946\n" +
		"[2001:db8::1]:7946\n198.51.100.7:7946\n198.51.100.7\n"
	if err := os.WriteFile(file, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	peers, bad, err := readPeers(file)
	want := []string{"198.51.100.7:7946", "198.51.100.9:7946", "[2001:db8::1]:7946"}
	if err != nil || bad != 4 || !slices.Equal(peers, want) {
		t.Errorf("readPeers = %v, %d bad, %v; want %v, 4 bad", peers, bad, err, want)
	}
	// A huge file: at most maxKeptPeers addresses, from its first 64 KiB.
	var b strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&b, "10.%d.%d.%d:7946\n", i>>16, i>>8&255, i&255)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if peers, _, err := readPeers(file); err != nil || len(peers) != maxKeptPeers {
		t.Errorf("huge file: %d peers, %v; want %d", len(peers), err, maxKeptPeers)
	}
}

// TestMergePeersKeepsTheRingNotOnlyWhatIsInSight: the kept list is the
// alive peers, those kept before first when there are too many, then kept
// peers that are down or unknown until missing for the forget bound; hosts
// that left go at once.
func TestMergePeersKeepsTheRingNotOnlyWhatIsInSight(t *testing.T) {
	now := time.Now()
	forget := now.Add(-30 * time.Minute)
	missing := map[string]time.Time{}
	old := []string{"a:1", "b:1", "c:1", "d:1"}
	states := map[string]peerState{"a:1": peerAlive, "b:1": peerDown, "c:1": peerGone, "e:1": peerAlive}
	// d:1 is unknown: a host of the last run not seen in this one.
	got := mergePeers(old, states, missing, now, forget)
	if want := []string{"a:1", "b:1", "d:1", "e:1"}; !slices.Equal(got, want) {
		t.Errorf("merged %v, want %v", got, want)
	}
	if _, ok := missing["a:1"]; ok || missing["b:1"] != now || missing["d:1"] != now {
		t.Errorf("missing %v", missing)
	}
	// Still missing past the bound: forgotten. Back alive: no longer
	// missing.
	later := now.Add(31 * time.Minute)
	states["b:1"] = peerAlive
	got = mergePeers(got, states, missing, later, later.Add(-30*time.Minute))
	if want := []string{"a:1", "b:1", "e:1"}; !slices.Equal(got, want) {
		t.Errorf("after the bound: %v, want %v", got, want)
	}
	if len(missing) != 0 {
		t.Errorf("missing after the bound: %v", missing)
	}
	// More alive peers than kept: the ones kept before stay.
	var ring []string
	states = map[string]peerState{}
	for i := range 2 * maxKeptPeers {
		p := fmt.Sprintf("10.0.%d.%d:7946", i>>8, i&255)
		ring = append(ring, p)
		states[p] = peerAlive
	}
	before := slices.Sorted(slices.Values(ring[maxKeptPeers:]))
	kept := mergePeers(before, states, missing, now, forget)
	if len(kept) != maxKeptPeers || !slices.Equal(kept, before) {
		t.Errorf("a large ring kept %d, the same as before: %v", len(kept), slices.Equal(kept, before))
	}
	if again := mergePeers(kept, states, missing, now, forget); !slices.Equal(again, kept) {
		t.Error("a large ring's kept sample changed with nothing else changing")
	}
}
