package fuzz

import (
	"net/netip"
	"slices"
	"strings"
)

// The model's predictions: before each command, must it succeed, must it
// be refused, or may it go either way.

func (m *Model) predictTenantCreate(t string) verdict {
	switch {
	case !tenantRule.MatchString(t):
		return refuse("tenant name %q breaks the rule: 1-32 of a-z, 0-9 and '-', starting and ending with a letter or digit", t)
	case m.tenants[t]:
		return refuse("tenant %s exists", t)
	}
	return ok("new tenant %s", t)
}

func (m *Model) predictTenantRm(t string) verdict {
	if !m.tenants[t] {
		return refuse("no tenant %s", t)
	}
	for _, n := range m.tenantNets(t) {
		if n.defined {
			return refuse("tenant %s has network %s", t, n.key())
		}
		return m.tolerate("10.8", refuse("tenant %s has hand-made network %s", t, n.key()))
	}
	if at, rm := m.netRmAt[t]; rm && m.step-at <= 1 {
		// Every host takes a removed network out of its engine within
		// seconds; until then tenant rm is refused, saying so.
		return maybe("tenant %s's last network was removed a moment ago (step %d)", t, at)
	}
	return ok("tenant %s has no networks", t)
}

// subnetRule checks a subnet as tenetctl and the driver must: an IPv4
// network in CIDR form, /30 or larger, not 0.0.0.0/0.
func (m *Model) subnetRule(s string) (netip.Prefix, *verdict) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4() || p != p.Masked() || p.Bits() > 30:
		v := refuse("subnet %q is not an IPv4 network in CIDR form, /30 or larger", s)
		return p, &v
	case p.Bits() == 0:
		v := m.tolerate("10.8", refuse("subnet %s covers every address", s))
		return p, &v
	}
	return p, nil
}

func (m *Model) overlapping(t, key string, p netip.Prefix) *mnet {
	for _, n := range m.tenantNets(t) {
		if n.key() != key && n.subnet.Overlaps(p) {
			return n
		}
	}
	return nil
}

// dockerNameOwner names the network (other than key) whose Docker name is
// name, if any.
func (m *Model) dockerNameOwner(name, key string) string {
	for _, k := range sortedKeys(m.nets) {
		if n := m.nets[k]; k != key && n.docker == name {
			return k
		}
	}
	return ""
}

func (m *Model) predictNetCreate(op Op) verdict {
	t, n, key := op.Tenant, op.Network, op.Key()
	switch {
	case !tenantRule.MatchString(t):
		return refuse("tenant name %q breaks the rule", t)
	case !networkRule.MatchString(n):
		return refuse("network name %q breaks the rule: 1-64 of a-z, 0-9, '_', '.' and '-', starting and ending with a letter or digit", n)
	case !m.tenants[t]:
		return refuse("no tenant %s", t)
	}
	p, bad := m.subnetRule(op.Subnet)
	if bad != nil {
		return *bad
	}
	if o := m.nets[key]; o != nil {
		if o.defined {
			return refuse("network %s exists", key)
		}
		if o.subnet != p {
			return refuse("hand-made network %s has subnet %s", key, o.subnet)
		}
		return maybe("hand-made network %s exists with this subnet", key)
	}
	if o := m.overlapping(t, key, p); o != nil {
		return refuse("subnet %s overlaps network %s (%s) of the same tenant", p, o.key(), o.subnet)
	}
	if o := m.dockerNameOwner(HandName(t, n), key); o != "" {
		return maybe("Docker name %s is network %s's: refused, or done under another Docker name", HandName(t, n), o)
	}
	return ok("tenant %s exists, the name and subnet are free", t)
}

// attached lists the containers with an attachment to key.
func (m *Model) attached(key string) []*mctr {
	var out []*mctr
	for _, name := range sortedKeys(m.ctrs) {
		if c := m.ctrs[name]; c.att(key) != nil {
			out = append(out, c)
		}
	}
	return out
}

func (m *Model) predictNetRm(key string) verdict {
	n := m.nets[key]
	if n == nil || !n.defined {
		return refuse("no network %s defined", key)
	}
	v := ok("no container is attached to %s", key)
	for _, c := range m.attached(key) {
		if c.att(key).pending {
			continue // no endpoint: only in Docker's configuration
		}
		switch {
		case (c.running || c.unsure) && !c.dead && c.host != m.cut:
			return refuse("container %s on %s is attached", c.name, c.host)
		case c.running || c.unsure:
			v = maybe("container %s on %s (cut off or dead) is attached", c.name, c.host)
		}
	}
	return v
}

