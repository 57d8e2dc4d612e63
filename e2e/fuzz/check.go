package fuzz

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// The checks after each step: an observation (observe.go) against the
// model, and the reachability probes the model plans.

// view is the hosts host h's tenetd can see: alive and on the underlay
// with it.
func (m *Model) view(h string) []string {
	if h == m.cut {
		return []string{h}
	}
	var out []string
	for _, g := range m.hosts {
		if !m.killed[g] && g != m.cut {
			out = append(out, g)
		}
	}
	return out
}

// CtlHosts are the hosts whose tenetctl listings are checked.
func (m *Model) CtlHosts() []string {
	var out []string
	for _, h := range m.hosts {
		if !m.killed[h] {
			out = append(out, h)
		}
	}
	return out
}

// LiveHosts are the hosts not killed.
func (m *Model) LiveHosts() []string { return m.CtlHosts() }

// keyOf maps a Docker network name on an engine to its tenant/network.
func keyOf(e *EngineObs, name string) string {
	if n, ok := e.Nets[name]; ok {
		return n.Key()
	}
	return ""
}

// checkContainers compares each live engine's containers with the model
// and adopts what the model leaves open: addresses given automatically,
// MACs, PIDs, and the state of containers marked unsure. Immediate.
func (m *Model) checkContainers(obs *Obs) []Violation {
	var vs []Violation
	for _, h := range m.LiveHosts() {
		e := obs.Engines[h]
		if e == nil {
			continue
		}
		for _, name := range sortedKeys(m.ctrs) {
			c := m.ctrs[name]
			if c.host != h || c.dead {
				continue
			}
			o, found := e.Ctrs[name]
			if !found {
				vs = append(vs, Violation{"containers", fmt.Sprintf("%s exists on %s", name, h), "no such container"})
				continue
			}
			if c.unsure {
				if c.running && !o.Running {
					m.stop(c)
				}
				c.running, c.unsure = o.Running, false
			}
			if o.Running != c.running {
				vs = append(vs, Violation{"containers", fmt.Sprintf("%s on %s running: %t", name, h, c.running),
					fmt.Sprintf("running: %t", o.Running)})
				continue
			}
			if !c.running {
				continue
			}
			c.pid = o.PID
			// A pending network (a connect the IPAM refused) is listed
			// without an address, until a start gives it one.
			for _, a := range c.atts {
				if ao, listed := o.Atts[m.dockerName(a.key)]; a.pending && listed && ao.IP != "" && c.started > a.since {
					a.pending = false
				}
			}
			var want, got []string
			for _, a := range c.atts {
				if !a.pending {
					want = append(want, m.dockerName(a.key))
				}
			}
			for n, ao := range o.Atts {
				if a := c.att(keyOf(e, n)); a == nil || !a.pending || ao.IP != "" {
					got = append(got, n)
				}
			}
			sort.Strings(want)
			sort.Strings(got)
			if !slices.Equal(want, got) {
				vs = append(vs, Violation{"containers", fmt.Sprintf("%s on %s is on networks %v (with addresses)", name, h, want), fmt.Sprintf("on %v", got)})
				continue
			}
			for _, a := range c.atts {
				if a.pending {
					continue
				}
				ao := o.Atts[m.dockerName(a.key)]
				ip, err := netip.ParseAddr(ao.IP)
				n := m.nets[a.key]
				switch {
				case err != nil:
					vs = append(vs, Violation{"containers", fmt.Sprintf("%s has an address on %s", name, a.key), fmt.Sprintf("address %q", ao.IP)})
					continue
				case a.fixed.IsValid() && ip != a.fixed:
					vs = append(vs, Violation{"containers", fmt.Sprintf("%s has --ip %s on %s", name, a.fixed, a.key), "address " + ao.IP})
				case n != nil && (!n.subnet.Contains(ip) || ip == n.subnet.Addr() || ip == n.subnet.Addr().Next() || ip == lastAddr(n.subnet)):
					if !a.fixed.IsValid() {
						vs = append(vs, Violation{"addresses", fmt.Sprintf("%s gets a host address of %s other than the network, gateway and broadcast ones", name, n.subnet),
							"address " + ao.IP})
					}
				}
				a.ip, a.mac = ip, ao.MAC
			}
		}
		for name := range e.Ctrs {
			if c := m.ctrs[name]; c == nil || c.host != h {
				vs = append(vs, Violation{"containers", fmt.Sprintf("no container %s on %s", name, h), "it exists"})
			}
		}
	}
	return vs
}

