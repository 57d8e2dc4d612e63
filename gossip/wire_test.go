package gossip

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleMessage() *message {
	ep := testEndpoint("ep1", "net-a", 7)
	ep.Names = []string{"web", "web.acme", "a1b2"}
	nw := Network{ID: "net-a", Name: "blue", Tenant: "acme", VNI: 4097, Subnet: netip.MustParsePrefix("10.1.0.0/16")}
	return &message{typ: msgEntries, flags: flagDone, sender: "h1", scopes: []string{"", "net-a"},
		wants: []want{{"net-a", "h3"}, {"", "h2"}},
		entries: []entry{
			{table: tableEndpoints, owner: "h1", key: "ep1", version: 1<<50 + 3, value: encodeEndpoint(&ep)},
			{table: tableNetworks, owner: "h2", key: "net-a", version: 9, value: encodeNetwork(&nw)},
			{table: tableKV, owner: "h2", key: "ipam/x", version: 10, value: []byte("v")},
			{table: tableAttachments, owner: "h3", key: "net-a", version: 11, value: []byte{}},
			{table: tableEndpoints, owner: "h3", key: "ep9", version: 12, deleted: true, value: appendStr(nil, "net-a")},
			{table: tableKV, owner: "h3", key: "ipam/y", version: 13, deleted: true, value: []byte{}},
		}}
}

// sampleUpdate is an update carrying its sender's digest.
func sampleUpdate() *message {
	m := sampleMessage()
	return &message{typ: msgUpdate, sender: "h1", scopes: []string{"net-a"}, entries: m.entries[:1],
		digests: []digest{{scope: "net-a", owner: "h1", count: 1, sum: 0xfeedface12345678, asOf: 1 << 50}}}
}

