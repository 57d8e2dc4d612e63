// Package gossiptest lets tests cut the loopback network between groups of
// in-process gossip nodes (gossip.Config.WrapTransport), to simulate
// partitions without touching the kernel. Safe for concurrent use.
package gossiptest

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Net lets tests cut the loopback "network" between groups of nodes:
// each node's transport is wrapped so that it drops packets to, and refuses
// connections to, nodes in another group while a partition is on. Both ends
// are wrapped, so traffic is cut in both directions. Nothing leaves
// 127.0.0.1.
type Net struct {
	mu    sync.Mutex     // guards the fields below
	group map[string]int // node address -> group
	cut   bool           // partition on
	lose  func(b []byte) bool
	hold  map[[2]string]func(b []byte) bool // (from, to) -> which packets Hold keeps back
	held  map[[2]string][]func()            // (from, to) -> sends kept back, in order
	slow  map[string]time.Duration          // address -> delay of everything sent to it
}

// NewNet returns a Net with no partition.
func NewNet() *Net {
	return &Net{group: make(map[string]int), hold: make(map[[2]string]func([]byte) bool), held: make(map[[2]string][]func()),
		slow: make(map[string]time.Duration)}
}

// Hold keeps back the packets (not streams) from address from to address
// to for which match returns true, in that direction only, until Release:
// a slow path, where Lose is a lossy one.
func (tn *Net) Hold(from, to string, match func(b []byte) bool) {
	tn.mu.Lock()
	tn.hold[[2]string{from, to}] = match
	tn.mu.Unlock()
}

// Release ends Hold on the path and sends what it kept back, in order.
func (tn *Net) Release(from, to string) {
	k := [2]string{from, to}
	tn.mu.Lock()
	delete(tn.hold, k)
	sends := tn.held[k]
	delete(tn.held, k)
	tn.mu.Unlock()
	for _, send := range sends {
		send()
	}
}

// Held returns how many packets Hold keeps back on the path now.
func (tn *Net) Held(from, to string) int {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return len(tn.held[[2]string{from, to}])
}

// kept reports whether packet b is held back, keeping send(copy of b) for
// Release.
func (tn *Net) kept(from, to string, b []byte, send func(c []byte)) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	k := [2]string{from, to}
	if match := tn.hold[k]; match != nil && match(b) {
		c := slices.Clone(b)
		tn.held[k] = append(tn.held[k], func() { send(c) })
		return true
	}
	return false
}

// Slow delays everything sent to address to by d, from every node:
// packets arrive d late, connections open d late (failing if that is past
// the dialer's timeout). What that host sends goes at once. A host too slow to
// answer in time looks like this from outside, while it hears the others
// answer its own probes (given a probe timeout above d). Slow(to, 0) ends
// it; packets already delayed still arrive.
func (tn *Net) Slow(to string, d time.Duration) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if d <= 0 {
		delete(tn.slow, to)
		return
	}
	tn.slow[to] = d
}

func (tn *Net) delay(to string) time.Duration {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.slow[to]
}

// Partition puts each address in the group of its index in groups and cuts
// traffic between groups.
func (tn *Net) Partition(groups ...[]string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	for g, addrs := range groups {
		for _, a := range addrs {
			tn.group[a] = g
		}
	}
	tn.cut = true
}

// Heal restores traffic between all groups.
func (tn *Net) Heal() {
	tn.mu.Lock()
	tn.cut = false
	tn.mu.Unlock()
}

// Lose makes every packet (not stream) for which lose returns true lost on
// the wire, between any two nodes, until Lose(nil).
func (tn *Net) Lose(lose func(b []byte) bool) {
	tn.mu.Lock()
	tn.lose = lose
	tn.mu.Unlock()
}

func (tn *Net) lost(b []byte) bool {
	tn.mu.Lock()
	lose := tn.lose
	tn.mu.Unlock()
	return lose != nil && lose(b)
}

func (tn *Net) blocked(from, to string) bool {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.cut && tn.group[from] != tn.group[to]
}

// Wrap wraps a node's transport; pass it as gossip.Config.WrapTransport.
func (tn *Net) Wrap(nt memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	port := 0
	if p, ok := nt.(interface{ GetAutoBindPort() int }); ok {
		port = p.GetAutoBindPort()
	}
	return &filterTransport{NodeAwareTransport: nt, net: tn, self: fmt.Sprintf("127.0.0.1:%d", port)}
}

type filterTransport struct {
	memberlist.NodeAwareTransport
	net  *Net
	self string
}

func (f *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if f.net.blocked(f.self, addr) || f.net.lost(b) {
		return time.Now(), nil // lost on the wire
	}
	send := func(c []byte) { _, _ = f.NodeAwareTransport.WriteTo(c, addr) }
	if f.net.kept(f.self, addr, b, send) || f.delayed(addr, b, send) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteTo(b, addr)
}

func (f *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.net.blocked(f.self, a.Addr) || f.net.lost(b) {
		return time.Now(), nil
	}
	send := func(c []byte) { _, _ = f.NodeAwareTransport.WriteToAddress(c, a) }
	if f.net.kept(f.self, a.Addr, b, send) || f.delayed(a.Addr, b, send) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteToAddress(b, a)
}

// delayed reports whether packet b to addr is delayed (Slow), sending a
// copy of it when the delay is over.
func (f *filterTransport) delayed(addr string, b []byte, send func(c []byte)) bool {
	d := f.net.delay(addr)
	if d == 0 {
		return false
	}
	c := slices.Clone(b)
	time.AfterFunc(d, func() { send(c) })
	return true
}

// dialDelay waits out a Slow delay to addr, or fails as a dial past its
// timeout would.
func (f *filterTransport) dialDelay(addr string, timeout time.Duration) (time.Duration, error) {
	d := f.net.delay(addr)
	if d == 0 {
		return timeout, nil
	}
	if timeout > 0 && d >= timeout {
		time.Sleep(timeout) // the dialer's own wait, as on a slow path
		return 0, fmt.Errorf("dial %s: timed out (slow by %s)", addr, d)
	}
	time.Sleep(d) // the path's delay
	if timeout > 0 {
		timeout -= d
	}
	return timeout, nil
}

func (f *filterTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if f.net.blocked(f.self, addr) {
		return nil, fmt.Errorf("dial %s: partitioned", addr)
	}
	timeout, err := f.dialDelay(addr, timeout)
	if err != nil {
		return nil, err
	}
	return f.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (f *filterTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if f.net.blocked(f.self, a.Addr) {
		return nil, fmt.Errorf("dial %s: partitioned", a.Addr)
	}
	timeout, err := f.dialDelay(a.Addr, timeout)
	if err != nil {
		return nil, err
	}
	return f.NodeAwareTransport.DialAddressTimeout(a, timeout)
}
