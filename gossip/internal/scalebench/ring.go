package main

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/gossip/gossiptest"
)

const benchNet = "net-a"

// ring is N Tenet hosts in this process.
type ring struct {
	o      *options
	key    []byte
	net    *gossiptest.Net
	downs  *downs
	warns  atomic.Int64
	nodes  []*gossip.Node
	names  []string
	tr     *tracker
	mu     sync.Mutex // guards nodes' growth, for traceForming
	cancel []context.CancelFunc
	tune   func(*gossip.Config)
	// lateSubscribe leaves the event subscriptions to the caller, so the
	// bare ring's idle cost is the package's alone, like memberlist's.
	lateSubscribe bool
}

func newRing(o *options) (*ring, error) {
	key, err := gossip.GenerateKey()
	if err != nil {
		return nil, err
	}
	return &ring{o: o, key: key, net: gossiptest.NewNet(), downs: newDowns(), tr: newTracker()}, nil
}

func (r *ring) config(name string, i int) gossip.Config {
	cfg := gossip.DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	cfg.BindPort = 0
	cfg.VTEP = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}) // data only: never configured anywhere
	cfg.Keys = [][]byte{r.key}
	cfg.Logger = slog.New(logHandler{d: r.downs, warns: &r.warns})
	cfg.WrapTransport = r.net.Wrap
	if len(r.nodes) > 0 {
		cfg.Seeds = []string{r.nodes[0].Addr()}
	}
	if r.o.probeInterval > 0 {
		cfg.ProbeInterval = r.o.probeInterval
	}
	if r.o.probeTimeout > 0 {
		cfg.ProbeTimeout = r.o.probeTimeout
	}
	if r.o.suspicionMult > 0 {
		cfg.SuspicionMult = r.o.suspicionMult
	}
	if r.tune != nil {
		r.tune(&cfg)
	}
	return cfg
}

