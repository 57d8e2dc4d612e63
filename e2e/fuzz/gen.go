package fuzz

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// The generator draws each op from its own random stream and from what it
// intended so far (the shadow), never from what the cluster answered. So
// the sequence of ops is a function of the seed, the hosts and the weights
// alone, and a seed replays exactly even when the cluster answers
// differently: an op that then names something that does not exist is still
// a valid test (the model expects a refusal).

// Names are drawn from small pools, so that they meet again: with dashes,
// at the maximum lengths (tenant 32, network 64), and in pairs whose
// tenant-network Docker names collide (acme + eu-web, acme-eu + web).
var (
	tenantPool = []string{"acme", "acme-eu", "globex", "a", "a-b", "x-", "0", "acme-eu-web",
		"t123456789-123456789-123456789-x"} // 32
	networkPool = []string{"web", "eu-web", "eu", "b-web", "web-b", "db", "web.v2", "web_1", "b",
		"n" + strings.Repeat("123456789-", 6) + "abc"} // 64
	// tenantPartners: tenants whose tenant-network names can collide.
	tenantPartners = map[string][]string{"acme": {"acme-eu"}, "acme-eu": {"acme", "acme-eu-web"},
		"acme-eu-web": {"acme-eu"}, "a": {"a-b"}, "a-b": {"a"}}
	badTenants  = []string{"Acme", "-acme", "t123456789-123456789-123456789-xy", "acme_eu", "acme.eu"}
	badNetworks = []string{"Web", "-web", "n" + strings.Repeat("123456789-", 6) + "abcd", "web x"}
)

// The shadow: what the generator intended, assuming every op did what it
// asked.
type shadow struct {
	tenants   map[string]bool
	nets      map[string]*snet
	subnetSeq map[string]int
	ctrs      map[string]*sctr
	seq       int
	cut       string
	cutSince  int
	killed    map[string]bool
	toRemove  string
}

type snet struct {
	tenant, name string
	subnet       netip.Prefix
	defined      bool
	hosts        map[string]bool // hand-made: the engines that have it
}

func (n *snet) key() string { return n.tenant + "/" + n.name }

func (n *snet) docker() string { return HandName(n.tenant, n.name) }

type sctr struct {
	host    string
	nets    []string
	fixed   map[string]string
	running bool
	policy  bool
}

// Gen draws operations. Not safe for concurrent use.
type Gen struct {
	rng   *rand.Rand
	hosts []string
	w     Weights
	sh    shadow
	step  int
	// Cap is the number of running containers above which the generator
	// starts no more and removes some.
	Cap int
}

// NewGen returns a generator for hosts (in seed order: host i owns block i
// of each pool at first) whose ops depend only on seed and w.
func NewGen(seed uint64, hosts []string, w Weights) *Gen {
	return &Gen{rng: rand.New(rand.NewPCG(seed, seed^0x7e7e7)), hosts: hosts, w: w, Cap: 24,
		sh: shadow{tenants: map[string]bool{}, nets: map[string]*snet{}, subnetSeq: map[string]int{},
			ctrs: map[string]*sctr{}, killed: map[string]bool{}}}
}

func (g *Gen) pct(name string) bool { return g.rng.Float64()*100 < g.w[name] }

func pick[T any](g *Gen, xs []T) T { return xs[g.rng.IntN(len(xs))] }

func (g *Gen) liveHosts() []string {
	var out []string
	for _, h := range g.hosts {
		if !g.sh.killed[h] {
			out = append(out, h)
		}
	}
	return out
}