// checkAddresses: no two running containers (or containers of dead hosts)
// of one tenant have the same address. Immediate.
func (m *Model) checkAddresses() []Violation {
	var vs []Violation
	seen := map[string]string{}
	for _, name := range sortedKeys(m.ctrs) {
		c := m.ctrs[name]
		if !c.running && !c.dead {
			continue
		}
		for _, a := range c.atts {
			n := m.nets[a.key]
			if n == nil || !a.ip.IsValid() {
				continue
			}
			id := n.tenant + " " + a.ip.String()
			if other, dup := seen[id]; dup {
				vs = append(vs, Violation{"addresses", fmt.Sprintf("addresses unique in tenant %s", n.tenant),
					fmt.Sprintf("%s and %s both have %s", other, name, a.ip)})
			}
			seen[id] = name
		}
	}
	return vs
}

// checkEngineNets compares each live engine's tenet networks with the
// model. Bounded: definitions reach engines within the registry's period.
func (m *Model) checkEngineNets(obs *Obs) []Violation {
	var vs []Violation
	for _, h := range m.LiveHosts() {
		e := obs.Engines[h]
		if e == nil {
			continue
		}
		want, unsure := m.engineNames(h)
		for _, name := range sortedKeys(want) {
			n := want[name]
			o, found := e.Nets[name]
			exp := fmt.Sprintf("engine %s has network %s (tenant %s, network %s, subnet %s)", h, name, n.tenant, n.name, n.subnet)
			switch {
			case !found:
				vs = append(vs, Violation{"engine-networks", exp, "no such network"})
			case o.Tenant != n.tenant || o.Network != n.name || o.Subnet != n.subnet.String():
				vs = append(vs, Violation{"engine-networks", exp, fmt.Sprintf("tenant %s, network %s, subnet %s", o.Tenant, o.Network, o.Subnet)})
			}
		}
		for _, name := range sortedKeys(e.Nets) {
			if want[name] == nil && !unsure[name] {
				o := e.Nets[name]
				vs = append(vs, Violation{"engine-networks", fmt.Sprintf("engine %s has no network %s", h, name),
					fmt.Sprintf("it has it (tenant %s, network %s, subnet %s)", o.Tenant, o.Network, o.Subnet)})
			}
		}
	}
	return vs
}

