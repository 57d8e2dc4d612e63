package gossip

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
)

func sampleMessage() *message {
	ep := testEndpoint("ep1", "net-a", 7)
	nw := Network{ID: "net-a", Name: "blue", Tenant: "acme", VNI: 4097, Subnet: netip.MustParsePrefix("10.1.0.0/16")}
	bl := Block{Prefix: netip.MustParsePrefix("10.1.4.0/24"), Network: "net-a"}
	return &message{typ: msgState, sender: "h1", entries: []entry{
		{table: tableEndpoints, owner: "h1", key: "ep1", version: 1<<50 + 3, value: encodeEndpoint(&ep)},
		{table: tableNetworks, owner: "h2", key: "net-a", version: 9, value: encodeNetwork(&nw)},
		{table: tableBlocks, owner: "h2", key: "10.1.4.0/24", version: 10, value: encodeBlock(&bl)},
		{table: tableAttachments, owner: "h3", key: "net-a", version: 11, value: []byte{}},
		{table: tableEndpoints, owner: "h3", key: "ep9", version: 12, deleted: true, value: appendStr(nil, "net-a")},
		{table: tableBlocks, owner: "h3", key: "10.1.9.0/24", version: 13, deleted: true, value: []byte{}},
	}}
}

// sampleSync is a sync request for net-a carrying its endpoints.
func sampleSync() *message {
	m := sampleMessage()
	m.typ = msgSyncReq
	m.networks = []string{"net-a", "0123abcd"}
	m.entries = []entry{m.entries[0], m.entries[4]}
	return m
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []*message{sampleMessage(), sampleSync()} {
		testRoundTrip(t, m)
	}
}