// ringHosts are the hosts tenetctl runs on: alive and on the underlay.
func (g *Gen) ringHosts() []string {
	var out []string
	for _, h := range g.liveHosts() {
		if h != g.sh.cut {
			out = append(out, h)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// netsOn lists the shadow's networks host h's engine has.
func (g *Gen) netsOn(h string) []*snet {
	var out []*snet
	for _, k := range sortedKeys(g.sh.nets) {
		n := g.sh.nets[k]
		if n.defined || n.hosts[h] {
			out = append(out, n)
		}
	}
	return out
}

func (g *Gen) ctrNames(match func(*sctr) bool) []string {
	var out []string
	for _, name := range sortedKeys(g.sh.ctrs) {
		c := g.sh.ctrs[name]
		if !g.sh.killed[c.host] && match(c) {
			out = append(out, name)
		}
	}
	return out
}

func (g *Gen) running() int { return len(g.ctrNames(func(c *sctr) bool { return c.running })) }

// Next draws the next op and records its intent.
func (g *Gen) Next() Op {
	g.step++
	for {
		k := g.drawKind()
		if op, ok := g.build(k); ok {
			g.intend(op)
			return op
		}
	}
}

func (g *Gen) drawKind() Kind {
	// Scheduled work first: a cut host is healed within 5 steps, a killed
	// host removed within 2.
	if g.sh.cut != "" && g.step-g.sh.cutSince >= 5 {
		return Heal
	}
	if g.sh.toRemove != "" && g.rng.IntN(2) == 0 {
		return RemoveHost
	}
	weights := map[Kind]float64{}
	for _, k := range Kinds {
		if g.possible(k) {
			weights[k] = g.w[string(k)]
		}
	}
	if len(g.sh.nets) == 0 { // nothing to run containers on yet
		weights[NetCreate] *= 4
		weights[HandNetCreate] *= 4
		if len(g.sh.tenants) == 0 {
			weights[TenantCreate] *= 8
		}
	}
	if n := g.running(); n > g.Cap*3/4 {
		weights[RemoveMany] *= 8
		weights[Remove] *= 2
	}
	if g.sh.cut != "" {
		weights[Heal] = g.w[string(Heal)] * float64(g.step-g.sh.cutSince) * 2
	}
	total := 0.0
	for _, k := range Kinds {
		total += weights[k]
	}
	if total == 0 {
		return TenantCreate
	}
	x := g.rng.Float64() * total
	for _, k := range Kinds {
		if x < weights[k] {
			return k
		}
		x -= weights[k]
	}
	return TenantCreate
}

func (g *Gen) possible(k Kind) bool {
	anyCtr := func(f func(*sctr) bool) bool { return len(g.ctrNames(f)) > 0 }
	switch k {
	case TenantRm:
		return len(g.sh.tenants) > 0
	case NetCreate:
		return len(g.sh.tenants) > 0
	case NetRm:
		for _, n := range g.sh.nets {
			if n.defined {
				return true
			}
		}
		return false
	case HandNetRm:
		for _, n := range g.sh.nets {
			if !n.defined {
				return true
			}
		}
		return false
	case RunOne, RunMany:
		return len(g.sh.nets) > 0 && g.running() < g.Cap
	case Burst:
		return len(g.sh.nets) > 0 && g.running()+20 <= g.Cap+4 && len(g.ringHosts()) >= 2
	case Stop:
		return anyCtr(func(c *sctr) bool { return c.running })
	case Start:
		return anyCtr(func(c *sctr) bool { return !c.running })
	case Restart, Remove:
		return anyCtr(func(*sctr) bool { return true })
	case RemoveMany:
		return len(g.ctrNames(func(*sctr) bool { return true })) >= 4
	case Connect:
		return anyCtr(func(c *sctr) bool { return c.running }) && len(g.sh.nets) > 1
	case Disconnect:
		return anyCtr(func(c *sctr) bool { return len(c.nets) > 0 })
	case Cut:
		return g.sh.cut == "" && g.sh.toRemove == "" && len(g.ringHosts()) >= 3
	case Heal:
		return g.sh.cut != ""
	case KillHost:
		return len(g.sh.killed) == 0 && g.sh.cut == "" && len(g.liveHosts()) >= 3 && g.step > 10
	case RemoveHost:
		return g.sh.toRemove != "" || g.pct("invalid")
	}
	return true
}

// build fills in an op of kind k; false if k cannot be done now.
func (g *Gen) build(k Kind) (Op, bool) {
	op := Op{Kind: k}
	ring := g.ringHosts()
	if len(ring) == 0 {
		return op, false
	}
	op.Host = pick(g, ring)
	switch k {
	case TenantCreate:
		op.Tenant = g.tenantName(func(t string) bool { return !g.sh.tenants[t] })
		// With "collide" percent, a tenant whose networks can take the
		// Docker name of an existing tenant's (acme-eu next to acme).
		var partners []string
		for _, t := range sortedKeys(g.sh.tenants) {
			for _, p := range tenantPartners[t] {
				if !g.sh.tenants[p] {
					partners = append(partners, p)
				}
			}
		}
		if len(partners) > 0 && g.pct("collide") {
			op.Tenant = pick(g, partners)
		}
	case TenantRm:
		op.Tenant = pick(g, sortedKeys(g.sh.tenants))
		if g.pct("invalid") {
			op.Tenant = pick(g, tenantPool) // perhaps not defined
		}
	case NetCreate:
		return g.buildNetCreate(op)
	case NetRm:
		var keys []string
		for _, key := range sortedKeys(g.sh.nets) {
			if n := g.sh.nets[key]; n.defined && (g.pct("invalid") || len(g.users(key)) == 0) {
				keys = append(keys, key)
			}
		}
		if len(keys) == 0 {
			return op, false
		}
		n := g.sh.nets[pick(g, keys)]
		op.Tenant, op.Network = n.tenant, n.name
	case HandNetCreate:
		return g.buildHandNet(op)
	case HandNetRm:
		var keys []string
		for _, key := range sortedKeys(g.sh.nets) {
			if n := g.sh.nets[key]; !n.defined && (g.pct("invalid") || len(g.users(key)) == 0) {
				keys = append(keys, key)
			}
		}
		if len(keys) == 0 {
			return op, false
		}
		n := g.sh.nets[pick(g, keys)]
		op.Tenant, op.Network, op.Hosts = n.tenant, n.name, nil
		for _, h := range g.hosts {
			if n.hosts[h] && !g.sh.killed[h] {
				op.Hosts = append(op.Hosts, h)
			}
		}
		if len(op.Hosts) == 0 {
			return op, false
		}
	case RunOne:
		r, ok := g.runSpec(g.liveHosts(), nil)
		if !ok {
			return op, false
		}
		op.Runs = []RunSpec{r}
		op.Host = ""
	case RunMany:
		n := 2 + g.rng.IntN(4)
		for range n {
			if r, ok := g.runSpec(g.liveHosts(), op.Runs); ok {
				op.Runs = append(op.Runs, r)
			}
		}
		if len(op.Runs) < 2 {
			return op, false
		}
		op.Host = ""
	case Burst:
		return g.buildBurst(op)
	case Stop, Start, Restart, Remove:
		names := g.ctrNames(func(c *sctr) bool {
			return (k != Stop || c.running) && (k != Start || !c.running)
		})
		if len(names) == 0 {
			return op, false
		}
		op.Container = pick(g, names)
		op.Host = g.sh.ctrs[op.Container].host
	case RemoveMany:
		names := g.ctrNames(func(*sctr) bool { return true })
		g.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		n := min(len(names), 4+g.rng.IntN(8))
		names = names[:n]
		sort.Strings(names)
		for _, name := range names {
			op.Runs = append(op.Runs, RunSpec{Name: name, Host: g.sh.ctrs[name].host})
		}
		op.Host = ""
	case Connect:
		return g.buildConnect(op)
	case Disconnect:
		names := g.ctrNames(func(c *sctr) bool { return len(c.nets) > 0 })
		if len(names) == 0 {
			return op, false
		}
		op.Container = pick(g, names)
		c := g.sh.ctrs[op.Container]
		op.Host = c.host
		key := pick(g, c.nets)
		op.Tenant, op.Network, _ = strings.Cut(key, "/")
	case KillTenetd, RestartDocker:
		op.Host = pick(g, g.liveHosts())
	case Cut:
		op.Host = pick(g, ring)
	case Heal:
		if g.sh.cut == "" {
			return op, false
		}
		op.Host = g.sh.cut
	case KillHost:
		op.Host = pick(g, ring)
		if len(g.ringHosts()) < 3 {
			return op, false
		}
	case RemoveHost:
		if g.sh.toRemove != "" {
			op.Target = g.sh.toRemove
		} else if g.rng.IntN(2) == 0 {
			op.Target = pick(g, g.liveHosts()) // alive: must be refused
		} else {
			op.Target = "h9" // never a member: must be refused
		}
	}
	return op, true
}

// users lists the shadow's containers attached to network key.
func (g *Gen) users(key string) []string {
	return g.ctrNames(func(c *sctr) bool { return slices.Contains(c.nets, key) })
}

func (g *Gen) tenantName(fresh func(string) bool) string {
	if g.pct("invalid") {
		return pick(g, badTenants)
	}
	var ok []string
	for _, t := range tenantPool {
		if fresh(t) {
			ok = append(ok, t)
		}
	}
	if len(ok) == 0 {
		return pick(g, tenantPool)
	}
	return pick(g, ok)
}

// dockerNames are the Docker names of the shadow's networks.
func (g *Gen) dockerNames() map[string]string {
	out := map[string]string{}
	for k, n := range g.sh.nets {
		out[n.docker()] = k
	}
	return out
}

// collisions lists the (tenant, network) pairs, for tenants in ts, whose
// tenant-network Docker name an existing network of another tenant has:
// acme/eu-web next to acme-eu/web.
func (g *Gen) collisions(ts []string) [][2]string {
	var out [][2]string
	for _, t := range ts {
		for _, key := range sortedKeys(g.sh.nets) {
			n := g.sh.nets[key]
			if n.tenant == t {
				continue
			}
			rest, ok := strings.CutPrefix(n.docker(), t+"-")
			if ok && networkRule.MatchString(rest) && g.sh.nets[t+"/"+rest] == nil {
				out = append(out, [2]string{t, rest})
			}
		}
	}
	return out
}

// netName draws a network name for tenant t, not yet one of its networks:
// with "collide" percent, one whose tenant-network Docker name another
// tenant's network has.
func (g *Gen) netName(t string) string {
	if g.pct("invalid") {
		return pick(g, badNetworks)
	}
	if c := g.collisions([]string{t}); len(c) > 0 && g.pct("collide") {
		return pick(g, c)[1]
	}
	taken := g.dockerNames()
	var fresh []string
	for _, n := range networkPool {
		if _, exists := g.sh.nets[t+"/"+n]; !exists {
			if _, clash := taken[HandName(t, n)]; !clash {
				fresh = append(fresh, n)
			}
		}
	}
	if len(fresh) == 0 {
		return pick(g, networkPool)
	}
	return pick(g, fresh)
}

// subnet draws the next subnet of tenant t: 10.k.0.0/24 for its k-th
// network, so tenants reuse each other's subnets and never their own; or,
// with "overlap" percent, one overlapping a network t has.
func (g *Gen) subnet(t string) netip.Prefix {
	if g.pct("overlap") {
		for _, key := range sortedKeys(g.sh.nets) {
			n := g.sh.nets[key]
			if n.tenant != t {
				continue
			}
			if n.subnet.Bits() >= 24 {
				return netip.PrefixFrom(n.subnet.Addr(), n.subnet.Bits()-1).Masked()
			}
			return netip.PrefixFrom(n.subnet.Addr(), n.subnet.Bits()+1)
		}
	}
	g.sh.subnetSeq[t]++
	k := g.sh.subnetSeq[t]%250 + 1
	bits := 24
	if g.pct("small") {
		bits = pick(g, []int{26, 27, 28})
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), bits)
}

func (g *Gen) buildNetCreate(op Op) (Op, bool) {
	tenants := sortedKeys(g.sh.tenants)
	op.Tenant = pick(g, tenants)
	if g.pct("invalid") {
		op.Tenant = g.tenantName(func(t string) bool { return !g.sh.tenants[t] }) // undefined or bad
	}
	op.Network = g.netName(op.Tenant)
	if c := g.collisions(tenants); len(c) > 0 && g.pct("collide") {
		cc := pick(g, c)
		op.Tenant, op.Network = cc[0], cc[1]
	}
	op.Subnet = g.subnet(op.Tenant).String()
	if g.pct("invalid") {
		op.Subnet = pick(g, []string{"10.9.0.1/24", "10.9.0.0/31", "0.0.0.0/0", "10.9.0.0"})
	}
	op.Internal = g.pct("internal")
	return op, true
}

func (g *Gen) buildHandNet(op Op) (Op, bool) {
	ring := g.ringHosts()
	// Extend a hand-made network to more hosts, or make a new one.
	var extend []*snet
	for _, k := range sortedKeys(g.sh.nets) {
		n := g.sh.nets[k]
		if !n.defined && len(n.hosts) < len(ring) {
			extend = append(extend, n)
		}
	}
	if len(extend) > 0 && g.rng.IntN(3) == 0 {
		n := pick(g, extend)
		op.Tenant, op.Network, op.Subnet = n.tenant, n.name, n.subnet.String()
		for _, h := range ring {
			if !n.hosts[h] && g.rng.IntN(2) == 0 {
				op.Hosts = append(op.Hosts, h)
			}
		}
		if len(op.Hosts) == 0 {
			return op, false
		}
		op.Host = ""
		return op, true
	}
	tenants := sortedKeys(g.sh.tenants)
	if len(tenants) == 0 || g.pct("invalid") {
		op.Tenant = g.tenantName(func(string) bool { return true })
	} else {
		op.Tenant = pick(g, tenants)
	}
	op.Network = g.netName(op.Tenant)
	op.Subnet = g.subnet(op.Tenant).String()
	for _, h := range ring {
		if g.rng.IntN(3) > 0 {
			op.Hosts = append(op.Hosts, h)
		}
	}
	if len(op.Hosts) == 0 {
		op.Hosts = []string{pick(g, ring)}
	}
	op.Host = ""
	return op, true
}

// fixedIP draws an address for --ip in network n on host h: mostly near the
// top of a block h owns at first (so automatic allocations, lowest first,
// rarely meet it); with "invalid" percent the gateway, the broadcast address
// or one outside the subnet; sometimes one another container was given.
func (g *Gen) fixedIP(n *snet, h string, batch []RunSpec) string {
	if g.pct("invalid") {
		last := lastAddr(n.subnet)
		return pick(g, []string{n.subnet.Addr().Next().String(), last.String(), "172.31.0.5"})
	}
	used := map[string]bool{}
	for _, name := range sortedKeys(g.sh.ctrs) {
		c := g.sh.ctrs[name]
		for key, ip := range c.fixed {
			if strings.HasPrefix(key, n.tenant+"/") {
				used[ip] = true
			}
		}
	}
	for _, r := range batch {
		used[r.IP] = true
	}
	if len(used) > 0 && g.rng.IntN(10) == 0 {
		ips := sortedKeys(used)
		if ip := pick(g, ips); ip != "" && n.subnet.Contains(netip.MustParseAddr(ip)) {
			return ip // taken by another container: refused while that one runs
		}
	}
	size := 1 << (32 - n.subnet.Bits())
	const block = 64
	nblocks := max(1, size/block)
	idx := slices.Index(g.hosts, h)
	var mine []int
	for b := range nblocks {
		if b%len(g.hosts) == idx {
			mine = append(mine, b)
		}
	}
	if len(mine) == 0 {
		mine = []int{g.rng.IntN(nblocks)}
	}
	b := pick(g, mine)
	top := min(size, (b+1)*block) - 2 // below the broadcast address or the next block
	span := min(16, top-b*block-2)
	for range 20 {
		off := top - g.rng.IntN(max(1, span))
		a := addrAt(n.subnet, off)
		if !used[a.String()] && off > 1 {
			return a.String()
		}
	}
	return addrAt(n.subnet, top).String()
}

func (g *Gen) runSpec(hosts []string, batch []RunSpec) (RunSpec, bool) {
	h := pick(g, hosts)
	nets := g.netsOn(h)
	if len(nets) == 0 {
		return RunSpec{}, false
	}
	n := pick(g, nets)
	g.sh.seq++
	// Not a hex string: docker rm, stop and start take an ID prefix for a
	// name they do not know, and the generator names containers whose run
	// was refused ("c2" once removed a container with ID c27cfdb9...).
	r := RunSpec{Name: fmt.Sprintf("ctr%d", g.sh.seq), Host: h, Net: n.key(), Policy: g.pct("policy")}
	if g.pct("fixed") {
		r.IP = g.fixedIP(n, h, batch)
	}
	return r, true
}

func (g *Gen) buildBurst(op Op) (Op, bool) {
	ring := g.ringHosts()
	var nets []*snet
	for _, k := range sortedKeys(g.sh.nets) {
		n := g.sh.nets[k]
		if n.subnet.Bits() > 24 {
			continue
		}
		on := 0
		for _, h := range ring {
			if n.defined || n.hosts[h] {
				on++
			}
		}
		if on >= 2 {
			nets = append(nets, n)
		}
	}
	if len(nets) == 0 {
		return op, false
	}
	g.sh.seq++
	burst := g.sh.seq
	for i := range 20 {
		n := pick(g, nets)
		var hs []string
		for _, h := range ring {
			if n.defined || n.hosts[h] {
				hs = append(hs, h)
			}
		}
		op.Runs = append(op.Runs, RunSpec{Name: fmt.Sprintf("b%d-%d", burst, i), Host: hs[i%len(hs)], Net: n.key()})
	}
	op.Host = ""
	return op, true
}

func (g *Gen) buildConnect(op Op) (Op, bool) {
	names := g.ctrNames(func(c *sctr) bool { return c.running })
	g.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, name := range names {
		c := g.sh.ctrs[name]
		var cands []*snet
		for _, n := range g.netsOn(c.host) {
			if slices.Contains(c.nets, n.key()) {
				continue
			}
			overlaps := false
			for _, k := range c.nets {
				if o := g.sh.nets[k]; o != nil && o.subnet.Overlaps(n.subnet) {
					overlaps = true
				}
			}
			if !overlaps {
				cands = append(cands, n)
			}
		}
		if len(cands) == 0 {
			continue
		}
		n := pick(g, cands)
		op.Container, op.Host, op.Tenant, op.Network = name, c.host, n.tenant, n.name
		if g.pct("fixed") {
			op.IP = g.fixedIP(n, c.host, nil)
		}
		return op, true
	}
	return op, false
}

// intend records what op means to do.
func (g *Gen) intend(op Op) {
	sh := &g.sh
	switch op.Kind {
	case TenantCreate:
		if slices.Contains(tenantPool, op.Tenant) {
			sh.tenants[op.Tenant] = true
		}
	case TenantRm:
		for _, n := range sh.nets {
			if n.tenant == op.Tenant && n.defined {
				return
			}
		}
		delete(sh.tenants, op.Tenant)
	case NetCreate:
		p, err := netip.ParsePrefix(op.Subnet)
		if !sh.tenants[op.Tenant] || !networkRule.MatchString(op.Network) || err != nil || !usable(p) {
			return
		}
		if _, exists := sh.nets[op.Key()]; exists || g.overlaps(op.Tenant, p) {
			return
		}
		sh.nets[op.Key()] = &snet{tenant: op.Tenant, name: op.Network, subnet: p, defined: true}
	case NetRm:
		if len(g.users(op.Key())) == 0 {
			delete(sh.nets, op.Key())
		}
	case HandNetCreate:
		if !slices.Contains(tenantPool, op.Tenant) || !networkRule.MatchString(op.Network) {
			return
		}
		p := netip.MustParsePrefix(op.Subnet)
		n := sh.nets[op.Key()]
		if n == nil {
			if g.overlaps(op.Tenant, p) {
				return
			}
			n = &snet{tenant: op.Tenant, name: op.Network, subnet: p, hosts: map[string]bool{}}
			sh.nets[op.Key()] = n
		}
		if n.defined || n.subnet != p {
			return
		}
		for _, h := range op.Hosts {
			n.hosts[h] = true
		}
	case HandNetRm:
		if len(g.users(op.Key())) == 0 {
			delete(sh.nets, op.Key())
		}
	case RunOne, RunMany, Burst:
		for _, r := range op.Runs {
			c := &sctr{host: r.Host, nets: []string{r.Net}, fixed: map[string]string{}, running: true, policy: r.Policy}
			if r.IP != "" {
				c.fixed[r.Net] = r.IP
			}
			sh.ctrs[r.Name] = c
		}
	case Stop:
		sh.ctrs[op.Container].running = false
	case Start, Restart:
		sh.ctrs[op.Container].running = true
	case Remove:
		delete(sh.ctrs, op.Container)
	case RemoveMany:
		for _, r := range op.Runs {
			delete(sh.ctrs, r.Name)
		}
	case Connect:
		c := sh.ctrs[op.Container]
		c.nets = append(c.nets, op.Key())
		if op.IP != "" {
			c.fixed[op.Key()] = op.IP
		}
	case Disconnect:
		c := sh.ctrs[op.Container]
		c.nets = slices.DeleteFunc(c.nets, func(k string) bool { return k == op.Key() })
		delete(c.fixed, op.Key())
	case RestartDocker:
		for _, c := range sh.ctrs {
			if c.host == op.Host {
				c.running = c.running && c.policy // --restart unless-stopped brings it back
			}
		}
	case Cut:
		sh.cut, sh.cutSince = op.Host, g.step
	case Heal:
		sh.cut = ""
	case KillHost:
		sh.killed[op.Host] = true
		sh.toRemove = op.Host
		for name, c := range sh.ctrs {
			if c.host == op.Host {
				delete(sh.ctrs, name)
			}
		}
		for _, n := range sh.nets {
			delete(n.hosts, op.Host)
		}
	case RemoveHost:
		if op.Target == sh.toRemove {
			sh.toRemove = ""
		}
	}
}

// usable reports whether p is a subnet the generator draws as valid.
func usable(p netip.Prefix) bool {
	return p == p.Masked() && p.Bits() >= 16 && p.Bits() <= 30 && netip.MustParsePrefix("10.0.0.0/8").Contains(p.Addr())
}

func (g *Gen) overlaps(tenant string, p netip.Prefix) bool {
	for _, n := range g.sh.nets {
		if n.tenant == tenant && n.subnet.Overlaps(p) {
			return true
		}
	}
	return false
}

// addrAt is the address off positions into p.
func addrAt(p netip.Prefix, off int) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(off)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// lastAddr is p's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr { return addrAt(p, 1<<(32-p.Bits())-1) }
