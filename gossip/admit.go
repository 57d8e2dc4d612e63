package gossip

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Join admission. Every arrival costs the whole ring: memberlist spreads
// the newcomer's "alive" to every host (n × RetransmitMult × log10 n
// messages), every host meets it once (a heal packet), and it meets every
// host. Hundreds of hosts started together (a rack powered on, every
// tenetd restarted by one deploy) multiply that by the rate of arrivals,
// and on hosts whose CPU runs short the probes fall late and the ring
// declares live hosts dead, which feeds on itself (DESIGN.md, "A CPU
// stall"). So a host starting anew asks its seeds before it joins, and a
// seed lets joins in at a rate it adapts to how busy it is: on hosts at
// ease nothing waits; on a seed short of CPU, arrivals are spaced out
// until it has caught up.
//
// The seed keeps a token bucket: admitBurst joins at once, then a rate a
// second, starting at admitRateStart. Every admitWindow (at the next ask)
// the rate halves while the process is busy: a timer ran more than
// admitLateLimit late in the last two windows, or the process used more
// than admitCPULimit of its cores in the last one. It grows by
// admitRateStep when the process is at ease and a joiner was told to wait
// since the last change; after admitIdle without asks the bucket starts
// afresh. The CPU share leads: an arrival's cost lands over the seconds
// after it (memberlist's gossip, the first probes), and timers fall late
// only once the cores are full, too late to stop the arrivals that
// filled them. A host let in is let in again without a token for
// admitRecent (its answer lost, or a replay).
//
// The joiner asks every seed at once and goes ahead at the first yes. Told
// to wait, it asks again after a pause drawn between half and one and a
// half times a mean that doubles from admitPauseMin to admitPauseMax.
// When no seed answers admitTries rounds in a row (down, or a version
// that drops the question) it joins as before, admitTries × admitAskWait
// later; after admitMaxWait of waiting it joins anyway, so a seed kept
// busy by a flood of asks delays hosts but cannot keep them out.
const (
	admitBurst     = 8
	admitRateStart = 8.0 // joins a second
	admitRateMin   = 1.0
	admitRateMax   = 200.0
	admitRateStep  = 1.0
	admitWindow    = 500 * time.Millisecond
	admitLateLimit = 50 * time.Millisecond
	admitCPULimit  = 0.5
	admitIdle      = 10 * time.Second
	admitRecent    = 5 * time.Second
	admitPauseMin  = 250 * time.Millisecond
	admitPauseMax  = 4 * time.Second
	admitAskWait   = time.Second // for the answers to one round of asks
	admitTries     = 3
	admitMaxWait   = 5 * time.Minute
)

// admission is a seed's side: the token bucket.
type admission struct {
	mu       sync.Mutex
	rate     float64 // joins a second; 0 until the first ask
	tokens   float64
	filled   time.Time // when tokens was last topped up
	adjusted time.Time // when rate was last adjusted
	lastAsk  time.Time
	deferred bool                 // a joiner was told to wait since adjusted
	recent   map[string]time.Time // hosts let in within admitRecent
	// busy reports whether the process ran late or short of CPU lately
	// (nil: load.busy; tests replace it).
	busy func(now time.Time) bool
	// silent drops every ask unanswered, as a seed of an older version
	// does (tests).
	silent bool
}

// ask reports whether host may join now.
func (a *admission) ask(host string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rate == 0 || now.Sub(a.lastAsk) > admitIdle {
		a.rate, a.tokens, a.filled, a.adjusted, a.deferred = admitRateStart, admitBurst, now, now, false
		a.recent = make(map[string]time.Time)
	}
	a.lastAsk = now
	if at, ok := a.recent[host]; ok && now.Sub(at) < admitRecent {
		return true
	}
	if now.Sub(a.adjusted) >= admitWindow {
		busy := a.busy
		if busy == nil {
			busy = load.busy
		}
		switch {
		case busy(now):
			a.rate = max(admitRateMin, a.rate/2)
		case a.deferred:
			a.rate = min(admitRateMax, a.rate+admitRateStep)
		}
		a.adjusted, a.deferred = now, false
	}
	if dt := now.Sub(a.filled).Seconds(); dt > 0 {
		a.tokens = min(admitBurst, a.tokens+dt*a.rate)
		a.filled = now
	}
	if a.tokens < 1 {
		a.deferred = true
		return false
	}
	a.tokens--
	if a.recent == nil {
		a.recent = make(map[string]time.Time)
	}
	for h, at := range a.recent { // at most admitRateMax × admitRecent + admitBurst
		if now.Sub(at) >= admitRecent {
			delete(a.recent, h)
		}
	}
	a.recent[host] = now
	return true
}

// answerJoinAsk answers a host asking to join: to where the ask came
// from, as a host restarting at a new address is still known here at its
// old one.
func (n *Node) answerJoinAsk(m *message, from netip.AddrPort) {
	n.joinGate.mu.Lock()
	silent := n.joinGate.silent
	n.joinGate.mu.Unlock()
	to, known := from, from.IsValid()
	if !known {
		to, known = n.store.peerAddr(m.sender)
	}
	if silent || !known {
		return // no token spent on an answer that cannot go
	}
	ans := &message{typ: msgJoinAnswer, sender: n.cfg.NodeName}
	if n.joinGate.ask(m.sender, time.Now()) {
		ans.flags = flagAdmitted
		n.stats.joinsAdmitted.Add(1)
	} else {
		n.stats.joinsDeferred.Add(1)
	}
	n.send(peer{m.sender, to}, ans)
}

