package main

import (
	"fmt"
	"log"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// runJoin builds a ring of n hosts, all attached to the same networks,
// holding the given number of endpoints (Docker-style 64-character IDs,
// owned by every host in turn), then times new hosts until each has all of
// them: attaching before it joins, and joining before it attaches.
func runJoin(o *options) error {
	r, err := newRing(o)
	if err != nil {
		return err
	}
	if err := r.form(o.n, o.spread, "join"); err != nil {
		return err
	}
	nets := make([]string, o.networks)
	for j := range nets {
		nets[j] = fmt.Sprintf("big-%d", j)
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

	for _, order := range []string{"attach-then-join", "join-then-attach"} {
		var times []time.Duration
		complete := 0
		for k := range o.repeat {
			name := fmt.Sprintf("new-%s-%d", order[:1], k)
			var t0 time.Time
			var node *gossip.Node
			var idx int
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
					return err
				}
			} else {
				node, idx, err = r.start(name, nil)
				if err != nil {
					return err
				}
				if _, err := eventually(time.Minute, 10*time.Millisecond, func() error {
					if len(node.Attachments().Hosts(nets[0])) < ringSize {
						return fmt.Errorf("attachments not known yet")
					}
					return nil
				}); err != nil {
					return fmt.Errorf("%s never learned the ring's attachments: %w", name, err)
				}
				t0 = time.Now()
				for _, nw := range nets {
					if err := node.Attachments().Attach(nw); err != nil {
						return err
					}
				}
			}
			_, err := eventually(time.Minute, time.Millisecond, func() error {
				if c := r.tr.bigCount(idx); c < o.endpoints {
					return fmt.Errorf("%d of %d", c, o.endpoints)
				}
				return nil
			})
			took := r.tr.bigLast(idx).Sub(t0)
			if err == nil {
				complete++
			}
			st := node.Stats()
			log.Printf("%s (%s): all %d endpoints after %s (err %v); %d messages received", name, order, o.endpoints,
				took.Round(time.Millisecond), err, st.MessagesReceived)
			times = append(times, took)
			result("join", o.endpoints, "tenet", order+"_messages_received", st.MessagesReceived)
			extraJoinStats(o.endpoints, order, node)
			r.cancel[idx]()
			if _, err := eventually(30*time.Second, 50*time.Millisecond, func() error {
				if len(r.nodes[0].Members()) != ringSize {
					return fmt.Errorf("still a member")
				}
				return nil
			}); err != nil {
				log.Printf("%s did not leave: %v", name, err)
			}
		}
		result("join", o.endpoints, "tenet", order+"_median", percentile(times, .5))
		result("join", o.endpoints, "tenet", order+"_max", percentile(times, 1))
		result("join", o.endpoints, "tenet", order+"_complete", fmt.Sprintf("%d/%d", complete, o.repeat))
	}
	return nil
}

func bigEndpoint(i int, nets []string) gossip.Endpoint {
	return gossip.Endpoint{
		ID: fmt.Sprintf("%064x", i), Network: nets[i%len(nets)],
		MAC: net.HardwareAddr{0x02, 0x42, 10, byte(i >> 16), byte(i >> 8), byte(i)},
		IP:  netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
	}
}
