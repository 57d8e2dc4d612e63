package resolver

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/overlay"
)

// dockerAnswer is the embedded DNS's answer for name with addrs.
func dockerAnswer(name string, qtype uint16, addrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(question(dns.Fqdn(name), qtype))
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip.To4() != nil {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 600}, A: ip})
		} else {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 600}, AAAA: ip})
		}
	}
	return m
}

func group(suffix string, recs ...Record) Group {
	return Group{Suffixes: []string{suffix}, Index: NewIndex(recs)}
}

func rec(ip string, names ...string) Record {
	return Record{Names: names, IP: netip.MustParseAddr(ip)}
}

// TestWiden: an answer of Docker's for a name its engine holds gets the
// other hosts' addresses of the network it answered from, and nothing
// else is touched.
func TestWiden(t *testing.T) {
	web := NetNames{
		Local:  group("acme-web", rec("10.1.0.10", "w0", "shared"), rec("10.1.0.11", "w1", "both")),
		Remote: group("acme-web", rec("10.1.0.74", "a1", "shared"), rec("10.1.0.138", "a2", "shared", "both"), rec("fd00::7", "shared")),
	}
	db := NetNames{
		Local:  group("acme-db", rec("10.2.0.5", "d0", "both")),
		Remote: group("acme-db", rec("10.2.0.9", "d9", "both")),
	}
	nets := []NetNames{web, db}
	for _, tc := range []struct {
		why  string
		in   *dns.Msg
		want []string // nil: unchanged
	}{
		{"a shared alias", dockerAnswer("shared", dns.TypeA, "10.1.0.10"), []string{"10.1.0.10", "10.1.0.138", "10.1.0.74"}},
		{"alias.network", dockerAnswer("Shared.acme-web", dns.TypeA, "10.1.0.10"), []string{"10.1.0.10", "10.1.0.138", "10.1.0.74"}},
		{"AAAA gets the IPv6 ones", dockerAnswer("shared", dns.TypeAAAA, "10.1.0.10"), []string{"10.1.0.10", "fd00::7"}},
		{"the network Docker answered from", dockerAnswer("both", dns.TypeA, "10.2.0.5"), []string{"10.2.0.5", "10.2.0.9"}},
		{"the other network", dockerAnswer("both", dns.TypeA, "10.1.0.11"), []string{"10.1.0.11", "10.1.0.138"}},
		{"nobody else has it", dockerAnswer("w0", dns.TypeA, "10.1.0.10"), nil},
		{"answered from a network Tenet does not know", dockerAnswer("shared", dns.TypeA, "172.17.0.2"), nil},
		{"an external name", dockerAnswer("example.test", dns.TypeA, "203.0.113.80"), nil},
		{"no answer", dockerAnswer("shared", dns.TypeA), nil},
	} {
		t.Run(tc.why, func(t *testing.T) {
			before := tc.in.Copy()
			changed := Widen(tc.in, nets, dns.MinMsgSize)
			if tc.want == nil {
				if changed || tc.in.String() != before.String() {
					t.Errorf("changed: %v", tc.in)
				}
				return
			}
			if got := answers(tc.in); !changed || !slices.Equal(got, tc.want) {
				t.Errorf("got %v (changed %v), want %v", got, changed, tc.want)
			}
			for _, rr := range tc.in.Answer {
				if rr.Header().Ttl != TTL {
					t.Errorf("TTL %d: %v", rr.Header().Ttl, rr)
				}
			}
		})
	}
	nx := dockerAnswer("shared", dns.TypeA, "10.1.0.10")
	nx.Rcode = dns.RcodeNameError
	cname := dockerAnswer("shared", dns.TypeA, "10.1.0.10")
	cname.Answer = append([]dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: "shared.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: "x."}}, cname.Answer...)
	query := dockerAnswer("shared", dns.TypeA, "10.1.0.10")
	query.Response = false
	for _, m := range []*dns.Msg{nx, cname, query} {
		if Widen(m, nets, dns.MinMsgSize) {
			t.Errorf("widened %v", m)
		}
	}

	// Many holders: as many as fit in the client's size, never truncated.
	var many []Record
	for i := range 200 {
		many = append(many, rec(fmt.Sprintf("10.9.%d.%d", i/250, 1+i%250), "pool"))
	}
	big := []NetNames{{Local: group("acme-big", rec("10.9.9.9", "pool")), Remote: group("acme-big", many...)}}
	m := dockerAnswer("pool", dns.TypeA, "10.9.9.9")
	if !Widen(m, big, dns.MinMsgSize) {
		t.Fatal("not widened")
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > dns.MinMsgSize || m.Truncated || len(m.Answer) < 20 || !slices.Contains(answers(m), "10.9.9.9") {
		t.Errorf("%d bytes, %d answers, truncated %v", len(b), len(m.Answer), m.Truncated)
	}
	m = dockerAnswer("pool", dns.TypeA, "10.9.9.9")
	m.SetEdns0(4096, false)
	if Widen(m, big, 4096); len(m.Answer) != 201 {
		t.Errorf("with EDNS 4096: %d answers, want 201", len(m.Answer))
	}
}

// fakeTaps hands out taps fed by the test.
type fakeTaps struct {
	mu      sync.Mutex
	taps    map[string]*fakeTap
	untaps  []string
	refused map[string]bool
}

func (f *fakeTaps) Tap(sandbox string) (Tap, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refused[sandbox] {
		return nil, fmt.Errorf("refused")
	}
	ns, _ := sandboxNS(sandbox)
	t := &fakeTap{in: make(chan overlay.TappedAnswer, 4), out: make(chan []byte, 4), closed: make(chan struct{}), ns: ns}
	f.taps[sandbox] = t
	return t, nil
}

func (f *fakeTaps) Untap(sandbox string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.untaps = append(f.untaps, sandbox)
	return nil
}

func (f *fakeTaps) get(sandbox string) *fakeTap {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.taps[sandbox]
}

type fakeTap struct {
	in     chan overlay.TappedAnswer
	out    chan []byte // what went on: the answer, widened or not
	closed chan struct{}
	once   sync.Once
	ns     overlay.NSID
}

func (f *fakeTap) Read() ([]overlay.TappedAnswer, error) {
	select {
	case a := <-f.in:
		return []overlay.TappedAnswer{a}, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}
func (f *fakeTap) Pass(a overlay.TappedAnswer) error { f.out <- a.DNS; return nil }
func (f *fakeTap) Replace(a overlay.TappedAnswer, msg []byte) error {
	f.out <- msg
	return nil
}
func (f *fakeTap) Close() error     { f.once.Do(func() { close(f.closed) }); return nil }
func (f *fakeTap) NS() overlay.NSID { return f.ns }
func (f *fakeTap) isClosed() bool {
	select {
	case <-f.closed:
		return true
	default:
		return false
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTapsFollowTheSandboxes: a container with an endpoint here gets a
// tap once its namespace exists; its answers for a shared alias come out
// widened with the other hosts' addresses, other answers unchanged; a
// flood past the rate goes through untouched; a namespace made anew gets a
// new tap; when no other host shares a name of its network any more, or
// its last endpoint goes, the tap is closed and its table removed; a
// container whose networks share no name gets none, and a table an
// earlier run left in it is removed.
func TestTapsFollowTheSandboxes(t *testing.T) {
	dir := t.TempDir()
	sb := filepath.Join(dir, "sandbox1")
	web := network("acme", "web", "10.1.0.0/24", true)
	e := endpoint("e1", web.Key(), "10.1.0.10", "w0", "shared")
	e.Netns = sb
	// A container whose network shares no name with other hosts: no tap.
	alone := network("acme", "alone", "10.3.0.0/24", true)
	sbAlone := filepath.Join(dir, "sandbox2")
	if err := os.WriteFile(sbAlone, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := endpoint("e2", alone.Key(), "10.3.0.10", "w0", "shared")
	e2.Netns = sbAlone
	local := &fakeLocal{nets: []core.Network{web, alone}, eps: []core.Endpoint{e, e2}}
	cluster := &fakeCluster{events: make(chan gossip.Event, 16), remotes: map[string][]core.Remote{web.Key(): {
		{ID: "r1", Network: web.Key(), IP: netip.MustParseAddr("10.1.0.74"), Names: []string{"a1", "shared"}, Host: "h1"},
	}}}
	taps := &fakeTaps{taps: map[string]*fakeTap{}}
	cfg := DefaultConfig()
	cfg.Interval, cfg.Rate, cfg.Burst = 5*time.Millisecond, 1, 3
	cfg.Host, cfg.Datapath, cfg.Local, cfg.Cluster, cfg.Taps = "h0", &fakeDatapath{ns: map[string]overlay.NSID{}, conns: map[string]*net.UDPConn{}, opened: map[string]int{}}, local, cluster, taps
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	runResolver(t, cfg)

	time.Sleep(50 * time.Millisecond) // ten rounds: no namespace, no tap
	if taps.get(sb) != nil {
		t.Fatal("tapped a sandbox whose namespace does not exist")
	}
	if err := os.WriteFile(sb, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tap", func() bool { return taps.get(sb) != nil })
	// An earlier run's table, in a sandbox that needs none now: removed
	// at the first round.
	taps.mu.Lock()
	swept := slices.Contains(taps.untaps, sbAlone)
	taps.untaps = nil
	taps.mu.Unlock()
	if !swept {
		t.Error("the table of a sandbox that needs no tap was not removed at start")
	}
	tap := taps.get(sb)
	pass := func(m *dns.Msg) *dns.Msg {
		t.Helper()
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		tap.in <- overlay.TappedAnswer{ID: 1, DNS: b}
		out := new(dns.Msg)
		if err := out.Unpack(<-tap.out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := answers(pass(dockerAnswer("shared", dns.TypeA, "10.1.0.10"))); !slices.Equal(got, []string{"10.1.0.10", "10.1.0.74"}) {
		t.Errorf("shared: %v", got)
	}
	if got := answers(pass(dockerAnswer("w0", dns.TypeA, "10.1.0.10"))); !slices.Equal(got, []string{"10.1.0.10"}) {
		t.Errorf("w0: %v", got)
	}
	// The bucket (burst 3) is spent: answers go through as they came.
	var flooded int
	for range 5 {
		if len(pass(dockerAnswer("shared", dns.TypeA, "10.1.0.10")).Answer) == 1 {
			flooded++
		}
	}
	if flooded < 4 {
		t.Errorf("past the rate, %d of 5 answers went through untouched, want at least 4", flooded)
	}

	// A namespace made anew at the same path: a new tap.
	if err := os.WriteFile(sb+".new", nil, 0o600); err != nil { // another inode
		t.Fatal(err)
	}
	if err := os.Rename(sb+".new", sb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new tap", func() bool { return tap.isClosed() && taps.get(sb) != tap && taps.get(sb) != nil })

	// The other host's holder of the shared name goes: no longer needed;
	// back (under another case): tapped again.
	tap = taps.get(sb)
	cluster.del(web.Key(), "r1")
	waitFor(t, "untap", func() bool {
		taps.mu.Lock()
		defer taps.mu.Unlock()
		return tap.isClosed() && slices.Contains(taps.untaps, sb)
	})
	cluster.put(core.Remote{ID: "r2", Network: web.Key(), IP: netip.MustParseAddr("10.1.0.75"), Names: []string{"SHARED"}, Host: "h2"})
	waitFor(t, "a tap again", func() bool { return taps.get(sb) != tap && taps.get(sb) != nil })
	if taps.get(sbAlone) != nil {
		t.Error("tapped a container whose networks share no name")
	}

	// The last endpoint goes: closed and untapped.
	taps.mu.Lock()
	taps.untaps = nil
	taps.mu.Unlock()
	tap = taps.get(sb)
	local.mu.Lock()
	local.eps = nil
	local.mu.Unlock()
	waitFor(t, "untap", func() bool {
		taps.mu.Lock()
		defer taps.mu.Unlock()
		return tap.isClosed() && slices.Contains(taps.untaps, sb)
	})
}