// sampleDigests are the messages of a repair: roots, then per-owner digests.
func sampleDigests() []*message {
	return []*message{
		{typ: msgSyncReq, sender: "h9", scopes: []string{"", "net-a", "0123abcd"}},
		{typ: msgDigest, sender: "h9", scopes: []string{"", "net-a"}, digests: []digest{
			{scope: "", count: 0, sum: 0}, {scope: "net-a", count: 40, sum: 1<<64 - 1}}},
		{typ: msgOwners, sender: "h9", scopes: []string{"net-a", "net-b"}, digests: []digest{
			{scope: "net-a", owner: "h1", count: 3, sum: 7}, {scope: "net-a", owner: "h2", count: 1, sum: 9}}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	joins := []*message{{typ: msgJoinAsk, sender: "h1"}, {typ: msgJoinAnswer, sender: "h2"}, {typ: msgJoinAnswer, flags: flagAdmitted, sender: "h2"}}
	for _, m := range append(append([]*message{sampleMessage(), sampleUpdate()}, sampleDigests()...), joins...) {
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
	if diff := cmp.Diff(m, got, cmp.AllowUnexported(message{}, entry{}, digest{}, want{})); diff != "" {
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
	joins := []*message{{typ: msgJoinAsk, sender: "h1"}, {typ: msgJoinAnswer, sender: "h2"}, {typ: msgJoinAnswer, flags: flagAdmitted, sender: "h2"}}
	for _, m := range append(append([]*message{sampleMessage(), sampleUpdate()}, sampleDigests()...), joins...) {
		b := encodeMessage(nil, m)
		for i := range len(b) {
			if m, err := decodeMessage(b[:i]); err == nil {
				t.Fatalf("prefix of %d/%d bytes decoded: %+v", i, len(b), m)
			}
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
	ep.Names = []string{"db", "db.acme.internal", "Primary_DB", "deadbeef"}
	got, err := decodeEndpoint(ep.ID, encodeEndpoint(&ep))
	if err != nil || got.ID != ep.ID || got.IP != ep.IP || got.VTEP != ep.VTEP || got.MAC.String() != ep.MAC.String() || !cmp.Equal(got.Names, ep.Names) {
		t.Errorf("endpoint round trip = %+v, %v; want %+v", got, err, ep)
	}
	ep.Names = nil
	if b := encodeEndpoint(&ep); len(b) != 1+2+1+6+1+16+1+4+1 {
		t.Errorf("endpoint without names encodes to %d bytes", len(b))
	}
}

// TestEndpointNames checks the DNS name rules on Put and on decode: a
// peer's endpoint with a bad name is refused like any malformed value.
func TestEndpointNames(t *testing.T) {
	long := strings.Repeat("a", 63)
	max := strings.Join([]string{long, long, long, strings.Repeat("b", 61)}, ".") // 253 bytes
	many := make([]string, MaxNames)
	for i := range many {
		many[i] = fmt.Sprintf("n%d", i)
	}
	for _, tc := range []struct {
		names []string
		err   string // "" if valid
	}{
		{nil, ""},
		{[]string{"web"}, ""},
		{[]string{"web", "web.acme", "a-b_c.D9"}, ""},
		{[]string{max}, ""},
		{many, ""},
		{[]string{""}, "must be 1-253 bytes"},
		{[]string{max + "b"}, "must be 1-253 bytes"},
		{[]string{long + "a"}, "must be 1-63 bytes"},
		{[]string{"a..b"}, "label \"\""},
		{[]string{".a"}, "label \"\""},
		{[]string{"a."}, "label \"\""},
		{[]string{"we b"}, "byte ' '"},
		{[]string{"caf\u00e9"}, "must be a letter, digit"},
		{[]string{"web", "Web"}, "given twice"},
		{append(many, "one-more"), "must be at most 32"},
	} {
		ep := testEndpoint("e1", "n1", 1)
		ep.Names = tc.names
		err := ep.validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("names %q refused: %v", tc.names, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("names %q: error %v, want one containing %q", tc.names, err, tc.err)
		case tc.err != "":
			// The same value from a peer is refused by the decoder.
			if _, err := decodeEndpoint(ep.ID, encodeEndpoint(&ep)); err == nil {
				t.Errorf("names %q: decoder accepted what Put refuses", tc.names)
			}
		}
	}
	n := newTestNode(t, "me")
	ep := testEndpoint("e1", "n1", 1)
	ep.Names = []string{"bad name"}
	if err := n.Endpoints().Put(ep); err == nil || !strings.Contains(err.Error(), `name "bad name"`) {
		t.Fatalf("Put with a bad name: %v, want an error naming it", err)
	}
	if _, ok := n.Endpoints().Get("e1"); ok {
		t.Fatal("refused endpoint was stored")
	}
}

func TestHostileMessagesDropped(t *testing.T) {
	good := testEndpoint("ep1", "net-a", 1)
	valid := entry{table: tableEndpoints, owner: "h2", key: "ep1", version: 5, value: encodeEndpoint(&good)}
	enc := func(typ byte, sender string, es ...entry) []byte {
		return encodeMessage(nil, &message{typ: typ, sender: sender, entries: es})
	}
	withVersion := enc(msgUpdate, "h2", valid)
	withVersion[0] = 1 // wire version 1, before issue 12
	withType := enc(msgUpdate, "h2", valid)
	withType[1] = 9
	withFlags := enc(msgUpdate, "h2", valid)
	withFlags[2] = 0x80
	admittedUpdate := enc(msgUpdate, "h2", valid)
	admittedUpdate[2] = flagAdmitted // a join answer's flag on another type
	unknownTable := valid
	unknownTable.table = 42
	oldBlocks := entry{table: 3, owner: "h2", key: "10.1.4.0/24", version: 5, value: []byte{4, 10, 1, 4, 0, 24, 0}}
	nw := Network{ID: "net-a", VNI: 5}
	wrongKey := entry{table: tableNetworks, owner: "h2", key: "net-b", version: 5, value: encodeNetwork(&nw)}
	badValue := valid
	badValue.value = []byte{1, 2, 3}
	badName := good
	badName.Names = []string{"no spaces"}
	badNameEntry := valid
	badNameEntry.value = encodeEndpoint(&badName)
	selfOwned := valid
	selfOwned.owner = "me"
	future := valid
	future.version = 1<<64 - 1
	badScopeIndex := encodeMessage(nil, &message{typ: msgDigest, sender: "h2", scopes: []string{"net-a"},
		digests: []digest{{scope: "net-a", count: 1}}})
	badScopeIndex[len(badScopeIndex)-1-1-1-8-1-1-1-1] = 5 // the digest's scope index

	for _, tc := range []struct {
		name   string
		msg    []byte
		reason string
	}{
		{"empty", nil, "truncated"},
		{"truncated", enc(msgUpdate, "h2", valid)[:20], "truncated"},
		{"wire version 1", withVersion, "wire-version"},
		{"unknown type", withType, "message-type"},
		{"unknown message flags", withFlags, "flags"},
		{"join answer's flag on an update", admittedUpdate, "flags"},
		{"join answer flagged done", encodeMessage(nil, &message{typ: msgJoinAnswer, flags: flagDone, sender: "h2"}), "flags"},
		{"join ask with entries", enc(msgJoinAsk, "h2", valid), "message-type"},
		{"join answer with scopes", encodeMessage(nil, &message{typ: msgJoinAnswer, sender: "h2", scopes: []string{"net-a"}}), "message-type"},
		{"unknown table", enc(msgUpdate, "h2", unknownTable), "unknown-table"},
		{"old peer's blocks table", enc(msgUpdate, "h2", oldBlocks), "unknown-table"},
		{"key not matching value", enc(msgUpdate, "h2", wrongKey), "key-mismatch"},
		{"malformed value", enc(msgUpdate, "h2", badValue), "bad-value"},
		{"endpoint with a bad name", enc(msgUpdate, "h2", badNameEntry), "bad-value"},
		{"update for another host", enc(msgUpdate, "h3", valid), "ownership"},
		{"update claiming to be this host", enc(msgUpdate, "me", selfOwned), "ownership"},
		{"version far in the future", enc(msgUpdate, "h2", future), "future-version"},
		{"entries of another network", encodeMessage(nil, &message{typ: msgEntries, sender: "h2", scopes: []string{"net-b", "net-c"}, entries: []entry{valid}}), "scope"},
		{"state carrying an endpoint", encodeMessage(nil, &message{typ: msgState, sender: "h2", scopes: []string{""}, entries: []entry{valid}}), "scope"},
		{"digest scope out of range", badScopeIndex, "scope-index"},
		{"huge count", []byte{wireVersion, msgState, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "truncated"},
		{"trailing bytes", append(enc(msgUpdate, "h2", valid), 0), "trailing-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, "me")
			n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
			if err := n.Attachments().Attach("net-a"); err != nil {
				t.Fatal(err)
			}
			n.handle(tc.msg, netip.AddrPort{})
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
	n.store.setMember("h2", addrOf("h2"), netip.Addr{}, wireVersion, true, false)
	if err := n.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	n.handle(enc(msgUpdate, "h2", valid), netip.AddrPort{})
	if ep, ok := n.Endpoints().Get("ep1"); !ok || ep.Host != "h2" || ep.IP != good.IP {
		t.Fatalf("valid update not applied: %+v %v, stats %+v", ep, ok, n.Stats())
	}
	// A state may carry other hosts' entries of the global tables.
	n.handle(encodeMessage(nil, &message{typ: msgState, sender: "h9", scopes: []string{""},
		entries: []entry{{table: tableAttachments, owner: "h2", key: "net-a", version: 6}}}), netip.AddrPort{})
	if hosts := n.Attachments().Hosts("net-a"); !cmp.Equal(hosts, []string{"h2", "me"}) {
		t.Fatalf("attachment relayed in a state: hosts = %v, want [h2 me]", hosts)
	}
}

// TestSealedFramesRefused: a frame sealed with another key, or under
// another cluster label, or cut short, is dropped and counted as it comes
// off the socket, before any decoding.
func TestSealedFramesRefused(t *testing.T) {
	n := newTestNode(t, "me")
	plain := encodeMessage(nil, &message{typ: msgDigest, sender: "h2"})
	other := newTestNode(t, "h2") // its own random key
	relabeled := newTestNode(t, "h3")
	relabeled.seal.label = []byte("other-ring")
	relabeled.seal.kr = n.seal.kr
	if err := relabeled.seal.reload(); err != nil {
		t.Fatal(err)
	}
	good := n.seal.seal(nil, plain)
	for _, frame := range [][]byte{other.seal.seal(nil, plain), relabeled.seal.seal(nil, plain), good[:20]} {
		n.onFrame(frame, addrOf("x"))
	}
	n.onFrame(good, addrOf("x"))
	eventually(t, 5*time.Second, "frames handled", func() error {
		if n.Stats().MessagesReceived != 1 {
			return fmt.Errorf("stats %+v", n.Stats())
		}
		return nil
	})
	if d := n.Stats().Dropped; d["decrypt"] != 2 || d["truncated"] != 1 {
		t.Fatalf("dropped = %v, want 2 decrypt and 1 truncated", d)
	}
}

// TestSyncAnswerChunks checks the largest answer the issue asks about:
// 100,000 endpoints of 64-character IDs (from 1,000 hosts) go out as
// stream messages that each fit a frame, and decode back whole.
func TestSyncAnswerChunks(t *testing.T) {
	const hosts, perHost = 1000, 100
	var entries []entry
	var scopes []string
	for i := range 20 {
		scopes = append(scopes, fmt.Sprintf("%064x", i))
	}
	for h := range hosts {
		for i := range perHost {
			ep := testEndpoint(fmt.Sprintf("%064x", h*perHost+i), scopes[i%20], byte(i))
			ep.VTEP = netip.AddrFrom4([4]byte{198, 51, byte(h >> 8), byte(h)})
			entries = append(entries, entry{table: tableEndpoints, owner: fmt.Sprintf("host-%04d", h),
				key: ep.ID, version: 1_800_000_000_000_000 + uint64(i), value: encodeEndpoint(&ep)})
		}
	}
	total, got := 0, 0
	chunks := chunk(&message{typ: msgEntries, flags: flagDone, sender: "host-0000", scopes: scopes, entries: entries})
	for i, c := range chunks {
		b := encodeMessage(nil, c)
		total += len(b)
		if len(b) > maxFrameLen {
			t.Fatalf("chunk %d is %d bytes, above the frame limit %d", i, len(b), maxFrameLen)
		}
		m, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if (m.flags&flagDone != 0) != (i == len(chunks)-1) {
			t.Fatalf("chunk %d of %d has flags %#x: only the last may be done", i, len(chunks), m.flags)
		}
		got += len(m.entries)
	}
	t.Logf("%d endpoints: %d chunks, %d bytes (%.0f per endpoint)", len(entries), len(chunks), total, float64(total)/float64(len(entries)))
	if got != len(entries) {
		t.Fatalf("decoded %d entries, want %d", got, len(entries))
	}
}

// TestSyncAnswerToUnknownHost: a joiner's first sync request can arrive
// before its membership; the answer goes back to the packet's source.
func TestSyncAnswerToUnknownHost(t *testing.T) {
	n := newTestNode(t, "me")
	if err := n.Attachments().Attach("net-a"); err != nil {
		t.Fatal(err)
	}
	if err := n.Endpoints().Put(testEndpoint("ep1", "net-a", 1)); err != nil {
		t.Fatal(err)
	}
	from := addrOf("joiner")
	n.handle(encodeMessage(nil, &message{typ: msgSyncReq, sender: "joiner", scopes: []string{"net-a", "net-z"}}), from)
	sent := n.fake().await(t, func(s sentMsg) bool { return s.m.typ == msgEntries })
	if sent.to != from.String() || sent.m.flags&flagDone == 0 || !cmp.Equal(sent.m.scopes, []string{"net-a"}) || len(sent.m.entries) != 1 {
		t.Fatalf("answer %+v to %s, want net-a's one endpoint, done, to %s", sent.m, sent.to, from)
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
	// Moving it to another network leaves the first.
	if err := n.Endpoints().Put(testEndpoint("ep1", "net-y", 1)); err != nil {
		t.Fatal(err)
	}
	if got := n.Endpoints().ListNetwork("net-z", true); len(got) != 0 {
		t.Fatalf("net-z still lists %+v", got)
	}
	if got := n.Endpoints().List(""); len(got) != 1 || got[0].Network != "net-y" {
		t.Fatalf("endpoints = %+v, want ep1 on net-y only", got)
	}
}