func (m *Model) predictHandNet(op Op, h string) verdict {
	t, n, key, name := op.Tenant, op.Network, op.Key(), HandName(op.Tenant, op.Network)
	want, unsure := m.engineNames(h)
	switch {
	case m.killed[h]:
		return refuse("host %s is dead", h)
	case want[name] != nil:
		return refuse("engine %s has a network called %s", h, name)
	case unsure[name]:
		return maybe("engine %s may have a network called %s (it was cut off)", h, name)
	case !tenantRule.MatchString(t):
		return refuse("tenant name %q breaks the rule", t)
	case !networkRule.MatchString(n):
		return refuse("network name %q breaks the rule", n)
	}
	p, bad := m.subnetRule(op.Subnet)
	if bad != nil {
		return *bad
	}
	if o := m.nets[key]; o != nil {
		if o.defined {
			return maybe("network %s is defined with tenetctl", key)
		}
		if o.subnet != p {
			return refuse("network %s has subnet %s on %v", key, o.subnet, sortedKeys(o.engines))
		}
	} else if o := m.overlapping(t, key, p); o != nil {
		return refuse("subnet %s overlaps network %s (%s) of the same tenant", p, o.key(), o.subnet)
	}
	if len(m.tenants) > 0 && !m.tenants[t] {
		return m.tolerate("10.8", refuse("tenant %s is not defined while tenants are", t))
	}
	if m.nets[key] != nil {
		return ok("the same network as on %v", sortedKeys(m.nets[key].engines))
	}
	return ok("a new network of tenant %s", t)
}

func (m *Model) predictHandNetRm(key, h string) verdict {
	if m.engineHas(h, key) != "yes" || m.nets[key].defined {
		return refuse("engine %s has no hand-made network %s", h, key)
	}
	for _, c := range m.attached(key) {
		if c.host == h && (c.running || c.unsure) && !c.att(key).pending {
			return refuse("container %s on %s is attached", c.name, h)
		}
	}
	return ok("no running container on %s is attached", h)
}

// usedIPs maps the addresses in tenant t's space to their holders:
// running containers, containers of dead hosts, and fixed addresses of
// containers running but not yet observed.
func (m *Model) usedIPs(t string) map[netip.Addr]string {
	used := map[netip.Addr]string{}
	for _, name := range sortedKeys(m.ctrs) {
		c := m.ctrs[name]
		if !c.running && !c.dead {
			continue
		}
		for _, a := range c.atts {
			if strings.HasPrefix(a.key, t+"/") && a.ip.IsValid() {
				used[a.ip] = c.name
			}
		}
	}
	return used
}

// poolFree is how many addresses network key has left: the subnet less its
// network, broadcast and gateway addresses and the addresses in use.
func (m *Model) poolFree(key string) int {
	n := m.nets[key]
	if n == nil {
		return 0
	}
	free := 1<<(32-n.subnet.Bits()) - 3
	for _, c := range m.attached(key) {
		if (c.running || c.dead || c.unsure) && !c.att(key).pending {
			free--
		}
	}
	for _, a := range m.limbo[n.tenant] {
		if n.subnet.Contains(a) {
			free--
		}
	}
	return free
}

// predictAddr judges an address request on network key from host h: fixed
// (--ip) or automatic (needing `need` free addresses, counting the others
// asked for at the same time). self is the container asking (its own
// addresses are not taken by another).
func (m *Model) predictAddr(key, h string, fixed string, need int, self string) verdict {
	n := m.nets[key]
	if n == nil {
		return maybe("the model has no network %s", key)
	}
	if fixed != "" {
		a, err := netip.ParseAddr(fixed)
		switch {
		case err != nil || !n.subnet.Contains(a):
			return refuse("--ip %s is not in subnet %s", fixed, n.subnet)
		case a == n.subnet.Addr():
			return refuse("--ip %s is the network address of %s", fixed, n.subnet)
		case a == n.subnet.Addr().Next():
			return m.tolerate("10.7", refuse("--ip %s is the gateway of %s", fixed, n.subnet))
		case a == lastAddr(n.subnet):
			return m.tolerate("10.7", refuse("--ip %s is the broadcast address of %s", fixed, n.subnet))
		}
		if holder, taken := m.usedIPs(n.tenant)[a]; taken && holder != self {
			return refuse("%s already has %s in tenant %s", holder, fixed, n.tenant)
		}
		if slices.Contains(m.limbo[n.tenant], a) {
			return maybeAddr("%s belonged to a container of a removed host", fixed)
		}
		return maybeAddr("--ip %s is free; this host may not own its block", fixed)
	}
	free := m.poolFree(key)
	switch {
	case free <= 0:
		return refuse("pool %s of %s is full", n.subnet, key)
	case h == m.cut:
		return maybeAddr("host %s is cut off: it may need a block from another host", h)
	case m.outOfReach(h) != "":
		return maybeAddr("host %s is out of reach of %s: it may own the space %s needs", m.outOfReach(h), h, h)
	case free < need:
		return maybeAddr("pool %s has %d free addresses for %d containers", n.subnet, free, need)
	}
	return m.tolerate("10.3", ok("pool %s of %s has %d free addresses", n.subnet, key, free))
}