func testRoundTrip(t *testing.T, m *message) {
	t.Helper()
	b := encodeMessage(nil, m)
	got, err := decodeMessage(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if diff := cmp.Diff(m, got, cmp.AllowUnexported(message{}, entry{})); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	for i := range got.entries {
		if err := checkValue(&got.entries[i]); err != nil {
			t.Errorf("entry %d (%s): %v", i, got.entries[i].key, err)
		}
	}
}

// TestDecodeEveryTruncation checks each prefix of a valid message is refused
// as an error, not a panic or a partial message.
func TestDecodeEveryTruncation(t *testing.T) {
	b := encodeMessage(nil, sampleMessage())
	for i := range len(b) {
		if m, err := decodeMessage(b[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes decoded: %+v", i, len(b), m)
		}
	}
}

func TestValueRoundTrips(t *testing.T) {
	nw := Network{ID: "n1", Name: "blue", Tenant: "acme", VNI: 1<<24 - 1, Subnet: netip.MustParsePrefix("fd00:1::/64")}
	if got, err := decodeNetwork(encodeNetwork(&nw)); err != nil || !cmp.Equal(got, nw, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Errorf("network round trip = %+v, %v; want %+v", got, err, nw)
	}
	ep := testEndpoint("e1", "n1", 9)
	ep.IP = netip.MustParseAddr("fd00:1::9")
	if got, err := decodeEndpoint(ep.ID, encodeEndpoint(&ep)); err != nil || got.ID != ep.ID || got.IP != ep.IP || got.VTEP != ep.VTEP || got.MAC.String() != ep.MAC.String() {
		t.Errorf("endpoint round trip = %+v, %v; want %+v", got, err, ep)
	}
	bl := Block{Prefix: netip.MustParsePrefix("10.9.0.0/26"), Network: "n1"}
	if got, err := decodeBlock(encodeBlock(&bl)); err != nil || got != bl {
		t.Errorf("block round trip = %+v, %v; want %+v", got, err, bl)
	}
}

// newTestNode is a Node without memberlist, for feeding handle directly.
func newTestNode(t *testing.T, name string) *Node {
	t.Helper()
	return &Node{
		cfg:      Config{NodeName: name, VTEP: netip.MustParseAddr("203.0.113.99")},
		log:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		store:    newStore(name, time.Now),
		vtepFix:  make(chan struct{}, 1),
		failed:   make(map[string]failed),
		members:  make(map[string]*memberlist.Node),
		needSync: make(map[string]bool),
		parked:   make(map[string][]syncJob),
		syncJobs: make(chan syncJob, 16),
	}
}

func TestHostileMessagesDropped(t *testing.T) {
	good := testEndpoint("ep1", "net-a", 1)
	valid := entry{table: tableEndpoints, owner: "h2", key: "ep1", version: 5, value: encodeEndpoint(&good)}
	enc := func(typ byte, sender string, es ...entry) []byte {
		return encodeMessage(nil, &message{typ: typ, sender: sender, entries: es})
	}
	withVersion := enc(msgUpdate, "h2", valid)
	withVersion[0] = 2
	withType := enc(msgUpdate, "h2", valid)
	withType[1] = 9
	unknownTable := valid
	unknownTable.table = 42
	bl := Block{Prefix: netip.MustParsePrefix("10.1.4.0/24")}
	wrongKey := entry{table: tableBlocks, owner: "h2", key: "10.9.9.0/24", version: 5, value: encodeBlock(&bl)}
	badValue := valid
	badValue.value = []byte{1, 2, 3}
	selfOwned := valid
	selfOwned.owner = "me"
	future := valid
	future.version = 1<<64 - 1

	for _, tc := range []struct {
		name   string
		msg    []byte
		reason string
	}{
		{"empty", nil, "truncated"},
		{"truncated", enc(msgUpdate, "h2", valid)[:20], "truncated"},
		{"wrong version", withVersion, "wire-version"},
		{"unknown type", withType, "message-type"},
		{"unknown table", enc(msgUpdate, "h2", unknownTable), "unknown-table"},
		{"key not matching value", enc(msgUpdate, "h2", wrongKey), "key-mismatch"},
		{"malformed value", enc(msgUpdate, "h2", badValue), "bad-value"},
		{"update for another host", enc(msgUpdate, "h3", valid), "ownership"},
		{"update claiming to be this host", enc(msgUpdate, "me", selfOwned), "ownership"},
		{"version far in the future", enc(msgUpdate, "h2", future), "future-version"},
		{"sync carrying another network", encodeMessage(nil, &message{typ: msgSyncReq, sender: "h2", networks: []string{"net-b", "net-c"}, entries: []entry{valid}}), "scope"},
		{"sync carrying a block", encodeMessage(nil, &message{typ: msgSyncResp, sender: "h2", networks: []string{"net-a"}, entries: []entry{wrongKey}}), "scope"},
		{"huge count", []byte{wireVersion, msgState, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "truncated"},
		{"trailing bytes", append(enc(msgUpdate, "h2", valid), 0), "trailing-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, "me")
			n.store.setAlive("h2", true)
			if err := n.Attachments().Attach("net-a"); err != nil {
				t.Fatal(err)
			}
			n.handle(tc.msg)
			st := n.Stats()
			if st.Dropped[tc.reason] != 1 {
				t.Errorf("dropped = %v, want one %q", st.Dropped, tc.reason)
			}
			if got := n.store.snapshot(); len(got) != 1 { // the attachment
				t.Errorf("state changed: %+v", got)
			}
		})
	}

	// The same entry, well-formed and from its owner, is accepted: the cases
	// above fail for the reason named, not by accident.
	n := newTestNode(t, "me")
	n.store.setAlive("h2", true)
	if err := n.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	n.handle(enc(msgUpdate, "h2", valid))
	if ep, ok := n.Endpoints().Get("ep1"); !ok || ep.Host != "h2" || ep.IP != good.IP {
		t.Fatalf("valid update not applied: %+v %v, stats %+v", ep, ok, n.Stats())
	}
	// A full state may carry other hosts' entries.
	n.handle(enc(msgState, "h9", entry{table: tableAttachments, owner: "h2", key: "net-a", version: 6}))
	if hosts := n.Attachments().Hosts("net-a"); !cmp.Equal(hosts, []string{"h2", "me"}) {
		t.Fatalf("attachment relayed in a full state: hosts = %v, want [h2 me]", hosts)
	}
}

// TestFullStateFitsAtScale checks the scale on the wire: the full
// state of 1,000 hosts with 100 endpoints each (Docker-style 64-character
// IDs) must fit memberlist's 20 MiB push/pull limit with room to spare, and
// decode back whole.
func TestFullStateFitsAtScale(t *testing.T) {
	const hosts, perHost = 1000, 100
	const limit = 20 << 20 // memberlist's maxPushStateBytes
	var entries []entry
	for h := range hosts {
		for i := range perHost {
			ep := testEndpoint(fmt.Sprintf("%064x", h*perHost+i), fmt.Sprintf("%064x", i%20), byte(i))
			ep.VTEP = netip.AddrFrom4([4]byte{198, 51, byte(h >> 8), byte(h)})
			entries = append(entries, entry{table: tableEndpoints, owner: fmt.Sprintf("host-%04d", h),
				key: ep.ID, version: 1_800_000_000_000_000 + uint64(i), value: encodeEndpoint(&ep)})
		}
	}
	b := encodeMessage(nil, &message{typ: msgState, sender: "host-0000", entries: entries})
	t.Logf("full state: %d endpoints, %d bytes (%.0f per endpoint)", len(entries), len(b), float64(len(b))/float64(len(entries)))
	if len(b) > limit/2 {
		t.Errorf("full state is %d bytes, want at most half of memberlist's %d", len(b), limit)
	}
	m, err := decodeMessage(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(m.entries) != len(entries) {
		t.Fatalf("decoded %d entries, want %d", len(m.entries), len(entries))
	}
}

// TestSyncAnswerWaitsForMembership: memberlist answers a join's push/pull
// before it merges the joiner, so a sync request can come from a host not
// yet in our members. The answer is parked, not lost, and goes out when
// the host's membership arrives.
func TestSyncAnswerWaitsForMembership(t *testing.T) {
	n := newTestNode(t, "me")
	if err := n.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	if len(n.syncJobs) != 0 {
		t.Fatalf("Attach without known peers queued %d syncs", len(n.syncJobs))
	}
	n.handle(encodeMessage(nil, &message{typ: msgSyncReq, sender: "joiner", networks: []string{"net-a"}}))
	job := <-n.syncJobs
	if job.to != "joiner" || !job.reply || !cmp.Equal(job.networks, []string{"net-a"}) {
		t.Fatalf("queued %+v, want an answer for net-a to joiner", job)
	}
	n.sendSync(job.to, job.networks, job.reply) // joiner unknown: parked
	select {
	case j := <-n.syncJobs:
		t.Fatalf("job for an unknown host was not parked: %+v", j)
	default:
	}
	(*events)(n).NotifyJoin(&memberlist.Node{Name: "joiner", Addr: []byte{127, 0, 0, 1}, Port: 1})
	select {
	case j := <-n.syncJobs:
		if j.to != "joiner" || !j.reply {
			t.Fatalf("unparked %+v", j)
		}
	default:
		t.Fatal("the parked answer was not queued when the joiner's membership arrived")
	}
}

func TestEndpointPutAttaches(t *testing.T) {
	n := newTestNode(t, "me")
	if err := n.Endpoints().Put(testEndpoint("ep1", "net-z", 1)); err != nil {
		t.Fatal(err)
	}
	if !n.store.isAttached("net-z") {
		t.Fatal("a host with an endpoint on net-z is not attached to it")
	}
	if ep, ok := n.Endpoints().Get("ep1"); !ok || ep.VTEP != n.cfg.VTEP || ep.Host != "me" {
		t.Fatalf("Get = %+v, %v; want ep1 on me with VTEP %s", ep, ok, n.cfg.VTEP)
	}
}
