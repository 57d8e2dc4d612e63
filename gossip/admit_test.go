package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

// admitted counts the asks let in, one every step from start until end.
func admitted(a *admission, start, end time.Time, step time.Duration) (n int) {
	for t := start; t.Before(end); t = t.Add(step) {
		if a.ask(fmt.Sprint(t.UnixNano()), t) {
			n++
		}
	}
	return n
}

func TestAdmissionAdaptsToLoad(t *testing.T) {
	var busy bool
	a := &admission{busy: func(time.Time) bool { return busy }}
	t0 := time.Unix(1_000_000, 0)
	// A burst at once, then no more in the same instant.
	for i := 0; i < admitBurst; i++ {
		if !a.ask(fmt.Sprint("h", i), t0) {
			t.Fatalf("ask %d of the burst refused", i+1)
		}
	}
	if a.ask("late", t0) {
		t.Fatalf("ask %d admitted: the burst is %d", admitBurst+1, admitBurst)
	}
	// A host let in is let in again for a while (its answer lost).
	if !a.ask("h0", t0.Add(admitRecent/2)) {
		t.Fatal("a host let in a moment ago was refused")
	}
	// At ease: the rate climbs to its maximum.
	climb := time.Duration((admitRateMax-admitRateStart)/admitRateStep+10) * admitWindow
	t1 := t0.Add(climb)
	admitted(a, t0.Add(time.Millisecond), t1, time.Millisecond)
	if got := admitted(a, t1, t1.Add(time.Second), time.Millisecond); got < admitRateMax*0.9 {
		t.Fatalf("at ease: %d admitted in a second, want about %v", got, admitRateMax)
	}
	// Busy: the rate halves every window down to its minimum.
	busy = true
	t2 := t1.Add(30 * time.Second)
	admitted(a, t1.Add(time.Second), t2, time.Millisecond)
	if got := admitted(a, t2, t2.Add(10*time.Second), time.Millisecond); got > 10*admitRateMin+admitBurst/4 {
		t.Fatalf("busy: %d admitted in 10 s, want about %v", got, 10*admitRateMin)
	}
	// At ease again: it recovers.
	busy = false
	t3 := t2.Add(10*time.Second + climb)
	admitted(a, t2.Add(10*time.Second), t3, time.Millisecond)
	if got := admitted(a, t3, t3.Add(time.Second), time.Millisecond); got < admitRateMax*0.9 {
		t.Fatalf("at ease again: %d admitted in a second", got)
	}
	// Without demand the rate does not grow: one ask every 2 s, at ease.
	a = &admission{busy: func(time.Time) bool { return false }}
	admitted(a, t0, t0.Add(5*time.Minute), 2*time.Second)
	if a.rate != admitRateStart {
		t.Errorf("rate %v after asks nobody waited on, want %v", a.rate, admitRateStart)
	}
	// After a quiet spell the bucket starts afresh.
	busy = true
	a = &admission{busy: func(time.Time) bool { return busy }}
	admitted(a, t0, t0.Add(30*time.Second), time.Millisecond)
	if a.rate != admitRateMin {
		t.Fatalf("rate %v after 30 s busy", a.rate)
	}
	t4 := t0.Add(30*time.Second + admitIdle + time.Second)
	if got := admitted(a, t4, t4.Add(time.Millisecond), time.Microsecond); got != admitBurst || a.rate != admitRateStart {
		t.Errorf("after a quiet spell: %d let in at once at rate %v, want %d at %v", got, a.rate, admitBurst, admitRateStart)
	}
}

// TestJoinsWaitForTheirSeed starts three hosts at once against a seed
// that lets one join in a second (it is busy, it says): they
// join one by one, told to wait meanwhile.
func TestJoinsWaitForTheirSeed(t *testing.T) {
	c := newTestCluster(t)
	seed := c.startN(1)[0]
	now := emptyBusyGate(seed)

	// The seed's member count, sampled: when each joiner arrived.
	var arrivals []time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := 1
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if m := len(seed.Members()); m > seen {
				for ; seen < m; seen++ {
					arrivals = append(arrivals, time.Now())
				}
			}
		}
	}()
	nodes := []*Node{seed}
	for i := 1; i <= 3; i++ {
		cfg := testConfig(t, "j"+string(rune('0'+i)), c.key)
		cfg.Seeds = []string{seed.Addr()}
		nodes = append(nodes, c.start(cfg))
	}
	awaitMembers(t, nodes, 4, 30*time.Second)
	close(stop)
	wg.Wait()

	if len(arrivals) != 3 {
		t.Fatalf("arrivals at the seed: %d, want 3", len(arrivals))
	}
	// From an empty bucket filling at one a second, the k-th join can
	// come no sooner than k seconds on (the slack: the clock reads).
	for k, at := range arrivals {
		if d := at.Sub(now); d < time.Duration(k+1)*time.Second-200*time.Millisecond {
			t.Errorf("joiner %d arrived %s after the bucket was emptied; it fills at one a second", k+1, d)
		}
	}
	st := seed.Stats()
	var waits uint64
	for _, n := range nodes[1:] {
		waits += n.Stats().JoinWaits
	}
	// An answer that came after the joiner stopped waiting for it is not
	// counted as a wait.
	if st.JoinsAdmitted != 3 || st.JoinsDeferred == 0 || waits == 0 || waits > st.JoinsDeferred {
		t.Errorf("seed admitted %d, deferred %d; joiners waited %d times", st.JoinsAdmitted, st.JoinsDeferred, waits)
	}
}

