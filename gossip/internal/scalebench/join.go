package main

import (
	"fmt"
	"log"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// runJoin builds a ring of n hosts, all attached to the same networks,
// holding the given number of endpoints (Docker-style 64-character IDs,
// owned by every host in turn), then times new hosts until each has all of
// them: attaching before it joins, and joining before it attaches.
func runJoin(o *options) error {
	switch o.newcomer {
	case "in", "own", "both":
	default:
		return fmt.Errorf("-newcomer %q: must be in, own or both", o.newcomer)
	}
	r, err := newRing(o)
	if err != nil {
		return err
	}
	if err := r.form(o.n, o.spread, "join"); err != nil {
		return err
	}
	nets := bigNetworks(o.networks)
	for j := range nets {
		for _, node := range r.nodes {
			if err := node.Attachments().Attach(nets[j]); err != nil {
				return err
			}
		}
	}
	// The ring's endpoints are written in rounds of at most 2,000 (40 per
	// host), each everywhere, and every host's queues empty, before the
	// next: the figure is the new host's, not the setup's, and no host
	// starts thousands of containers at once. (In rounds of 10,000 at
	// 100,000 endpoints, 50 hosts sharing 2 cores fell behind, were
	// declared dead and came back, and the repair this set off never let
	// the ring become quiet.)
	ringSize := len(r.nodes)
	start := time.Now()
	for done := 0; done < o.endpoints; {
		upto := min(o.endpoints, done+2_000)
		var wg sync.WaitGroup
		for h, node := range r.nodes {
			wg.Go(func() {
				for i := done + h; i < upto; i += ringSize {
					if err := node.Endpoints().Put(bigEndpoint(i, nets)); err != nil {
						log.Printf("put: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		if _, err = eventually(10*time.Minute, 100*time.Millisecond, func() error {
			for i := range ringSize {
				if c := r.tr.bigCount(i); c < upto {
					return fmt.Errorf("%s has %d of %d endpoints", r.names[i], c, upto)
				}
				if st := r.nodes[i].Stats(); st.SendQueue+st.StreamQueue+st.StreamsOut > 0 {
					return fmt.Errorf("%s is still sending", r.names[i])
				}
			}
			return nil
		}); err != nil {
			break
		}
		done = upto
	}
	took := time.Since(start)
	log.Printf("ring of %d holds %d endpoints on %d networks everywhere after %s (err %v)", ringSize, o.endpoints, o.networks, took.Round(time.Millisecond), err)
	if err != nil {
		return err
	}
	time.Sleep(5 * time.Second) // settle: the window's start, not a wait for an outcome
	// Repair in the quiet ring: once every copy agrees it should ask for
	// (almost) nothing. Counted over a fixed window, as a figure.
	ringTotals := func() (pulls, applied, sent uint64) {
		for _, node := range r.nodes {
			st := node.Stats()
			pulls, applied, sent = pulls+st.Pulls, applied+st.EntriesApplied, sent+st.MessagesSent
		}
		return
	}
	p0, a0, s0 := ringTotals()
	time.Sleep(10 * time.Second) // the measuring window
	p1, a1, s1 := ringTotals()
	log.Printf("quiet ring of %d over 10 s: %d pulls, %d entries applied, %d messages sent", ringSize, p1-p0, a1-a0, s1-s0)
	result("join", o.endpoints, "tenet", "quiet_ring_pulls_per_10s", p1-p0)
	result("join", o.endpoints, "tenet", "quiet_ring_messages_per_10s", s1-s0)

	owns := 0
	for _, order := range []string{"attach-then-join", "join-then-attach"} {
		if err := r.timeJoins(order, nets, ringSize, &owns); err != nil {
			return err
		}
	}
	return nil
}

// timeJoins times o.repeat new hosts (per placement) that attach and join
// in the given order, and prints the figures. owns counts the children
// started, for their made-up VTEPs.
func (r *ring) timeJoins(order string, nets []string, ringSize int, owns *int) error {
	o := r.o
	path := ""
	if o.ringProfile != "" {
		path = o.ringProfile + "-" + order + ".prof"
	}
	stop, err := cpuProfile(path)
	if err != nil {
		return err
	}
	defer stop()
	var inTimes, ownTimes []time.Duration
	inComplete, ownComplete := 0, 0
	for k := range o.repeat {
		// With both, the two placements take turns going first.
		places := []string{o.newcomer}
		if o.newcomer == "both" {
			places = []string{"in", "own"}
			if k%2 == 1 {
				places = []string{"own", "in"}
			}
		}
		for _, place := range places {
			name := fmt.Sprintf("new-%s-%s-%d", order[:1], place, k)
			// The ring's hosts share this process's heap: 2-5 GB of
			// copies at 100,000 endpoints, whose collection takes
			// seconds of CPU, beside a newcomer that a real host's
			// heap, one copy, would not cost. It is collected before
			// the clock starts, so that a cycle rarely falls inside
			// the window.
			runtime.GC()
			if place == "own" {
				// Made-up VTEPs past the ring's and its in-process
				// newcomers'.
				*owns++
				rep, err := r.ownProcess(name, order, nets, ringSize, 1000+*owns)
				if err != nil {
					return err
				}
				log.Printf("%s (%s, own process): all %d endpoints after %s (complete %t); %d messages received",
					name, order, o.endpoints, rep.took.Round(time.Millisecond), rep.complete, rep.messages)
				ownTimes = append(ownTimes, rep.took)
				if rep.complete {
					ownComplete++
				}
				result("join", o.endpoints, "tenet", order+"_own_messages_received", rep.messages)
				result("join", o.endpoints, "tenet", order+"_own_sync_requests", rep.syncs)
				result("join", o.endpoints, "tenet", order+"_own_KiB_received", rep.kib)
			} else {
				took, complete, err := r.inProcess(name, order, nets, ringSize)
				if err != nil {
					return err
				}
				inTimes = append(inTimes, took)
				if complete {
					inComplete++
				}
			}
			if _, err := eventually(30*time.Second, 50*time.Millisecond, func() error {
				if len(r.nodes[0].Members()) != ringSize {
					return fmt.Errorf("still a member")
				}
				return nil
			}); err != nil {
				log.Printf("%s did not leave: %v", name, err)
			}
		}
	}
	if len(inTimes) > 0 {
		result("join", o.endpoints, "tenet", order+"_median", percentile(inTimes, .5))
		result("join", o.endpoints, "tenet", order+"_max", percentile(inTimes, 1))
		result("join", o.endpoints, "tenet", order+"_complete", fmt.Sprintf("%d/%d", inComplete, len(inTimes)))
	}
	if len(ownTimes) > 0 {
		result("join", o.endpoints, "tenet", order+"_own_median", percentile(ownTimes, .5))
		result("join", o.endpoints, "tenet", order+"_own_max", percentile(ownTimes, 1))
		result("join", o.endpoints, "tenet", order+"_own_complete", fmt.Sprintf("%d/%d", ownComplete, len(ownTimes)))
	}
	return nil
}

// inProcess runs one newcomer in the ring's process and returns how long
// it took to hold every endpoint, from its creation (attach-then-join) or
// its first attach (join-then-attach), and whether it got them all. It
// stops the newcomer before returning. ringSize is the ring's hosts
// without newcomers.
func (r *ring) inProcess(name, order string, nets []string, ringSize int) (time.Duration, bool, error) {
	var t0 time.Time
	var node *gossip.Node
	var idx int
	var err error
	if order == "attach-then-join" {
		t0 = time.Now()
		node, idx, err = r.start(name, func(n *gossip.Node) error {
			for _, nw := range nets {
				if err := n.Attachments().Attach(nw); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, false, err
		}
	} else {
		node, idx, err = r.start(name, nil)
		if err != nil {
			return 0, false, err
		}
		if _, err := eventually(time.Minute, 10*time.Millisecond, func() error {
			if len(node.Attachments().Hosts(nets[0])) < ringSize {
				return fmt.Errorf("%d of %d hosts' attachments known", len(node.Attachments().Hosts(nets[0])), ringSize)
			}
			return nil
		}); err != nil {
			return 0, false, fmt.Errorf("%s never learned the ring's attachments: %w", name, err)
		}
		t0 = time.Now()
		for _, nw := range nets {
			if err := node.Attachments().Attach(nw); err != nil {
				return 0, false, err
			}
		}
	}
	_, err = eventually(time.Minute, time.Millisecond, func() error {
		if c := r.tr.bigCount(idx); c < r.o.endpoints {
			return fmt.Errorf("%d of %d", c, r.o.endpoints)
		}
		return nil
	})
	took := r.tr.bigLast(idx).Sub(t0)
	if err != nil {
		took = time.Since(t0) // incomplete: the whole wait, not the last arrival
	}
	st := node.Stats()
	log.Printf("%s (%s): all %d endpoints after %s (err %v); %d messages received", name, order, r.o.endpoints,
		took.Round(time.Millisecond), err, st.MessagesReceived)
	result("join", r.o.endpoints, "tenet", order+"_messages_received", st.MessagesReceived)
	extraJoinStats(r.o.endpoints, order, node)
	r.cancel[idx]()
	return took, err == nil, nil
}

// bigNetworks names the join scenario's networks, the same in the ring's
// process and in a newcomer's.
func bigNetworks(n int) []string {
	nets := make([]string, n)
	for j := range nets {
		nets[j] = fmt.Sprintf("big-%d", j)
	}
	return nets
}

func bigEndpoint(i int, nets []string) gossip.Endpoint {
	return gossip.Endpoint{
		ID: fmt.Sprintf("%064x", i), Network: nets[i%len(nets)],
		MAC: net.HardwareAddr{0x02, 0x42, 10, byte(i >> 16), byte(i >> 8), byte(i)},
		IP:  netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
	}
}
