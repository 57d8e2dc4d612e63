package gossip

// Micro-benchmarks; the cluster-scale figures (propagation, bursts, joins,
// idle cost, beside memberlist alone) come from scripts/bench/gossip-scale.sh
// (gossip/internal/scalebench). Suggested invocation:
//
//	go test -run='^$' -bench=. -benchtime=5x ./gossip

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemoryPerEndpoint measures heap bytes per replicated endpoint
// for 100,000 endpoints from 1,000 hosts (Docker-style 64-character IDs),
// and the size of the full state on the wire.
func BenchmarkMemoryPerEndpoint(b *testing.B) {
	const hosts, perHost = 1000, 100
	var heap, wire float64
	for range b.N {
		var entries []entry
		for h := range hosts {
			for i := range perHost {
				ep := testEndpoint(fmt.Sprintf("%064x", h*perHost+i), fmt.Sprintf("%064x", i%20), byte(i))
				ep.IP = netip.AddrFrom4([4]byte{10, byte(h >> 8), byte(h), byte(i)})
				ep.VTEP = netip.AddrFrom4([4]byte{198, 51, byte(h >> 8), byte(h)})
				entries = append(entries, entry{table: tableEndpoints, owner: fmt.Sprintf("host-%04d", h), key: ep.ID,
					version: uint64(time.Now().UnixMicro()), value: encodeEndpoint(&ep)})
			}
		}
		// Decode from the wire, as a host does, so the store holds its own
		// copies and not the benchmark's.
		var scopes []string
		for i := range 20 {
			scopes = append(scopes, fmt.Sprintf("%064x", i))
		}
		msg := encodeMessage(nil, &message{typ: msgEntries, sender: "x", scopes: scopes, entries: entries})
		entries = nil
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := newStore("observer", time.Now, time.Hour)
		for _, nw := range scopes {
			s.put(tableAttachments, nw, nil)
		}
		m, err := decodeMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		for i := range m.entries {
			s.merge(&m.entries[i], false)
		}
		m = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / (hosts * perHost)
		wire = float64(len(msg)) / (hosts * perHost)
		runtime.KeepAlive(s)
		runtime.KeepAlive(msg) // live across both readings, so it cancels out
	}
	b.ReportMetric(heap, "heap-B/endpoint")
	b.ReportMetric(wire, "wire-B/endpoint")
}

// BenchmarkPutFanOut measures what a write costs its caller with 0 and
// 499 hosts attached to the network: Put only stores and marks the key,
// whatever the fan-out; the sender does the rest on its own goroutine
// (sealing each packet once, then one write per receiver; here the writes
// go nowhere).
func BenchmarkPutFanOut(b *testing.B) {
	for _, peers := range []int{0, 499} {
		b.Run(fmt.Sprintf("peers=%d", peers), func(b *testing.B) {
			n := newTestNode(b, "me")
			n.fake().discard = true
			for i := range peers {
				name := fmt.Sprintf("p%03d", i)
				n.store.setMember(name, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(20000+i)), netip.Addr{}, wireVersion, true, false)
				n.store.merge(&entry{table: tableAttachments, owner: name, key: "net-a", version: 1}, false)
			}
			if err := n.Attachments().Attach("net-a"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				if err := n.Endpoints().Put(testEndpoint(fmt.Sprintf("ep-%d", i%1000), "net-a", byte(i))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// remoteEndpoints is an observer holding n endpoints of another host on
// network "net", with random-looking IDs (as Docker's are), and the MAC of
// the last.
func remoteEndpoints(b *testing.B, n int) (Endpoints, net.HardwareAddr) {
	clk := newFakeClock()
	w := newStore("h1", clk.now, time.Hour)
	obs := observer(clk, "net", "h1")
	var mac net.HardwareAddr
	for i := range n {
		id := sha256.Sum256([]byte{byte(i >> 16), byte(i >> 8), byte(i)})
		ep := Endpoint{ID: hex.EncodeToString(id[:]), Network: "net", MAC: []byte{0x02, 0x42, 10, byte(i >> 16), byte(i >> 8), byte(i)},
			IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), VTEP: netip.MustParseAddr("203.0.113.1")}
		mac = ep.MAC
		scope, _, ok := w.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
		if !ok {
			b.Fatal("no change")
		}
		r := w.scopes[scope].entries[ekey{w.self, tableEndpoints, ep.ID}]
		e := entry{table: tableEndpoints, owner: w.self.name, key: ep.ID, version: r.version, value: r.value}
		obs.merge(&e, false)
	}
	return Endpoints{n: &Node{store: obs}}, mac
}

// BenchmarkListRemote: what the host core pays to read a network's remote
// endpoints (Endpoints.ListRemote: copy, decode), at 100 and 10,000
// of them, on every pass that touches the network.
func BenchmarkListRemote(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t, _ := remoteEndpoints(b, n)
			for b.Loop() {
				if got := t.ListRemote("net", true); len(got) != n {
					b.Fatalf("listed %d of %d", len(got), n)
				}
			}
		})
	}
}

// BenchmarkRemoteClaims: what a remote change's pass pays to read the
// entries claiming one MAC (and its IP), at 100 and 10,000 endpoints in
// the network, next to BenchmarkListRemote's whole listing.
func BenchmarkRemoteClaims(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			t, mac := remoteEndpoints(b, n)
			for b.Loop() {
				if got := t.RemoteClaims("net", []net.HardwareAddr{mac}); len(got) != 1 {
					b.Fatalf("%d claims, want 1", len(got))
				}
			}
		})
	}
}