// TestJoinGoesAheadWhenTheSeedDoesNotAnswer: a seed of an older version
// drops the question; the joiner joins after its asks go unanswered.
func TestJoinGoesAheadWhenTheSeedDoesNotAnswer(t *testing.T) {
	c := newTestCluster(t)
	seed := c.startN(1)[0]
	seed.joinGate.mu.Lock()
	seed.joinGate.silent = true
	seed.joinGate.mu.Unlock()
	cfg := testConfig(t, "j1", c.key)
	cfg.Seeds = []string{seed.Addr()}
	j := c.start(cfg)
	awaitMembers(t, []*Node{seed, j}, 2, admitTries*admitAskWait+15*time.Second)
	if st := seed.Stats(); st.JoinsAdmitted+st.JoinsDeferred != 0 {
		t.Errorf("a silent seed answered: %+v", st)
	}
	if w := j.Stats().JoinWaits; w != 0 {
		t.Errorf("joiner waited %d times for a seed that never answered", w)
	}
}

// TestJoinAnswerReachesAHostRestartedAtANewAddress: the seed still knows
// the host at its old address; the answer goes where the ask came from.
func TestJoinAnswerReachesAHostRestartedAtANewAddress(t *testing.T) {
	c := newTestCluster(t)
	seed := c.startN(1)[0]
	cfg := testConfig(t, "j1", c.key)
	cfg.Seeds = []string{seed.Addr()}
	j := c.start(cfg)
	awaitMembers(t, []*Node{seed, j}, 2, 10*time.Second)
	c.kill(j)

	emptyBusyGate(seed)
	again := c.start(cfg) // a new port: BindPort 0
	if again.Addr() == j.Addr() {
		t.Fatalf("restarted at the same address %s", again.Addr())
	}
	awaitMembers(t, []*Node{seed, again}, 2, 20*time.Second)
	if w := again.Stats().JoinWaits; w == 0 {
		t.Errorf("the restarted host was never told to wait (seed deferred %d): the answers went elsewhere", seed.Stats().JoinsDeferred)
	}
}

// TestJoinAskAnsweredToItsSource: a seed answers an ask where it came
// from, admitted while it has tokens, then told to wait.
func TestJoinAskAnsweredToItsSource(t *testing.T) {
	n := newTestNode(t, "me")
	from := netip.MustParseAddrPort("127.0.0.1:4242")
	now := time.Now()
	n.joinGate.rate, n.joinGate.tokens, n.joinGate.filled, n.joinGate.adjusted, n.joinGate.lastAsk = admitRateMin, admitBurst, now, now, now
	n.joinGate.recent = map[string]time.Time{}
	n.joinGate.busy = func(time.Time) bool { return true } // a token a second at most
	for i := 0; i <= admitBurst; i++ {
		n.handle(encodeMessage(nil, &message{typ: msgJoinAsk, sender: fmt.Sprint("h", 10+i)}), from)
	}
	var answers []sentMsg
	f := n.fake()
	eventually(t, 5*time.Second, "every ask answered", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		answers = answers[:0]
		for _, s := range f.sent {
			if s.m.typ == msgJoinAnswer {
				answers = append(answers, s)
			}
		}
		if len(answers) < admitBurst+1 {
			return fmt.Errorf("%d answers", len(answers))
		}
		return nil
	})
	for i, got := range answers {
		want := byte(flagAdmitted)
		if i == admitBurst {
			want = 0 // the burst is spent: told to wait
		}
		if got.to != from.String() || got.m.flags != want {
			t.Errorf("ask %d: answer %+v to %s, want flags %#x to %s", i+1, got.m, got.to, want, from)
		}
	}
	if st := n.Stats(); st.JoinsAdmitted != admitBurst || st.JoinsDeferred != 1 {
		t.Errorf("admitted %d, deferred %d", st.JoinsAdmitted, st.JoinsDeferred)
	}
}

// TestSeedAddrsLeaveOutThisHost: a shared seed list given by names may
// name this host; it does not ask itself.
func TestSeedAddrsLeaveOutThisHost(t *testing.T) {
	n := newTestNode(t, "me")
	n.cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	n.addr, n.port = "127.0.0.1:7946", 7946
	got := n.seedAddrs([]string{"localhost", "localhost:7946", "127.0.0.1:7947", "localhost:7947", "no such host.invalid"})
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:7947")}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("seeds asked: %v, want %v", got, want)
	}
}

// TestLoadSamplerSeesABusyProcess: spinning every core, the process is
// busy by its CPU share (or, on a loaded machine, its timers' lateness).
func TestLoadSamplerSeesABusyProcess(t *testing.T) {
	var l loadSampler
	if l.busy(time.Now()) {
		t.Fatal("busy before it measured anything")
	}
	cpu0 := processCPU()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	eventually(t, 10*time.Second, "the sampler sees the process busy", func() error {
		if !l.busy(time.Now()) {
			return errors.New("not busy")
		}
		return nil
	})
	if processCPU() <= cpu0 {
		t.Errorf("process CPU time did not grow: %s then %s", cpu0, processCPU())
	}
}

// emptyBusyGate empties the seed's join gate and has it say it is busy,
// so it lets one join in a second from now; it returns when.
func emptyBusyGate(seed *Node) time.Time {
	g := &seed.joinGate
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.rate, g.tokens, g.filled, g.adjusted, g.lastAsk = admitRateMin, 0, now, now, now
	g.recent = map[string]time.Time{}
	g.busy = func(time.Time) bool { return true }
	return now
}