// checkListings compares tenetctl's listings on each host with what that
// host can see. Bounded.
func (m *Model) checkListings(obs *Obs) []Violation {
	var vs []Violation
	for _, h := range m.CtlHosts() {
		c := obs.Ctl[h]
		if c == nil {
			continue
		}
		bad := func(what, exp, got string) {
			vs = append(vs, Violation{"tenetctl", fmt.Sprintf("on %s, tenetctl %s ls --json: %s", h, what, exp), got})
		}
		if c.Err != "" {
			bad("*", "answers", c.Err)
			continue
		}
		view := m.view(h)
		// Tenants: the ring's, unless this host is cut off.
		if h != m.cut {
			var got []string
			for _, t := range c.Tenants {
				got = append(got, t.Tenant)
			}
			sort.Strings(got)
			if want := sortedKeys(m.tenants); !slices.Equal(got, want) {
				bad("tenant", fmt.Sprintf("tenants %v", want), fmt.Sprintf("%v", got))
			}
		}
		// Networks: those some engine in view has, with those hosts.
		type nw struct {
			subnet string
			hosts  []string
		}
		wantNets := map[string]*nw{}
		for _, g := range view {
			e := obs.Engines[g]
			if e == nil {
				continue
			}
			for _, name := range sortedKeys(e.Nets) {
				o := e.Nets[name]
				w := wantNets[o.Key()]
				if w == nil {
					w = &nw{subnet: o.Subnet}
					wantNets[o.Key()] = w
				}
				w.hosts = append(w.hosts, g)
			}
		}
		gotNets := map[string]*nw{}
		for _, n := range c.Networks {
			hs := slices.Clone(n.Hosts)
			sort.Strings(hs)
			gotNets[n.Tenant+"/"+n.Name] = &nw{subnet: n.Subnet, hosts: hs}
		}
		for _, k := range sortedKeys(wantNets) {
			w, g := wantNets[k], gotNets[k]
			sort.Strings(w.hosts)
			switch {
			case g == nil:
				bad("network", fmt.Sprintf("lists %s (%s, on %v)", k, w.subnet, w.hosts), "not listed")
			case g.subnet != w.subnet || !slices.Equal(g.hosts, w.hosts):
				bad("network", fmt.Sprintf("lists %s with subnet %s on hosts %v", k, w.subnet, w.hosts),
					fmt.Sprintf("subnet %s on hosts %v", g.subnet, g.hosts))
			}
		}
		for _, k := range sortedKeys(gotNets) {
			if wantNets[k] == nil {
				bad("network", fmt.Sprintf("does not list %s (no engine in view %v has it)", k, view),
					fmt.Sprintf("listed with subnet %s on hosts %v", gotNets[k].subnet, gotNets[k].hosts))
			}
		}
		// Endpoints: every running container's on hosts in view, remote
		// ones on networks this host's engine has; others only as
		// host-down.
		var mine map[string]bool
		if e := obs.Engines[h]; e != nil {
			mine = map[string]bool{}
			for _, n := range e.Nets {
				mine[n.Key()] = true
			}
		}
		wantEps := map[string]string{} // network ip host -> mac
		for _, g := range view {
			e := obs.Engines[g]
			if e == nil || mine == nil {
				continue
			}
			for name, co := range e.Ctrs {
				if !co.Running {
					continue
				}
				for dn, a := range co.Atts {
					key := keyOf(e, dn)
					if key == "" || a.IP == "" || (g != h && !mine[key]) {
						continue // a.IP "": a connect the IPAM refused, no endpoint
					}
					wantEps[key+" "+a.IP+" "+g] = strings.ToLower(a.MAC) + " (" + name + ")"
				}
			}
		}
		gotEps := map[string]bool{}
		for _, ep := range c.Endpoints {
			id := ep.Network + " " + ep.IP + " " + ep.Host
			gotEps[id] = true
			want, expected := wantEps[id]
			switch {
			case expected && ep.State != "up":
				bad("endpoint", fmt.Sprintf("lists %s (%s) as up", id, want), "state "+ep.State)
			case expected && !strings.HasPrefix(want, strings.ToLower(ep.MAC)+" "):
				bad("endpoint", fmt.Sprintf("lists %s with MAC %s", id, want), "MAC "+ep.MAC)
			case !expected && (ep.State != "host-down" || slices.Contains(view, ep.Host)):
				bad("endpoint", fmt.Sprintf("does not list %s as %s (no such running container seen from here; view %v)", id, ep.State, view),
					fmt.Sprintf("listed: id %.12s mac %s state %s", ep.ID, ep.MAC, ep.State))
			}
		}
		for _, id := range sortedKeys(wantEps) {
			if !gotEps[id] {
				bad("endpoint", fmt.Sprintf("lists %s %s", id, wantEps[id]), "not listed")
			}
		}
		// Hosts: up exactly those in view; killed ones down until removed.
		gotUp := []string{}
		for _, hi := range c.Hosts {
			switch {
			case hi.State == "up":
				gotUp = append(gotUp, hi.Name)
			case m.removed[hi.Name] && !m.tol["10.9"]:
				bad("host", fmt.Sprintf("does not list %s (removed)", hi.Name), "listed as "+hi.State)
			case slices.Contains(view, hi.Name):
				bad("host", fmt.Sprintf("lists %s as up", hi.Name), "state "+hi.State)
			}
		}
		sort.Strings(gotUp)
		if !slices.Equal(gotUp, view) {
			bad("host", fmt.Sprintf("up: %v", view), fmt.Sprintf("up: %v", gotUp))
		}
	}
	return vs
}

// Probe is one reachability expectation: from a container (its network
// namespace, by PID) to an address.
type Probe struct {
	ID    string // "src>ip"
	Host  string // the source's host
	From  string
	PID   int
	IP    string
	Reach bool          // true: must answer within Bound; false: must never answer
	Bound time.Duration // for Reach
	Why   string
}

