package core

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tenet-net/tenet/overlay"
)

// journalHarness drives a saver on a directory as the core does, and
// checks that what loads from it is what was saved.
type journalHarness struct {
	t    *testing.T
	dir  string
	s    *saver
	nets []Network
	eps  []Endpoint
}

func newJournalHarness(t *testing.T) *journalHarness {
	dir := t.TempDir()
	h := &journalHarness{t: t, dir: dir, nets: []Network{webNet()}}
	h.restart()
	return h
}

// restart loads the directory as a new tenetd would and saves from there on.
func (h *journalHarness) restart() {
	h.t.Helper()
	if h.s != nil {
		h.s.journal = closeFile(h.s.journal)
	}
	_, _, gen, err := loadState(h.dir, func(string, ...any) {})
	if err != nil {
		h.t.Fatal(err)
	}
	h.s = newSaver(&Core{cfg: Config{StateDir: h.dir}}, gen)
	h.t.Cleanup(func() { h.s.journal = closeFile(h.s.journal) })
}

func (h *journalHarness) save() {
	h.t.Helper()
	slices.SortFunc(h.eps, byEndpointID)
	if err := h.s.write(changes{all: true, nets: slices.Clone(h.nets), netsDirty: true, set: slices.Clone(h.eps)}); err != nil {
		h.t.Fatal(err)
	}
}

// check loads the directory and compares it with the state last saved.
func (h *journalHarness) check(step string) {
	h.t.Helper()
	var warned []string
	nets, eps, _, err := loadState(h.dir, func(msg string, args ...any) { warned = append(warned, fmt.Sprint(msg, args)) })
	if err != nil {
		h.t.Fatalf("%s: %v", step, err)
	}
	wantNets := map[string]*Network{}
	for _, n := range h.nets {
		wantNets[n.Key()] = &n
	}
	wantEps := map[string]*Endpoint{}
	for _, e := range h.eps {
		wantEps[e.ID] = &e
	}
	opts := []gocmp.Option{cmpopts.EquateEmpty(), gocmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		gocmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), gocmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })}
	if d := gocmp.Diff(wantNets, nets, opts...); d != "" {
		h.t.Errorf("%s: networks (-saved +loaded):\n%s", step, d)
	}
	if d := gocmp.Diff(wantEps, eps, opts...); d != "" {
		h.t.Errorf("%s: endpoints (-saved +loaded):\n%s", step, d)
	}
	if len(warned) > 0 {
		h.t.Errorf("%s: warnings %v", step, warned)
	}
}

func (h *journalHarness) files() (snapshot, journal []byte) {
	snapshot, _ = os.ReadFile(statePath(h.dir))
	journal, _ = os.ReadFile(journalPath(h.dir))
	return snapshot, journal
}

func jep(n byte) Endpoint {
	return Endpoint{EndpointSpec: EndpointSpec{ID: fmt.Sprintf("e%03d", n), Network: "acme/web", IP: netip.PrefixFrom(ip(n), 24), MAC: mac(n)},
		Netns: "/run/docker/netns/x", NetnsSeen: true, Created: t0}
}

// TestJournalKeepsEveryChangeAndLeavesTheSnapshotAlone: after the first
// save (a snapshot), each change is one journal record and state.json is
// not rewritten; every kind of change loads back as saved, across
// restarts of the saver.
func TestJournalKeepsEveryChangeAndLeavesTheSnapshotAlone(t *testing.T) {
	h := newJournalHarness(t)
	h.eps = []Endpoint{jep(1), jep(2)}
	h.save()
	h.check("first save")
	snap, j := h.files()
	if len(snap) == 0 || len(j) != 0 {
		t.Fatalf("first save: state.json %d bytes, journal %d bytes; want a snapshot and an empty journal", len(snap), len(j))
	}
	steps := []struct {
		name string
		fn   func()
	}{
		{"add", func() { h.eps = append(h.eps, jep(3)) }},
		{"names", func() { h.eps[0].Names = []string{"db", "cache"} }},
		{"ports", func() { h.eps[1].Ports = []PortBinding{{Proto: overlay.TCP, HostPort: 8080, Port: 80}} }},
		{"delete", func() { h.eps = slices.Delete(h.eps, 0, 1) }},
		{"re-add the deleted ID", func() { e := jep(1); e.Names = []string{"again"}; h.eps = append(h.eps, e) }},
		{"delete and add in one save", func() { h.eps = append(slices.Delete(h.eps, 1, 2), jep(9)) }},
		{"a network added", func() {
			h.nets = append(h.nets, Network{NetworkSpec: NetworkSpec{Tenant: "acme", Name: "db", VNI: 9, Subnet: netip.MustParsePrefix("10.9.0.0/24")}})
		}},
		{"the networks emptied", func() { h.nets, h.eps = nil, nil }},
		{"one back", func() { h.nets, h.eps = []Network{webNet()}, []Endpoint{jep(4)} }},
	}
	for i, st := range steps {
		st.fn()
		h.save()
		h.check(st.name)
		if again, _ := h.files(); string(again) != string(snap) {
			t.Fatalf("%s: state.json was rewritten (the journal should hold the change)", st.name)
		}
		if i == 4 {
			h.restart() // a restart's first save is a snapshot
			h.check("restart")
			h.save()
			h.check("first save after the restart")
			snap, _ = h.files()
		}
	}
	_, j = h.files()
	if n := strings.Count(string(j), "\n"); n != len(steps)-5 {
		t.Errorf("journal has %d records, want %d (one per change since the last snapshot)", n, len(steps)-5)
	}
	// A save that changes nothing writes nothing.
	h.save()
	if _, again := h.files(); string(again) != string(j) {
		t.Error("a save without a change wrote a record")
	}
}