// BenchmarkFirstSyncOneNetwork measures what a new host pays to take in
// one network of 100,000 endpoints from 50 hosts (2,000 each, all large
// owners): the store's merge per endpoint, heap per endpoint once held,
// the first repair read of one owner's bucket digests (which builds that
// owner's index: the longest the store's lock is held for it), and the
// reads of every other owner after it, in total.
func BenchmarkFirstSyncOneNetwork(b *testing.B) {
	const hosts, perHost, nw = 50, 2000, "big"
	var entries []entry
	for h := range hosts {
		for i := range perHost {
			n := h*perHost + i
			ep := testEndpoint(fmt.Sprintf("%064x", n), nw, byte(n))
			ep.IP = netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			ep.VTEP = netip.AddrFrom4([4]byte{198, 51, 100, byte(h)})
			entries = append(entries, entry{table: tableEndpoints, owner: fmt.Sprintf("host-%02d", h), key: ep.ID,
				version: uint64(time.Now().UnixMicro()), value: encodeEndpoint(&ep)})
		}
	}
	msg := encodeMessage(nil, &message{typ: msgEntries, sender: "x", scopes: []string{nw}, entries: entries})
	entries = nil
	var merge, first, rest time.Duration
	var heap, indexed float64
	for range b.N {
		// The heap before decoding: what the store keeps of the decoded
		// message (keys, values) counts as its own.
		runtime.GC()
		var before, held, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := decodeMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		s := newStore("newcomer", time.Now, time.Hour)
		s.put(tableAttachments, nw, nil)
		t0 := time.Now()
		for i := range m.entries {
			s.merge(&m.entries[i], false)
		}
		merge += time.Since(t0)
		m = nil
		runtime.GC()
		runtime.ReadMemStats(&held)
		t0 = time.Now()
		if d := s.bucketTallies(nw, "host-00"); d == ([numBuckets]tally{}) {
			b.Fatal("no bucket digests for host-00")
		}
		first += time.Since(t0)
		t0 = time.Now()
		for h := 1; h < hosts; h++ {
			s.bucketTallies(nw, fmt.Sprintf("host-%02d", h))
		}
		rest += time.Since(t0)
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(int64(held.HeapAlloc)-int64(before.HeapAlloc)) / (hosts * perHost)
		indexed = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (hosts * perHost)
		runtime.KeepAlive(s)
	}
	b.ReportMetric(float64(merge.Nanoseconds())/float64(b.N*hosts*perHost), "merge-ns/endpoint")
	b.ReportMetric(heap, "heap-B/endpoint")
	b.ReportMetric(indexed, "indexed-heap-B/endpoint")
	b.ReportMetric(float64(first.Microseconds())/float64(b.N)/1000, "first-read-ms")
	b.ReportMetric(float64(rest.Microseconds())/float64(b.N)/1000, "other-49-reads-ms")
}