// Probes plans the reachability checks after a step: every pair of running
// containers sharing a network, on hosts that can reach each other, must
// answer both ways, within 2 s of the step's end (longer after healing a
// cut, or for a tolerated restart); and for each source, addresses it must
// never reach: containers of other networks and tenants, containers across
// a cut, stopped containers' old addresses. With full, every such pair is
// probed (and negPerSrc negatives per source); otherwise every pair
// involving a container or host the step touched, plus a sample of
// sampleOthers other pairs and as many negatives.
func (m *Model) Probes(rng *rand.Rand, negPerSrc int, full bool, sampleOthers int) []Probe {
	var probes, others, otherNeg []Probe
	reachable := func(a, b string) bool {
		return a == b || (!m.killed[a] && !m.killed[b] && a != m.cut && b != m.cut)
	}
	touched := func(c *mctr) bool { return full || m.touched[c.name] || m.touchedHosts[c.host] }
	running := []*mctr{}
	for _, name := range sortedKeys(m.ctrs) {
		if c := m.ctrs[name]; c.running && !c.dead && !m.killed[c.host] {
			running = append(running, c)
		}
	}
	for _, src := range running {
		if src.pid <= 0 {
			continue
		}
		keys := map[string]bool{}
		own := map[netip.Addr]bool{}
		for _, a := range src.atts {
			if !a.pending {
				keys[a.key] = true
			}
			own[a.ip] = true
		}
		pos := map[netip.Addr]bool{}
		for _, dst := range running {
			if dst == src || !reachable(src.host, dst.host) {
				continue
			}
			for _, a := range dst.atts {
				if !keys[a.key] || !a.ip.IsValid() || own[a.ip] || pos[a.ip] {
					continue
				}
				pos[a.ip] = true
				bound := 2 * time.Second
				why := fmt.Sprintf("%s and %s (on %s) share network %s", src.name, dst.name, dst.host, a.key)
				if m.tol["10.1"] && (src.started == m.step || dst.started == m.step) {
					bound = 60 * time.Second
					why += "; one was (re)started just now (tolerated: issue 10.1)"
				}
				p := Probe{ID: src.name + ">" + a.ip.String(), Host: src.host, From: src.name, PID: src.pid,
					IP: a.ip.String(), Reach: true, Bound: bound, Why: why}
				if touched(src) || touched(dst) {
					probes = append(probes, p)
				} else {
					others = append(others, p)
				}
			}
		}
		var neg []Probe
		seen := map[netip.Addr]bool{}
		add := func(ip netip.Addr, why string) {
			if !ip.IsValid() || pos[ip] || own[ip] || seen[ip] {
				return
			}
			seen[ip] = true
			neg = append(neg, Probe{ID: src.name + ">" + ip.String(), Host: src.host, From: src.name, PID: src.pid,
				IP: ip.String(), Why: why})
		}
		for _, dst := range running {
			if dst == src {
				continue
			}
			for _, a := range dst.atts {
				switch {
				case !keys[a.key]:
					add(a.ip, fmt.Sprintf("%s has no network with %s (%s of %s on %s)", src.name, dst.name, a.key, dst.name, dst.host))
				case !reachable(src.host, dst.host):
					add(a.ip, fmt.Sprintf("%s (on %s) and %s (on %s) are on two sides of a cut", src.name, src.host, dst.name, dst.host))
				}
			}
		}
		for _, r := range m.rel {
			add(r.ip, fmt.Sprintf("%s was released by a stopped or removed container", r.ip))
		}
		rng.Shuffle(len(neg), func(i, j int) { neg[i], neg[j] = neg[j], neg[i] })
		if touched(src) {
			probes = append(probes, neg[:min(len(neg), negPerSrc)]...)
		} else {
			otherNeg = append(otherNeg, neg[:min(len(neg), 1)]...)
		}
	}
	for _, pool := range [][]Probe{others, otherNeg} {
		rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
		probes = append(probes, pool[:min(len(pool), sampleOthers)]...)
	}
	return probes
}

// probeScript pings each probe's address once from its source's network
// namespace (waiting 0.5 s for the answer), all at once, and prints
// "N y" or "N n" for probe number N.
func probeScript(probes []Probe) string {
	byPID := map[int][]int{}
	for i, p := range probes {
		byPID[p.PID] = append(byPID[p.PID], i)
	}
	var b strings.Builder
	for _, pid := range sortedInts(byPID) {
		var items []string
		for _, i := range byPID[pid] {
			items = append(items, fmt.Sprintf("%d=%s", i, probes[i].IP))
		}
		fmt.Fprintf(&b, "nsenter --net=/proc/%d/ns/net sh -c 'for x in %s; do (ping -n -q -c1 -W0.5 ${x#*=} >/dev/null 2>&1 && echo ${x%%%%=*} y || echo ${x%%%%=*} n) & done; wait' &\n",
			pid, strings.Join(items, " "))
	}
	b.WriteString("wait\n")
	return b.String()
}

func sortedInts[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}