// TestJournalFoldsIntoTheSnapshotOnceItOutgrowsIt: the journal stays
// under max(journalMin, state.json's size); past that the state is written
// whole and the journal emptied.
func TestJournalFoldsIntoTheSnapshotOnceItOutgrowsIt(t *testing.T) {
	h := newJournalHarness(t)
	h.eps = []Endpoint{jep(1)}
	h.save()
	folded := 0
	for i := range 2000 {
		h.eps[0].Names = []string{fmt.Sprintf("name-%d-%s", i, strings.Repeat("x", 200))}
		h.save()
		_, j := h.files()
		if len(j) > journalMin {
			t.Fatalf("save %d: journal at %d bytes, over %d", i, len(j), journalMin)
		}
		if len(j) == 0 {
			folded++
		}
	}
	if folded == 0 {
		t.Error("the journal was never folded into state.json")
	}
	h.check("after folding")
}

// TestJournalSurvivesACrashAtAnyPoint: a record cut short (tenetd stopped
// while writing it, so its save never returned) is left out; records a
// crash left behind a newer state.json (between writing it and emptying
// the journal) are not applied again; a record that does not read ends
// the replay with a warning.
func TestJournalSurvivesACrashAtAnyPoint(t *testing.T) {
	h := newJournalHarness(t)
	h.eps = []Endpoint{jep(1), jep(2)}
	h.save()
	h.eps = append(h.eps, jep(3))
	h.save()
	_, j := h.files()
	// Cut short: half of a further record.
	h.eps[0].Names = []string{"lost"}
	rec, err := (&stateEncoder{}).update(h.nets, h.eps, h.s.gen+1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(journalPath(h.dir), append(slices.Clone(j), rec[:len(rec)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	h.eps[0].Names = nil
	nets, eps, _, err := loadState(h.dir, func(string, ...any) {})
	if err != nil || len(nets) != 1 || len(eps) != 3 || len(eps["e001"].Names) != 0 {
		t.Errorf("a record cut short: %v %d networks %d endpoints %+v", err, len(nets), len(eps), eps["e001"])
	}
	// Old records behind a newer snapshot: a crash before the journal was
	// emptied. One of them deleted e003, which the snapshot has again.
	if err := os.WriteFile(journalPath(h.dir), j, 0o600); err != nil {
		t.Fatal(err)
	}
	h.restart()
	h.save() // a snapshot
	h.eps = h.eps[:2]
	h.save() // journals the delete of e003
	_, withDelete := h.files()
	if !strings.Contains(string(withDelete), `"del":["e003"]`) {
		t.Fatalf("the journal lacks e003's delete: %s", withDelete)
	}
	h.eps = append(h.eps, jep(3))
	h.restart()
	h.save() // a snapshot with e003
	if err := os.WriteFile(journalPath(h.dir), withDelete, 0o600); err != nil {
		t.Fatal(err)
	}
	h.check("old records behind a newer snapshot")
	// A whole record that does not read.
	if err := os.WriteFile(journalPath(h.dir), []byte("{not json}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var warned []string
	if _, _, _, err := loadState(h.dir, func(msg string, _ ...any) { warned = append(warned, msg) }); err != nil || len(warned) != 1 {
		t.Errorf("a record that does not read: %v, warnings %v", err, warned)
	}
}
