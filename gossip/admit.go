package gossip

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
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
// stall"). So a host starting anew asks its seed before it joins, and the
// seed lets joins in at a rate it adapts to how busy it is: on hosts at
// ease nothing waits; on a seed short of CPU, arrivals are spaced out
// until it has caught up.
//
// The seed keeps a token bucket: admitBurst joins at once, then a rate a
// second, starting at admitRateStart. Every admitWindow the rate grows by
// admitRateStep while the process is at ease, and halves while it is busy:
// a timer ran more than admitLateLimit late in the last two windows, or
// the process used more than admitCPULimit of its cores in the last one.
// The CPU share leads: an arrival's cost lands over the seconds after it
// (memberlist's gossip, the first probes), and timers fall late only once
// the cores are full, too late to stop the arrivals that filled them. A joiner
// told to wait asks again after a jittered, doubling pause (admitPauseMin
// to admitPauseMax); one whose seeds do not answer (down, or too old to
// know the question) joins anyway after admitTries asks, as before.
const (
	admitBurst     = 8
	admitRateStart = 8.0 // joins a second
	admitRateMin   = 1.0
	admitRateMax   = 200.0
	admitRateStep  = 1.0
	admitWindow    = 500 * time.Millisecond
	admitLateLimit = 50 * time.Millisecond
	admitCPULimit  = 0.5
	admitPauseMin  = 250 * time.Millisecond
	admitPauseMax  = 4 * time.Second
	admitAskWait   = time.Second // for an answer to one ask
	admitTries     = 3
)

// admission is a seed's side: the token bucket.
type admission struct {
	mu       sync.Mutex
	rate     float64 // joins a second; 0 until the first ask
	tokens   float64
	filled   time.Time // when tokens was last topped up
	adjusted time.Time // when rate was last adjusted
	// busy reports whether the process ran late or short of CPU lately
	// (nil: load.busy; tests replace it).
	busy func(now time.Time) bool
	// silent drops every ask unanswered, as a seed of an older version
	// does (tests).
	silent bool
}

// ask reports whether a join asked for at now may go ahead.
func (a *admission) ask(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rate == 0 {
		a.rate, a.tokens, a.filled, a.adjusted = admitRateStart, admitBurst, now, now
	}
	if now.Sub(a.adjusted) >= admitWindow {
		busy := a.busy
		if busy == nil {
			busy = load.busy
		}
		if busy(now) {
			a.rate = max(admitRateMin, a.rate/2)
		} else {
			a.rate = min(admitRateMax, a.rate+admitRateStep)
		}
		a.adjusted = now
	}
	if dt := now.Sub(a.filled).Seconds(); dt > 0 {
		a.tokens = min(admitBurst, a.tokens+dt*a.rate)
		a.filled = now
	}
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}

// answerJoinAsk answers a host asking to join.
func (n *Node) answerJoinAsk(m *message, from netip.AddrPort) {
	n.joinGate.mu.Lock()
	silent := n.joinGate.silent
	n.joinGate.mu.Unlock()
	if silent {
		return
	}
	ans := &message{typ: msgJoinAnswer, sender: n.cfg.NodeName}
	if n.joinGate.ask(time.Now()) {
		ans.flags = flagAdmitted
		n.stats.joinsAdmitted.Add(1)
	} else {
		n.stats.joinsDeferred.Add(1)
	}
	if from.IsValid() {
		// To where the ask came from: a host restarting at a new address
		// is still known here at its old one.
		n.send(peer{m.sender, from}, ans)
		return
	}
	n.reply(m.sender, from, ans)
}

// onJoinAnswer hands a seed's answer to awaitAdmission, if it waits.
func (n *Node) onJoinAnswer(m *message) {
	select {
	case n.admitCh <- m.flags&flagAdmitted != 0:
	default:
	}
}

// awaitAdmission asks the seeds, in turn, until one lets this host join;
// it returns at once if none answers admitTries asks in a row, and false
// if the node stopped meanwhile.
func (n *Node) awaitAdmission(seeds []string) bool {
	var addrs []netip.AddrPort
	for _, s := range seeds {
		if a, err := resolveSeed(withPort(s, n.port)); err == nil {
			addrs = append(addrs, a)
		}
	}
	pause, waits := admitPauseMin, 0
	for i, unanswered := 0, 0; len(addrs) > 0 && unanswered < admitTries; i++ {
		to := addrs[i%len(addrs)]
		select {
		case <-n.admitCh: // a late answer to an earlier ask
		default:
		}
		n.send(peer{to.String(), to}, &message{typ: msgJoinAsk, sender: n.cfg.NodeName})
		var admitted, answered bool
		select {
		case admitted = <-n.admitCh:
			answered = true
		case <-time.After(admitAskWait):
		case <-n.quit:
			return false
		}
		switch {
		case admitted:
			if waits > 0 {
				n.log.Info("seed let this host join", "seed", to, "waits", waits)
			}
			return true
		case !answered:
			unanswered++
			continue
		}
		unanswered = 0
		if waits++; waits == 1 {
			n.log.Info("seed busy with other joins; waiting to join", "seed", to)
		}
		n.stats.joinWaits.Add(1)
		wait := pause/2 + rand.N(pause) // mean pause, jittered: askers spread out
		pause = min(2*pause, admitPauseMax)
		select {
		case <-time.After(wait):
		case <-n.quit:
			return false
		}
	}
	return true
}

// resolveSeed turns host:port into an address (a host name resolved).
func resolveSeed(hostport string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(hostport); err == nil {
		return a, nil
	}
	ua, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
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