// outOfReach names a host other than h that may own part of a pool and
// that h cannot get space from while it lasts: the host cut off (seen from
// the other side), or a killed host not yet removed. Ownership moves only
// by its owner's act, and a host merely unreachable keeps its space
// (ipam/doc.go, Partition and Dead hosts): a request that needs that space
// is refused until the cut heals or the host is removed. The model does not
// track which host owns what, so such a request may go either way.
func (m *Model) outOfReach(h string) string {
	if m.cut != "" && m.cut != h {
		return m.cut
	}
	for _, k := range sortedKeys(m.killed) {
		if k != h && !m.removed[k] {
			return k
		}
	}
	return ""
}

// worst combines verdicts: any refusal wins, then any "either".
func worst(vs ...verdict) verdict {
	out := vs[0]
	for _, v := range vs[1:] {
		if v.e == mustFail {
			return v
		}
		if v.e == either && (out.e == mustOK || out.ipamOnly && !v.ipamOnly) {
			out = v
		}
	}
	return out
}

func (m *Model) predictRun(r RunSpec, batch []RunSpec) verdict {
	if m.killed[r.Host] {
		return refuse("host %s is dead", r.Host)
	}
	if m.ctrs[r.Name] != nil {
		return refuse("container %s exists", r.Name)
	}
	switch m.engineHas(r.Host, r.Net) {
	case "no":
		return refuse("engine %s has no network %s", r.Host, r.Net)
	case "unsure":
		return maybe("engine %s may have network %s (it was cut off)", r.Host, r.Net)
	}
	need := 0
	for _, o := range batch {
		if o.Net == r.Net && o.IP == "" {
			need++
		}
	}
	if r.IP != "" {
		for _, o := range batch {
			if o.Name != r.Name && o.IP == r.IP && strings.HasPrefix(o.Net, m.nets[r.Net].tenant+"/") {
				v := m.predictAddr(r.Net, r.Host, r.IP, 0, r.Name)
				if v.e == mustFail {
					return v
				}
				return maybeAddr("%s asks for %s at the same time: at most one gets it", o.Name, r.IP)
			}
		}
	}
	return m.predictAddr(r.Net, r.Host, r.IP, max(need, 1), r.Name)
}

// predictStart judges starting stopped container c.
func (m *Model) predictStart(c *mctr) verdict {
	vs := []verdict{ok("%s is stopped and its networks are there", c.name)}
	for _, a := range c.atts {
		if a.orphan || m.engineHas(c.host, a.key) != "yes" {
			vs = append(vs, maybe("network %s of %s was removed or may be missing", a.key, c.name))
			continue
		}
		fixed := ""
		if a.fixed.IsValid() {
			fixed = a.fixed.String()
		}
		vs = append(vs, m.predictAddr(a.key, c.host, fixed, 1, c.name))
	}
	return worst(vs...)
}

func (m *Model) predictConnect(op Op) verdict {
	c := m.ctrs[op.Container]
	switch {
	case c == nil || c.dead || c.host != op.Host:
		return refuse("no container %s on %s", op.Container, op.Host)
	case c.att(op.Key()) != nil:
		return refuse("%s is already connected to %s", c.name, op.Key())
	}
	switch m.engineHas(c.host, op.Key()) {
	case "no":
		return refuse("engine %s has no network %s", c.host, op.Key())
	case "unsure":
		return maybe("engine %s may have network %s", c.host, op.Key())
	}
	if !c.running {
		return maybe("%s is stopped", c.name)
	}
	return m.predictAddr(op.Key(), c.host, op.IP, 1, c.name)
}