// onJoinAnswer hands a seed's answer to awaitAdmission, if it waits.
func (n *Node) onJoinAnswer(m *message) {
	select {
	case n.admitCh <- m.flags&flagAdmitted != 0:
	default:
	}
}

// awaitAdmission asks the seeds until one lets this host join (see
// above); false if the node stopped meanwhile.
func (n *Node) awaitAdmission(seeds []string) bool {
	addrs := n.seedAddrs(seeds)
	if len(addrs) == 0 {
		return true
	}
	ask := &message{typ: msgJoinAsk, sender: n.cfg.NodeName}
	deadline := time.Now().Add(admitMaxWait)
	pause, waits := admitPauseMin, 0
	for unanswered := 0; unanswered < admitTries; {
		for drained := false; !drained; { // late answers to an earlier round
			select {
			case <-n.admitCh:
			default:
				drained = true
			}
		}
		for _, to := range addrs {
			n.send(peer{to.String(), to}, ask)
		}
		admitted, answers := false, 0
		timeout := time.NewTimer(admitAskWait)
	round:
		for answers < len(addrs) {
			select {
			case ok := <-n.admitCh:
				answers++
				if ok {
					admitted = true
					break round
				}
			case <-timeout.C:
				break round
			case <-n.quit:
				timeout.Stop()
				return false
			}
		}
		timeout.Stop()
		switch {
		case admitted:
			if waits > 0 {
				n.log.Info("seed let this host join", "waits", waits)
			}
			return true
		case answers == 0:
			unanswered++
			continue
		case time.Now().After(deadline):
			n.log.Warn("seeds still busy with other joins; joining without waiting longer", "waited", admitMaxWait)
			return true
		}
		unanswered = 0
		if waits++; waits == 1 {
			n.log.Info("seeds busy with other joins; waiting to join", "seeds", addrs)
		}
		n.stats.joinWaits.Add(1)
		wait := pause/2 + rand.N(pause) // jittered: askers spread out
		pause = min(2*pause, admitPauseMax)
		select {
		case <-time.After(wait):
		case <-n.quit:
			return false
		}
	}
	return true
}

// seedAddrs resolves the seeds to ask, leaving out this host (a shared
// seed list given by names may name it) and duplicates. Names resolve
// within 2 s, and not past the node's stop.
func (n *Node) seedAddrs(seeds []string) []netip.AddrPort {
	skip := map[netip.AddrPort]bool{netip.AddrPortFrom(n.cfg.BindAddr.Unmap(), n.port): true}
	if a, err := netip.ParseAddrPort(n.addr); err == nil {
		skip[netip.AddrPortFrom(a.Addr().Unmap(), a.Port())] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go func() {
		select {
		case <-n.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	var out []netip.AddrPort
	for _, s := range seeds {
		a, err := resolveSeed(ctx, withPort(s, n.port), n.cfg.BindAddr)
		if err != nil {
			n.log.Debug("seed not asked", "seed", s, "err", err)
			continue
		}
		if !skip[a] {
			skip[a] = true
			out = append(out, a)
		}
	}
	return out
}

// resolveSeed turns host:port into an address, a host name resolved to an
// address of bind's family where it has one.
func resolveSeed(ctx context.Context, hostport string, bind netip.Addr) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(hostport); err == nil {
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), nil
	}
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", ps, err)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %q: %v", host, err)
	}
	want4 := !bind.IsValid() || bind.Unmap().Is4()
	pick := ips[0].Unmap()
	for _, ip := range ips {
		if ip.Unmap().Is4() == want4 {
			pick = ip.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(pick, uint16(port)), nil
}

// load measures, per admitWindow, how late timers fire in this process
// and how much of its cores it used: a goroutine sleeps sleepStep at a time
// and keeps the worst overshoot, and the window's CPU time (getrusage) is
// divided by its length times GOMAXPROCS. It runs only while asked
// (recent), for loadIdle after the last ask, so a quiet host pays
// nothing. One per process: both figures are the process's, shared by
// every node in it.
var load = &loadSampler{}

const (
	sleepStep = 20 * time.Millisecond
	loadIdle  = 10 * time.Second
)

type loadSampler struct {
	mu        sync.Mutex
	running   bool
	askedAt   time.Time
	cur, prev time.Duration // worst overshoot in the current and previous window
	cpu       float64       // share of the cores used in the last whole window
	curStart  time.Time
	cpuStart  time.Duration // process CPU time at curStart
}

// busy reports whether the process ran late or used more than
// admitCPULimit of its cores in the last one to two windows, starting
// the sampler if it is not running (false until it has measured).
func (l *loadSampler) busy(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.askedAt = now
	if !l.running {
		l.running, l.cur, l.prev, l.cpu, l.curStart, l.cpuStart = true, 0, 0, 0, now, processCPU()
		go l.run()
		return false
	}
	return max(l.cur, l.prev) > admitLateLimit || l.cpu > admitCPULimit
}

func (l *loadSampler) run() {
	for {
		t0 := time.Now()
		time.Sleep(sleepStep)
		now := time.Now()
		over := now.Sub(t0) - sleepStep
		l.mu.Lock()
		if d := now.Sub(l.curStart); d >= admitWindow {
			c := processCPU()
			l.cpu = float64(c-l.cpuStart) / (float64(d) * float64(runtime.GOMAXPROCS(0)))
			l.prev, l.cur, l.curStart, l.cpuStart = l.cur, 0, now, c
		}
		l.cur = max(l.cur, over)
		if now.Sub(l.askedAt) > loadIdle {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// processCPU returns the CPU time this process has used (0 if unknown).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