// start creates, subscribes and runs one host.
func (r *ring) start(name string, before func(*gossip.Node) error) (*gossip.Node, int, error) {
	i := len(r.nodes)
	n, err := gossip.New(r.config(name, i))
	if err != nil {
		return nil, 0, err
	}
	if before != nil {
		if err := before(n); err != nil {
			return nil, 0, err
		}
	}
	if !r.lateSubscribe {
		r.subscribe(n, i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = n.Run(ctx) }()
	r.mu.Lock()
	r.nodes = append(r.nodes, n)
	r.mu.Unlock()
	r.names = append(r.names, name)
	r.cancel = append(r.cancel, cancel)
	return n, i, nil
}

// subscribe follows a host's events (a subscription replays what the host
// holds first, so subscribing late misses nothing).
func (r *ring) subscribe(n *gossip.Node, i int) {
	ch, _ := n.Subscribe(16)
	go func() {
		for ev := range ch {
			r.tr.event(i, ev)
		}
	}()
}

// form starts n hosts spread evenly over the window, each seeded with the
// first, and waits until every host sees all n alive.
func (r *ring) form(n int, window time.Duration, scenario string) error {
	gap := window / time.Duration(n)
	t0 := time.Now()
	downs0 := r.downs.false_.Load()
	if r.o.formTrace {
		stop := r.traceForming(t0, downs0)
		defer stop()
	}
	for i := range n {
		if _, _, err := r.start(fmt.Sprintf("h%03d", i), nil); err != nil {
			return err
		}
		if d := time.Until(t0.Add(time.Duration(i+1) * gap)); d > 0 {
			time.Sleep(d) // the start schedule, not a wait for an outcome
		}
	}
	started := time.Since(t0)
	took, err := eventually(3*time.Minute, 200*time.Millisecond, func() error {
		for i, node := range r.nodes {
			if m := len(node.Members()); m != n {
				return fmt.Errorf("%s sees %d of %d hosts", r.names[i], m, n)
			}
		}
		return nil
	})
	log.Printf("ring of %d: all started in %s, formed %s after the last start (err %v), false downs %d",
		n, started.Round(time.Millisecond), took.Round(time.Millisecond), err, r.downs.false_.Load()-downs0)
	result(scenario, n, "tenet", "formed", err == nil)
	result(scenario, n, "tenet", "form_after_last_start", took)
	result(scenario, n, "tenet", "false_downs_forming", r.downs.false_.Load()-downs0)
	var waits, admitted, deferred uint64
	for _, node := range r.nodes {
		st := node.Stats()
		waits, admitted, deferred = waits+st.JoinWaits, admitted+st.JoinsAdmitted, deferred+st.JoinsDeferred
	}
	log.Printf("ring of %d: joins admitted %d, told to wait %d times (%d waits)", n, admitted, deferred, waits)
	result(scenario, n, "tenet", "join_waits", waits)
	if err != nil {
		return fmt.Errorf("ring of %d never formed: %w", n, err)
	}
	return nil
}

func runRing(o *options) error {
	base := measureMemory()
	r, err := newRing(o)
	if err != nil {
		return err
	}
	r.lateSubscribe = true
	n := o.n
	if err := r.form(n, o.spread, "ring"); err != nil {
		return err
	}
	// Idle cost of the bare ring, as memberlist alone is measured: no
	// subscribers, no table state but the package's own.
	time.Sleep(5 * time.Second) // settle: the window's start, not a wait for an outcome
	d0 := r.downs.false_.Load()
	idle("ring", n, "tenet", o.idle, base, nil)
	result("ring", n, "tenet", "false_downs_idle", r.downs.false_.Load()-d0)
	for i, node := range r.nodes {
		r.subscribe(node, i)
	}

	// 80% of hosts have the network, each with one endpoint on it.
	attached := r.nodes[:n*8/10]
	stop, err := cpuProfile(o.setupProfile)
	if err != nil {
		return err
	}
	var stalled func() error
	var heals0, pulls0 uint64
	if o.stall > 0 && o.stallAt == "setup" {
		heals0, pulls0 = r.repairCounts()
		stalled = startStall(o, "stall-setup", "tenet", r.downs)
	}
	c0, t0, f0 := cpuTime(), time.Now(), r.downs.false_.Load()
	err = r.setup(attached)
	stop()
	result("ring", n, "tenet", "setup_cpu_pct", 100*float64(cpuTime()-c0)/float64(time.Since(t0)))
	result("ring", n, "tenet", "false_downs_setup", r.downs.false_.Load()-f0)
	if stalled != nil {
		if err := stalled(); err != nil {
			return err
		}
		r.reportRepair("stall-setup", heals0, pulls0)
	}
	if err != nil {
		return err
	}

	// Quiet soak with that state: false downs and idle cost.
	d0 = r.downs.false_.Load()
	stop, err = cpuProfile(o.soakProfile)
	if err != nil {
		return err
	}
	idleAs("ring", n, "tenet", "state_", o.soak, base)
	stop()
	result("ring", n, "tenet", "false_downs_soak", r.downs.false_.Load()-d0)
	log.Printf("soak %s: false downs %d", o.soak, r.downs.false_.Load()-d0)
	if o.stall > 0 {
		if o.stallAt == "soak" {
			heals0, pulls0 := r.repairCounts()
			if err := startStall(o, "stall-quiet", "tenet", r.downs)(); err != nil {
				return err
			}
			r.reportRepair("stall-quiet", heals0, pulls0)
		}
		return nil
	}

	r.propagation(attached)
	r.burstTest(attached)
	r.crash(attached)
	return nil
}

// setup attaches the hosts and has each put one endpoint, then waits until
// every one of them has all of them.
func (r *ring) setup(attached []*gossip.Node) error {
	need := map[int]bool{}
	for i := range attached {
		need[i] = true
	}
	_, pulls0 := r.repairCounts()
	// All at once: every host attaches, then every host puts. Paced
	// (-setup-rate): each host attaches and puts in its turn.
	paced := r.o.setupRate > 0
	if !paced {
		for _, node := range attached {
			if err := node.Attachments().Attach(benchNet); err != nil {
				return err
			}
		}
	}
	var waits []*wait
	var putAt []time.Time // per wait
	t0 := time.Now()
	for i, node := range attached {
		if paced {
			if d := time.Until(t0.Add(time.Duration(float64(i) / r.o.setupRate * float64(time.Second)))); d > 0 {
				time.Sleep(d) // the schedule, not a wait for an outcome
			}
			if err := node.Attachments().Attach(benchNet); err != nil {
				return err
			}
		}
		for j := range r.o.setupEach {
			key := fmt.Sprintf("s-%d", i)
			if j > 0 {
				key = fmt.Sprintf("s-%d-%d", i, j)
			}
			w := r.tr.expect(gossip.EventPut, key, need, i)
			waits = append(waits, w)
			putAt = append(putAt, time.Now())
			if err := node.Endpoints().Put(endpoint(key, j*len(attached)+i)); err != nil {
				return err
			}
		}
	}
	if paced {
		log.Printf("setup: %d hosts attached and put at %.0f a second in %s", len(attached), r.o.setupRate, time.Since(t0).Round(time.Millisecond))
	}
	start := t0 // each endpoint's time until everywhere counts from here
	for _, w := range waits {
		select {
		case <-w.done:
		case <-time.After(time.Until(start.Add(2 * time.Minute))):
			return fmt.Errorf("setup: endpoint %s reached %d hosts of %d after 2 min", w.key, len(need)-w.left(), len(need))
		}
	}
	_, pulls := r.repairCounts()
	var each []time.Duration // per endpoint: from its put until every attached host had it
	for i, w := range waits {
		each = append(each, w.lastAt().Sub(putAt[i]))
	}
	log.Printf("setup: %d hosts attached with %d endpoints each, everywhere after %s (per endpoint p50 %s, p90 %s); %d pulls",
		len(attached), r.o.setupEach, time.Since(start).Round(time.Millisecond), percentile(each, .5).Round(time.Millisecond),
		percentile(each, .9).Round(time.Millisecond), pulls-pulls0)
	result("ring", r.o.n, "tenet", "setup_everywhere_p50", percentile(each, .5))
	result("ring", r.o.n, "tenet", "setup_everywhere", time.Since(start))
	if paced { // an early endpoint waits for the last host to attach: this is the figure
		result("ring", r.o.n, "tenet", "setup_everywhere_after_last_put", time.Since(putAt[len(putAt)-1]))
	}
	result("ring", r.o.n, "tenet", "setup_pulls", pulls-pulls0)
	time.Sleep(5 * time.Second) // settle before the soak: the window's start, not a wait for an outcome
	return nil
}

// propagation times single changes, one at a time, from rotating owners,
// until every other attached host has them.
func (r *ring) propagation(attached []*gossip.Node) {
	n := len(r.nodes)
	need := map[int]bool{}
	for i := range attached {
		need[i] = true
	}
	var lat []time.Duration
	delivered := 0
	for c := range r.o.changes {
		owner := c % len(attached)
		key := fmt.Sprintf("p-%d", c)
		others := maps(need, owner)
		w := r.tr.expect(gossip.EventPut, key, others, -1)
		start := time.Now()
		if err := attached[owner].Endpoints().Put(endpoint(key, c)); err != nil {
			log.Printf("propagation: %v", err)
			return
		}
		select {
		case <-w.done:
			delivered++
			lat = append(lat, w.lastAt().Sub(start))
		case <-time.After(2 * time.Second):
		}
	}
	log.Printf("propagation to %d attached hosts: p50 %s p99 %s max %s, %d/%d within 2 s", len(attached)-1,
		percentile(lat, .5), percentile(lat, .99), percentile(lat, 1), delivered, r.o.changes)
	result("ring", n, "tenet", "prop_p50", percentile(lat, .5))
	result("ring", n, "tenet", "prop_p99", percentile(lat, .99))
	result("ring", n, "tenet", "prop_max", percentile(lat, 1))
	result("ring", n, "tenet", "prop_delivered_pct", 100*float64(delivered)/float64(r.o.changes))
}

// burstTest has writers put burst endpoints at once and times until every
// attached host has all of them; it counts live hosts reported down during
// the burst and the 10 s after agreement.
func (r *ring) burstTest(attached []*gossip.Node) {
	n := len(r.nodes)
	writers := min(r.o.writers, len(attached))
	per := r.o.burst / writers
	total := per * writers
	r.tr.startBurst(len(attached), total)
	d0 := r.downs.false_.Load()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		node := attached[(w*len(attached))/writers]
		wg.Go(func() {
			for i := range per {
				if err := node.Endpoints().Put(endpoint(fmt.Sprintf("b-%d-%d", w, i), i)); err != nil {
					log.Printf("burst: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	written := time.Since(start)
	took, err := eventually(90*time.Second, 20*time.Millisecond, func() error {
		if done, total := r.tr.burstProgress(); done < total {
			return fmt.Errorf("%d of %d hosts have all %d endpoints", done, total, r.o.burst)
		}
		return nil
	})
	agree := r.tr.burstLast().Sub(start)
	if err != nil {
		agree = took
	}
	time.Sleep(10 * time.Second) // watch for late false downs: the window's length, not a wait for an outcome
	fd := r.downs.false_.Load() - d0
	log.Printf("burst of %d from %d writers: written in %s, every copy agrees after %s (err %v), false downs %d",
		total, writers, written.Round(time.Millisecond), agree.Round(time.Millisecond), err, fd)
	result("ring", n, "tenet", "burst_agree", agree)
	result("ring", n, "tenet", "burst_agreed", err == nil)
	result("ring", n, "tenet", "burst_false_downs", fd)
}

// crash cuts attached hosts off one at a time and times until every other
// attached host has hidden the victim's endpoint.
func (r *ring) crash(attached []*gossip.Node) {
	n := len(r.nodes)
	need := map[int]bool{}
	for i := range attached {
		need[i] = true
	}
	var hides []time.Duration
	var cut []string
	for k := range r.o.kills {
		vi := len(attached) - 1 - k*7
		victim := attached[vi]
		key := "v-" + r.names[vi]
		w := r.tr.expect(gossip.EventPut, key, maps(need, vi), -1)
		if err := victim.Endpoints().Put(endpoint(key, vi)); err != nil {
			log.Printf("crash: %v", err)
			return
		}
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			log.Printf("crash: victim's endpoint not everywhere after 30 s")
			return
		}
		delete(need, vi)
		hw := r.tr.expect(gossip.EventDelete, key, maps(need, -1), -1)
		r.downs.expect(r.names[vi])
		cut = append(cut, victim.Addr())
		r.net.Partition(nil, cut)
		start := time.Now()
		select {
		case <-hw.done:
			hides = append(hides, hw.lastAt().Sub(start))
		case <-time.After(60 * time.Second):
			log.Printf("crash: victim's endpoint still shown somewhere after 60 s (%d hosts left)", hw.left())
			hides = append(hides, 60*time.Second)
		}
	}
	log.Printf("crashed host's endpoint hidden on every attached host after %v", hides)
	result("ring", n, "tenet", "crash_hidden_max", percentile(hides, 1))
}

func maps(m map[int]bool, without int) map[int]bool {
	out := make(map[int]bool, len(m))
	for k := range m {
		if k != without {
			out[k] = true
		}
	}
	return out
}

func endpoint(id string, i int) gossip.Endpoint {
	return gossip.Endpoint{
		ID: id, Network: benchNet,
		MAC: net.HardwareAddr{0x02, 0x42, 10, byte(i >> 16), byte(i >> 8), byte(i)},
		IP:  netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
	}
}

// tracker follows every host's event stream.
type tracker struct {
	mu    sync.Mutex
	waits map[string]*wait // kind/key -> wait

	big   map[int]int       // host -> endpoint puts with 64-character IDs (join)
	bigAt map[int]time.Time // host -> when it saw the last of them

	burstNeed  int
	burstHosts int
	burstSeen  map[int]map[string]bool
	burstDone  int
	burstAt    time.Time
}

type wait struct {
	key  string
	mu   sync.Mutex
	need map[int]bool
	last time.Time
	done chan struct{}
}

func (w *wait) left() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.need)
}

func (w *wait) lastAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func newTracker() *tracker {
	return &tracker{waits: make(map[string]*wait), big: make(map[int]int), bigAt: make(map[int]time.Time)}
}

func (t *tracker) bigLast(host int) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bigAt[host]
}

func (t *tracker) bigCount(host int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.big[host]
}

// expect registers a wait for kind on key at every host in need; a host
// that has already seen it (seen >= 0) is not waited for.
func (t *tracker) expect(kind gossip.EventKind, key string, need map[int]bool, seen int) *wait {
	w := &wait{key: key, need: maps(need, seen), done: make(chan struct{})}
	if len(w.need) == 0 {
		close(w.done)
	}
	t.mu.Lock()
	t.waits[fmt.Sprint(kind, "/", key)] = w
	t.mu.Unlock()
	return w
}

func (t *tracker) event(host int, ev gossip.Event) {
	if ev.Table != gossip.TableEndpoints {
		return
	}
	at := time.Now()
	t.mu.Lock()
	if ev.Kind == gossip.EventPut && len(ev.Key) == 64 {
		t.big[host]++
		t.bigAt[host] = at
	}
	w := t.waits[fmt.Sprint(ev.Kind, "/", ev.Key)]
	if ev.Kind == gossip.EventPut && strings.HasPrefix(ev.Key, "b-") && t.burstSeen != nil {
		if s := t.burstSeen[host]; s != nil && !s[ev.Key] {
			s[ev.Key] = true
			if len(s) == t.burstNeed {
				t.burstDone++
				t.burstAt = at
			}
		}
	}
	t.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.need[host] {
		delete(w.need, host)
		w.last = at
		if len(w.need) == 0 {
			close(w.done)
		}
	}
}

func (t *tracker) startBurst(hosts, need int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.burstNeed, t.burstHosts = need, hosts
	t.burstSeen = make(map[int]map[string]bool)
	for i := range hosts {
		t.burstSeen[i] = make(map[string]bool)
	}
}

func (t *tracker) burstProgress() (done, hosts int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.burstDone, t.burstHosts
}

func (t *tracker) burstLast() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.burstAt
}

// repairCounts sums, over the ring's hosts, the heals answered one-sidedly
// and the pulls asked for.
func (r *ring) repairCounts() (heals, pulls uint64) {
	for _, nd := range r.nodes {
		st := nd.Stats()
		heals += st.HealsOneSided
		pulls += st.Pulls
	}
	return heals, pulls
}

// reportRepair prints the repair work since heals0 and pulls0 were
// counted: how a storm after a stall is fed.
func (r *ring) reportRepair(scenario string, heals0, pulls0 uint64) {
	heals, pulls := r.repairCounts()
	log.Printf("%s: heals answered one-sidedly %d, pulls %d", scenario, heals-heals0, pulls-pulls0)
	result(scenario, r.o.n, "tenet", "stall_heals_one_sided", heals-heals0)
	result(scenario, r.o.n, "tenet", "stall_pulls", pulls-pulls0)
}

// traceForming logs once a second, until stopped, how the ring is forming:
// hosts started, hosts the first one sees, its joins admitted and told to
// wait, false downs, the process's CPU and the worst lateness of a 20 ms
// sleep in that second.
func (r *ring) traceForming(t0 time.Time, downs0 int64) (stop func()) {
	var mu sync.Mutex
	var worst time.Duration
	done := make(chan struct{})
	go func() { // lateness of a sleeping goroutine, as the package measures it
		for {
			select {
			case <-done:
				return
			default:
			}
			s := time.Now()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			worst = max(worst, time.Since(s)-20*time.Millisecond)
			mu.Unlock()
		}
	}()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		c0, at := cpuTime(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			r.mu.Lock()
			started := len(r.nodes)
			var st gossip.Stats
			seen := 0
			if started > 0 {
				st, seen = r.nodes[0].Stats(), len(r.nodes[0].Members())
			}
			r.mu.Unlock()
			mu.Lock()
			late := worst
			worst = 0
			mu.Unlock()
			c1, now := cpuTime(), time.Now()
			log.Printf("forming %5.1fs: started %d, h000 sees %d, admitted %d, deferred %d, false downs %d, cpu %.0f%%, late %s",
				now.Sub(t0).Seconds(), started, seen, st.JoinsAdmitted, st.JoinsDeferred, r.downs.false_.Load()-downs0,
				100*float64(c1-c0)/float64(now.Sub(at)), late.Round(time.Millisecond))
			c0, at = c1, now
		}
	}()
	return func() { close(done) }
}
