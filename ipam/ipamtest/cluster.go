// Package ipamtest is an in-memory fake of the replication layer IPAM runs
// on: a replicated, eventually consistent, owner-writes-only table with
// Lamport-versioned entries, delayed and reordered delivery, partitions
// (messages between groups held back until healed), slow one-way links and
// dead hosts. It never drops a message, as gossip's anti-entropy eventually
// delivers everything. Safe for concurrent use.
package ipamtest

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenet-net/tenet/ipam"
)

// Cluster connects Nodes.
type Cluster struct {
	mu       sync.Mutex // guards the fields below
	nodes    map[string]*Node
	group    map[string]int // partition group; hosts talk only within one
	dead     map[string]bool
	slow     map[[2]string]bool // links (from, to) whose messages are held, though both ends are alive
	held     []msg
	maxDelay time.Duration
	rnd      *rand.Rand
}

type msg struct {
	from, to string
	e        ipam.Entry
	deleted  bool
}

// NewCluster returns a cluster whose messages each take a random delay in
// [0, maxDelay).
func NewCluster(maxDelay time.Duration, seed uint64) *Cluster {
	return &Cluster{nodes: map[string]*Node{}, group: map[string]int{}, dead: map[string]bool{}, slow: map[[2]string]bool{},
		maxDelay: maxDelay, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Node returns the replica of host name, creating it. A new node receives
// every entry the others hold, as gossip's state sync on join does.
func (c *Cluster) Node(name string) *Node {
	c.mu.Lock()
	if n := c.nodes[name]; n != nil {
		c.mu.Unlock()
		return n
	}
	n := &Node{c: c, name: name, table: map[[2]string]row{}, subs: map[int]chan ipam.Event{}}
	others := make([]*Node, 0, len(c.nodes))
	for _, o := range c.nodes {
		others = append(others, o)
	}
	c.nodes[name] = n
	c.mu.Unlock()
	for _, o := range others {
		o.mu.Lock()
		rows := make([]row, 0, len(o.table))
		for _, r := range o.table {
			rows = append(rows, r)
		}
		o.mu.Unlock()
		for _, r := range rows {
			c.send(msg{from: o.name, to: name, e: r.e, deleted: r.deleted})
		}
	}
	return n
}

// Partition splits the cluster: each argument is a group of hosts that can
// still talk to each other; hosts not named form one more group.
func (c *Cluster) Partition(groups ...[]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.nodes {
		c.group[n] = 0
	}
	for i, g := range groups {
		for _, n := range g {
			c.group[n] = i + 1
		}
	}
}

// Heal joins all groups again and delivers what was held back.
func (c *Cluster) Heal() {
	c.mu.Lock()
	for n := range c.group {
		c.group[n] = 0
	}
	c.mu.Unlock()
	c.flush()
}

// Kill declares a host dead: nothing reaches it or leaves it, and members
// see it as not alive. Its entries stay in every replica.
func (c *Cluster) Kill(name string) {
	c.mu.Lock()
	c.dead[name] = true
	c.mu.Unlock()
}

// Revive brings a dead host back and delivers what was held back.
func (c *Cluster) Revive(name string) {
	c.mu.Lock()
	delete(c.dead, name)
	c.mu.Unlock()
	c.flush()
}

// Slow holds back every message from one host to another, in that
// direction only, until Fast: a congested or lossy path. Unlike Partition,
// both hosts stay alive in every host's Members.
func (c *Cluster) Slow(from, to string) {
	c.mu.Lock()
	c.slow[[2]string{from, to}] = true
	c.mu.Unlock()
}

// Fast ends Slow on the link and delivers what it held back.
func (c *Cluster) Fast(from, to string) {
	c.mu.Lock()
	delete(c.slow, [2]string{from, to})
	c.mu.Unlock()
	c.flush()
}

// deliverableLocked reports whether a message from a to b may arrive now.
func (c *Cluster) deliverableLocked(a, b string) bool {
	return c.connectedLocked(a, b) && !c.slow[[2]string{a, b}]
}

func (c *Cluster) connectedLocked(a, b string) bool {
	return !c.dead[a] && !c.dead[b] && c.group[a] == c.group[b]
}

func (c *Cluster) flush() {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	for _, m := range held {
		c.send(m)
	}
}

func (c *Cluster) send(m msg) {
	c.mu.Lock()
	if !c.deliverableLocked(m.from, m.to) {
		c.held = append(c.held, m)
		c.mu.Unlock()
		return
	}
	var d time.Duration
	if c.maxDelay > 0 {
		d = time.Duration(c.rnd.Int64N(int64(c.maxDelay)))
	}
	to := c.nodes[m.to]
	c.mu.Unlock()
	time.AfterFunc(d, func() {
		c.mu.Lock()
		ok := c.deliverableLocked(m.from, m.to)
		if !ok {
			c.held = append(c.held, m)
		}
		c.mu.Unlock()
		if ok {
			to.apply(m.e, m.deleted)
		}
	})
}

func (c *Cluster) broadcast(from string, e ipam.Entry, deleted bool) {
	c.mu.Lock()
	var to []string
	for n := range c.nodes {
		if n != from {
			to = append(to, n)
		}
	}
	c.mu.Unlock()
	for _, n := range to {
		c.send(msg{from: from, to: n, e: e, deleted: deleted})
	}
}

// Node is one host's replica; it implements ipam.Replica.
type Node struct {
	c    *Cluster
	name string

	mu    sync.Mutex // guards the fields below
	clock uint64
	table map[[2]string]row // (key, host)
	subs  map[int]chan ipam.Event
	next  int
}

type row struct {
	e       ipam.Entry
	deleted bool
}

var _ ipam.Replica = (*Node)(nil)

// Put writes this host's entry.
func (n *Node) Put(key string, value []byte) error { return n.write(key, value, false) }

// Delete tombstones this host's entry.
func (n *Node) Delete(key string) error { return n.write(key, nil, true) }

func (n *Node) write(key string, value []byte, deleted bool) error {
	n.mu.Lock()
	n.clock++
	e := ipam.Entry{Key: key, Host: n.name, Value: slices.Clone(value), Version: n.clock}
	n.mu.Unlock()
	n.apply(e, deleted)
	n.c.broadcast(n.name, e, deleted)
	return nil
}

func (n *Node) apply(e ipam.Entry, deleted bool) {
	n.mu.Lock()
	k := [2]string{e.Key, e.Host}
	if cur, ok := n.table[k]; ok && cur.e.Version >= e.Version {
		n.mu.Unlock()
		return
	}
	n.clock = max(n.clock, e.Version)
	n.table[k] = row{e: e, deleted: deleted}
	ev := ipam.Event{Key: e.Key, Host: e.Host, Deleted: deleted}
	for _, ch := range n.subs {
		select {
		case ch <- ev:
		default: // a full subscriber misses the notice, as allowed
		}
	}
	n.mu.Unlock()
}

// List returns all live entries under prefix, of every host.
func (n *Node) List(prefix string) []ipam.Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []ipam.Entry
	for k, r := range n.table {
		if !r.deleted && strings.HasPrefix(k[0], prefix) {
			out = append(out, r.e)
		}
	}
	return out
}

// Subscribe delivers change notices.
func (n *Node) Subscribe(buf int) (<-chan ipam.Event, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch := make(chan ipam.Event, buf)
	id := n.next
	n.next++
	n.subs[id] = ch
	return ch, func() {
		n.mu.Lock()
		delete(n.subs, id)
		n.mu.Unlock()
	}
}

// Members returns every host with its liveness as this host sees it: a host
// in another partition group, or dead, is not alive.
func (n *Node) Members() []ipam.Member {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	var out []ipam.Member
	for name := range n.c.nodes {
		out = append(out, ipam.Member{Name: name, Alive: name == n.name || n.c.connectedLocked(n.name, name)})
	}
	slices.SortFunc(out, func(a, b ipam.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}
