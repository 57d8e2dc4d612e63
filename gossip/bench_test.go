package gossip

// Benchmarks that print the figures issue 4 asks for. They are not run by
// go test without -bench. Suggested invocation (the 50-node cluster is
// built once per run, so use a fixed count):
//
//	go test -run='^$' -bench=Cluster50 -benchtime=200x ./gossip
//	go test -run='^$' -bench='Join10k|MemoryPerEndpoint' -benchtime=5x ./gossip

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// arrivals records when each node's subscriber saw each benchmark key.
type arrivals struct {
	mu   sync.Mutex
	want map[string]*arrival
}

type arrival struct {
	sent time.Time
	need int
	got  map[string]bool
	last time.Time
	done chan struct{}
}

func (a *arrivals) expect(key string, need int) *arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &arrival{need: need, got: make(map[string]bool), done: make(chan struct{})}
	a.want[key] = r
	return r
}

func (a *arrivals) saw(node, key string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.want[key]
	if r == nil || r.got[node] || len(r.got) >= r.need {
		return
	}
	r.got[node] = true
	r.last = at
	if len(r.got) == r.need {
		close(r.done)
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkCluster50 builds a 50-node ring on loopback, 40 of whose hosts
// have network net-a, and measures (1) propagation of one endpoint change
// from its owner to every other host attached to net-a (b.N changes, each
// from a different owner in turn), and (2) the time until a killed host's
// endpoint is hidden on every other host that has the network (3 kills).
func BenchmarkCluster50(b *testing.B) {
	const size, attached = 50, 40
	c := newTestCluster(b)
	c.tune = func(cfg *Config) { // the default repair timers, not the tests' fast ones
		cfg.PushPullInterval = DefaultConfig().PushPullInterval
		cfg.SyncInterval = DefaultConfig().SyncInterval
	}
	nodes := c.startN(size)
	awaitMembers(b, nodes, size, 60*time.Second)

	arr := &arrivals{want: make(map[string]*arrival)}
	for i, n := range nodes {
		if i < attached {
			if err := n.Attachments().Attach("net-a"); err != nil {
				b.Fatal(err)
			}
		}
		ch, cancel := n.Subscribe(1024)
		b.Cleanup(cancel)
		name := n.cfg.NodeName
		go func() {
			for ev := range ch {
				if ev.Table == TableEndpoints && ev.Kind == EventPut && strings.HasPrefix(ev.Key, "bench-") {
					arr.saw(name, ev.Key, time.Now())
				}
			}
		}()
	}
	eventually(b, 30*time.Second, "attachments everywhere", func() error {
		for _, n := range nodes {
			if h := n.Attachments().Hosts("net-a"); len(h) != attached {
				return fmt.Errorf("%s sees %d attached hosts", n.cfg.NodeName, len(h))
			}
		}
		return nil
	})

	var sentBefore uint64
	for _, n := range nodes {
		sentBefore += n.Stats().MessagesSent
	}
	var lat []time.Duration
	delivered, changes := 0, 0
	for b.Loop() { // b.Loop runs this function once, so the ring is built once
		i := changes
		changes++
		owner := nodes[i%attached]
		key := fmt.Sprintf("bench-%d", i)
		r := arr.expect(key, attached-1)
		ep := testEndpoint(key, "net-a", byte(i))
		// The owner's own subscriber also sees the put; count only others.
		arr.mu.Lock()
		r.got[owner.cfg.NodeName] = true
		r.need = attached
		arr.mu.Unlock()
		r.sent = time.Now()
		if err := owner.Endpoints().Put(ep); err != nil {
			b.Fatal(err)
		}
		select {
		case <-r.done:
			delivered++
			arr.mu.Lock()
			lat = append(lat, r.last.Sub(r.sent))
			arr.mu.Unlock()
		case <-time.After(2 * time.Second):
		}
	}
	var sentAfter uint64
	for _, n := range nodes {
		sentAfter += n.Stats().MessagesSent
	}
	b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(100*float64(delivered)/float64(changes), "%delivered")
	b.ReportMetric(float64(sentAfter-sentBefore)/float64(changes), "sends/change")
	b.Logf("propagation to %d attached hosts of %d: %d changes, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d/%d delivered to all within 2 s",
		attached-1, size-1, changes, ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), ms(percentile(lat, 1)), delivered, changes)

	// Failure: kill attached hosts one at a time and time until every other
	// alive attached host hides the victim's endpoint.
	var hides []time.Duration
	alive := slices.Clone(nodes[:attached])
	for k := range 3 {
		victim := alive[len(alive)-1-k*7] // not h0, the seed
		key := "victim-" + victim.cfg.NodeName
		if err := victim.Endpoints().Put(testEndpoint(key, "net-a", byte(k))); err != nil {
			b.Fatal(err)
		}
		rest := slices.DeleteFunc(slices.Clone(alive), func(n *Node) bool { return n == victim })
		eventually(b, 30*time.Second, "victim endpoint everywhere", func() error {
			for _, n := range rest {
				if len(n.store.visible(tableEndpoints, key, true)) == 0 {
					return fmt.Errorf("%s lacks %s", n.cfg.NodeName, key)
				}
			}
			return nil
		})
		c.kill(victim)
		start := time.Now()
		eventually(b, 60*time.Second, "victim hidden everywhere", func() error {
			for _, n := range rest {
				if len(n.store.visible(tableEndpoints, key, true)) != 0 {
					return fmt.Errorf("%s still shows %s", n.cfg.NodeName, key)
				}
			}
			return nil
		})
		hides = append(hides, time.Since(start))
		alive = rest
	}
	b.ReportMetric(ms(percentile(hides, 1))/1000, "hide-max-s")
	b.Logf("killed host's endpoint hidden on all others after %v (detector bound for 50 hosts %v)",
		hides, nodes[0].cfg.DetectionBound(size))
}

// BenchmarkJoin10k measures the time for a new host to receive 10,000
// endpoints on 50 networks: from starting the node (bind, join, push/pull
// of the global tables, then one sync per network) until its subscriber
// has seen all 10,000.
func BenchmarkJoin10k(b *testing.B) {
	const count, networks = 10_000, 50
	c := newTestCluster(b)
	h0 := c.startN(1)[0]
	for i := range networks {
		if err := h0.Attachments().Attach(fmt.Sprintf("%064x", i)); err != nil {
			b.Fatal(err)
		}
	}
	for i := range count {
		ep := testEndpoint(fmt.Sprintf("%064x", i), fmt.Sprintf("%064x", i%networks), byte(i))
		ep.IP = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if err := h0.Endpoints().Put(ep); err != nil {
			b.Fatal(err)
		}
	}
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		cfg := testConfig(b, fmt.Sprintf("joiner-%d", i), c.key)
		cfg.Seeds = []string{h0.Addr()}
		start := time.Now()
		cfg.WrapTransport = c.net.Wrap
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		for j := range networks {
			if err := n.Attachments().Attach(fmt.Sprintf("%064x", j)); err != nil {
				b.Fatal(err)
			}
		}
		ch, cancel := n.Subscribe(count)
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		seen := 0
		for ev := range ch {
			if ev.Table == TableEndpoints && ev.Kind == EventPut {
				seen++
				if seen == count {
					break
				}
			}
		}
		total += time.Since(start)
		cancel()
		b.StopTimer()
		stop()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(ms(total)/float64(b.N), "ms/join")
}

// BenchmarkMemoryPerEndpoint measures heap bytes per replicated endpoint
// for 100,000 endpoints from 1,000 hosts (Docker-style 64-character IDs),
// and the size of the full state on the wire.
func BenchmarkMemoryPerEndpoint(b *testing.B) {
	const hosts, perHost = 1000, 100
	var heap, wire float64
	for range b.N {
		var entries []entry
		for h := range hosts {
			owner := newStore(fmt.Sprintf("host-%04d", h), time.Now)
			for i := range perHost {
				ep := testEndpoint(fmt.Sprintf("%064x", h*perHost+i), fmt.Sprintf("%064x", i%20), byte(i))
				ep.IP = netip.AddrFrom4([4]byte{10, byte(h >> 8), byte(h), byte(i)})
				ep.VTEP = netip.AddrFrom4([4]byte{198, 51, byte(h >> 8), byte(h)})
				e, _ := owner.put(tableEndpoints, ep.ID, encodeEndpoint(&ep))
				entries = append(entries, e)
			}
		}
		// Decode from the wire, as a host does, so the store holds its own
		// copies and not the benchmark's.
		msg := encodeMessage(nil, &message{typ: msgState, sender: "x", entries: entries})
		entries = nil
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := newStore("observer", time.Now)
		m, err := decodeMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		for i := range m.entries {
			s.merge(&m.entries[i])
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
