package main

import (
	"fmt"
	"io"
	"log"
	"runtime"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tenet-net/tenet/gossip"
)

// runMemberlist forms a ring of bare memberlist instances the same way as
// runRing (same start schedule, same seed) and measures the same idle
// figures. By default it is configured as Tenet configures memberlist
// (failure detector, encryption, label, compression); -lan-defaults uses
// memberlist's LAN defaults with encryption instead.
func runMemberlist(o *options) error {
	base := measureMemory()
	key, err := gossip.GenerateKey()
	if err != nil {
		return err
	}
	impl := "memberlist"
	if o.lanDefaults {
		impl = "memberlist-lan"
	}
	d := newDowns()
	var mls []*memberlist.Memberlist
	gap := o.spread / time.Duration(o.n)
	t0 := time.Now()
	for i := range o.n {
		if o.paceByCPU && i >= 8 {
			// Paced as Tenet's join admission paces its joins: the next
			// host starts once the process used at most half its cores
			// over a 250 ms window.
			for {
				c0, w0 := cpuTime(), time.Now()
				time.Sleep(250 * time.Millisecond) // the measuring window
				if float64(cpuTime()-c0) <= 0.5*float64(time.Since(w0))*float64(runtime.GOMAXPROCS(0)) {
					break
				}
			}
		}
		mc := memberlist.DefaultLANConfig()
		if !o.lanDefaults {
			g := gossip.DefaultConfig()
			mc.ProbeInterval = g.ProbeInterval
			mc.ProbeTimeout = g.ProbeTimeout
			mc.SuspicionMult = g.SuspicionMult
			mc.SuspicionMaxTimeoutMult = g.SuspicionMaxTimeoutMult
			mc.GossipInterval = g.GossipInterval
			mc.GossipNodes = g.GossipNodes
			mc.PushPullInterval = g.PushPullInterval
			mc.DeadNodeReclaimTime = g.DeadNodeReclaimTime
			mc.EnableCompression = tenetCompresses
		}
		mc.Name = fmt.Sprintf("m%03d", i)
		mc.BindAddr = "127.0.0.1"
		mc.BindPort = 0
		mc.AdvertiseAddr = "127.0.0.1"
		mc.Label = "tenet"
		kr, err := memberlist.NewKeyring([][]byte{key}, key)
		if err != nil {
			return err
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
		mc.LogOutput = io.Discard
		mc.Events = leaveCounter{d}
		ml, err := memberlist.Create(mc)
		if err != nil {
			return err
		}
		if i > 0 { // joined aside, as gossip.Node.Run does
			seed := mls[0].LocalNode().Address()
			go func() {
				if _, err := ml.Join([]string{seed}); err != nil {
					log.Printf("%s: join: %v", mc.Name, err)
				}
			}()
		}
		mls = append(mls, ml)
		if d := time.Until(t0.Add(time.Duration(i+1) * gap)); d > 0 && !o.paceByCPU {
			time.Sleep(d) // the start schedule, not a wait for an outcome
		}
	}
	took, err := eventually(3*time.Minute, 200*time.Millisecond, func() error {
		for i, ml := range mls {
			if m := ml.NumMembers(); m != o.n {
				return fmt.Errorf("m%03d sees %d of %d", i, m, o.n)
			}
		}
		return nil
	})
	log.Printf("%s ring of %d formed %s after the last start (err %v), false downs %d", impl, o.n, took.Round(time.Millisecond), err, d.false_.Load())
	result("ring", o.n, impl, "formed", err == nil)
	result("ring", o.n, impl, "form_after_last_start", took)
	result("ring", o.n, impl, "false_downs_forming", d.false_.Load())
	if err != nil {
		return nil
	}
	time.Sleep(5 * time.Second) // settle, as runRing does before its idle window
	d0 := d.false_.Load()
	idle("ring", o.n, impl, o.idle, base, nil)
	result("ring", o.n, impl, "false_downs_idle", d.false_.Load()-d0)
	if o.stall <= 0 {
		return nil
	}
	return startStall(o, "stall-quiet", impl, d)()
}

type leaveCounter struct{ d *downs }

func (l leaveCounter) NotifyJoin(*memberlist.Node)   {}
func (l leaveCounter) NotifyUpdate(*memberlist.Node) {}
func (l leaveCounter) NotifyLeave(m *memberlist.Node) {
	l.d.report(m.Name)
}
