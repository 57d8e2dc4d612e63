package fuzz

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// The model is what the cluster must look like: tenants, networks (defined
// with tenetctl or made by hand on some engines), containers (where they
// run, their networks, the addresses they asked for and got), hosts (cut,
// killed, removed). Step runs one op through an Exec, predicting each
// command's outcome before it runs (must succeed, must be refused, or
// either), and then folds what happened into the model. The checks
// (check.go) compare the model with what the cluster shows after each step.

// Result is what one command did.
type Result struct {
	Code int    // exit code; -1 when it could not be run at all
	Out  string // its output
}

// OK reports whether the command succeeded.
func (r Result) OK() bool { return r.Code == 0 }

// Exec runs commands on the cluster for the model.
type Exec interface {
	// Tenetctl runs tenetctl with args on host.
	Tenetctl(ctx context.Context, host string, args ...string) Result
	// Docker runs the docker CLI with args against host's engine.
	Docker(ctx context.Context, host string, args ...string) Result
	// Fault does op, one of kill-tenetd, restart-docker, cut, heal and
	// kill-host.
	Fault(ctx context.Context, op Op) error
}

// Violation is one way the cluster differs from the model.
type Violation struct {
	Check    string // outcome, containers, addresses, engine-networks, tenetctl, reach, pids, logs, kernel, leaks
	Expected string
	Observed string
}

func (v Violation) String() string {
	return fmt.Sprintf("[%s]\n    expected: %s\n    observed: %s", v.Check, v.Expected, v.Observed)
}

// Tolerances relax the model where a known, open issue makes it fail, so
// that a long run can look past it. Each is named by its point in issue 10:
//
//	10.1  a (re)started container may be unreachable for up to 60 s (new MAC; a peer's ARP entry stays REACHABLE up to 45 s, then DELAY 5 s and PROBE 3 s)
//	10.3  a container without --ip may fail to start in a pool with free addresses
//	10.7  --ip of the gateway or the broadcast address may be accepted
//	10.8  a hand-made network of an undefined tenant, tenant rm with hand-made networks, host remove of an unknown host, subnet 0.0.0.0/0 may be accepted
//	10.9  a removed host may still be listed as down
type Tolerances map[string]bool

// KnownTolerances are the points Tolerances understands.
var KnownTolerances = []string{"10.1", "10.3", "10.7", "10.8", "10.9"}

// ParseTolerances reads "10.1,10.3".
func ParseTolerances(s string) (Tolerances, error) {
	t := Tolerances{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(KnownTolerances, p) {
			return nil, fmt.Errorf("tolerate %q: %q is not one of %s", s, p, strings.Join(KnownTolerances, ","))
		}
		t[p] = true
	}
	return t, nil
}

type expect int

const (
	mustOK expect = iota
	mustFail
	either
)

type verdict struct {
	e   expect
	why string
	// ipamOnly: for "either", a refusal must come from the IPAM (Docker
	// prefixes its errors "IpamDriver."): an address question may go
	// either way, a refusal for any other reason is a failure.
	ipamOnly bool
}

func ok(why string, a ...any) verdict     { return verdict{mustOK, fmt.Sprintf(why, a...), false} }
func refuse(why string, a ...any) verdict { return verdict{mustFail, fmt.Sprintf(why, a...), false} }
func maybe(why string, a ...any) verdict  { return verdict{either, fmt.Sprintf(why, a...), false} }

// maybeAddr is "either" where only the IPAM may refuse.
func maybeAddr(why string, a ...any) verdict { return verdict{either, fmt.Sprintf(why, a...), true} }

// tolerate turns v into "either" when point is tolerated.
func (m *Model) tolerate(point string, v verdict) verdict {
	if m.tol[point] {
		t := maybe("%s (tolerated: issue %s)", v.why, point)
		t.ipamOnly = point == "10.3"
		return t
	}
	return v
}

var (
	tenantRule  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	networkRule = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
)

type mnet struct {
	tenant, name string
	subnet       netip.Prefix
	internal     bool
	defined      bool
	docker       string          // its Docker network's name
	engines      map[string]bool // hand-made: the engines that have it
	since        int             // step it was defined
}

func (n *mnet) key() string { return n.tenant + "/" + n.name }

type matt struct {
	key    string
	fixed  netip.Addr // --ip, if given
	ip     netip.Addr // as last observed while running
	mac    string
	orphan bool // its network was removed while the container was stopped
}

type mctr struct {
	name, host  string
	running     bool
	policy      bool // --restart unless-stopped
	userStopped bool
	dead        bool // its host was killed
	unsure      bool // running or not, adopt what the next observation says
	atts        []*matt
	pid         int
	started     int // step it was last (re)started: it has a new MAC since
}

func (c *mctr) att(key string) *matt {
	for _, a := range c.atts {
		if a.key == key {
			return a
		}
	}
	return nil
}

type released struct {
	tenant string
	ip     netip.Addr
}

// Model is the expected state of the cluster. Not safe for concurrent use.
type Model struct {
	hosts   []string
	killed  map[string]bool
	removed map[string]bool
	cut     string
	cutAt   int
	healAt  int
	tenants map[string]bool
	nets    map[string]*mnet
	gone    map[string]int  // Docker names of removed definitions: step removed
	odd     map[string]bool // "host name": a Docker network the engine may or may not have
	ctrs    map[string]*mctr
	limbo   map[string][]netip.Addr // tenant: addresses of containers of removed hosts
	rel     []released              // addresses released lately: nothing may answer them
	tol     Tolerances
	step    int
	// lastFault is the step of the last tenetd kill, dockerd restart, cut,
	// heal or host kill, and its kind: the checks allow longer bounds after.
	lastFault     int
	lastFaultKind Kind
	// touched are the containers and hosts the last step acted on: the
	// reachability checks probe every pair involving them.
	touched      map[string]bool
	touchedHosts map[string]bool
}

// NewModel returns the model of a fresh cluster of hosts.
func NewModel(hosts []string, tol Tolerances) *Model {
	return &Model{hosts: hosts, killed: map[string]bool{}, removed: map[string]bool{}, tenants: map[string]bool{},
		nets: map[string]*mnet{}, gone: map[string]int{}, odd: map[string]bool{}, ctrs: map[string]*mctr{}, limbo: map[string][]netip.Addr{},
		tol: tol}
}

// Step runs op through x, judging each command's outcome, and folds the
// outcome into the model. It returns the violations it saw and a line per
// command run, for the operation log.
func (m *Model) Step(ctx context.Context, op Op, x Exec) ([]Violation, []string) {
	m.step++
	st := &stepLog{}
	note := st.note
	m.touch(op)
	switch op.Kind {
	case TenantCreate:
		v := m.predictTenantCreate(op.Tenant)
		r := x.Tenetctl(ctx, op.Host, "tenant", "create", op.Tenant)
		note("tenetctl tenant create "+op.Tenant, v, r)
		if r.OK() {
			m.tenants[op.Tenant] = true
		}
	case TenantRm:
		v := m.predictTenantRm(op.Tenant)
		r := x.Tenetctl(ctx, op.Host, "tenant", "rm", op.Tenant)
		note("tenetctl tenant rm "+op.Tenant, v, r)
		if r.OK() {
			delete(m.tenants, op.Tenant)
		}
	case NetCreate:
		m.stepNetCreate(ctx, op, x, st)
	case NetRm:
		v := m.predictNetRm(op.Key())
		r := x.Tenetctl(ctx, op.Host, "network", "rm", op.Key())
		note("tenetctl network rm "+op.Key(), v, r)
		if r.OK() {
			if n := m.nets[op.Key()]; n != nil && n.defined {
				m.gone[n.docker] = m.step
				m.orphan(op.Key(), nil)
				// A host that cannot hear of it yet, with a container on
				// it, keeps the network until that container stops.
				for _, c := range m.attached(op.Key()) {
					if c.running || c.unsure {
						m.odd[c.host+" "+n.docker] = true
					}
				}
				delete(m.nets, op.Key())
			}
		}
	case HandNetCreate:
		for _, h := range op.Hosts {
			v := m.predictHandNet(op, h)
			r := x.Docker(ctx, h, "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant="+op.Tenant,
				"-o", "tenant="+op.Tenant, "-o", "network="+op.Network, "--subnet", op.Subnet, HandName(op.Tenant, op.Network))
			note(h+": docker network create "+HandName(op.Tenant, op.Network), v, r)
			if n := m.nets[op.Key()]; r.OK() && n != nil && n.defined {
				// The key of a defined network, made by hand under
				// another Docker name: the model has no place for it.
				m.odd[h+" "+HandName(op.Tenant, op.Network)] = true
			} else if r.OK() {
				n := m.nets[op.Key()]
				if n == nil {
					n = &mnet{tenant: op.Tenant, name: op.Network, subnet: netip.MustParsePrefix(op.Subnet),
						docker: HandName(op.Tenant, op.Network), engines: map[string]bool{}, since: m.step}
					m.nets[op.Key()] = n
				}
				n.engines[h] = true
			}
		}
	case HandNetRm:
		name := HandName(op.Tenant, op.Network)
		for _, h := range op.Hosts {
			v := m.predictHandNetRm(op.Key(), h)
			r := x.Docker(ctx, h, "network", "rm", name)
			note(h+": docker network rm "+name, v, r)
			if n := m.nets[op.Key()]; r.OK() && n != nil && !n.defined {
				delete(n.engines, h)
				m.orphan(op.Key(), func(c *mctr) bool { return c.host == h })
				if len(n.engines) == 0 {
					delete(m.nets, op.Key())
				}
			}
		}
	case RunOne, RunMany, Burst:
		m.stepRun(ctx, op, x, st)
	case Stop, Start, Restart, Remove:
		m.stepContainer(ctx, op, x, st)
	case RemoveMany:
		m.stepRemoveMany(ctx, op, x, st)
	case Connect:
		c := m.ctrs[op.Container]
		v := m.predictConnect(op)
		args := []string{"network", "connect"}
		if op.IP != "" {
			args = append(args, "--ip", op.IP)
		}
		r := x.Docker(ctx, op.Host, append(args, m.dockerName(op.Key()), op.Container)...)
		note(fmt.Sprintf("docker network connect %s %s", m.dockerName(op.Key()), op.Container), v, r)
		if r.OK() && c != nil {
			a := &matt{key: op.Key()}
			if op.IP != "" {
				a.fixed = netip.MustParseAddr(op.IP)
				a.ip = a.fixed
			}
			c.atts = append(c.atts, a)
		}
	case Disconnect:
		c := m.ctrs[op.Container]
		v := refuse("no container %s", op.Container)
		if c != nil && !c.dead {
			v = refuse("%s is not connected to %s", op.Container, op.Key())
			if c.att(op.Key()) != nil {
				v = ok("%s is connected to %s", op.Container, op.Key())
			}
		}
		r := x.Docker(ctx, op.Host, "network", "disconnect", m.dockerName(op.Key()), op.Container)
		note(fmt.Sprintf("docker network disconnect %s %s", m.dockerName(op.Key()), op.Container), v, r)
		if r.OK() && c != nil {
			if a := c.att(op.Key()); a != nil {
				m.release(c, a)
				c.atts = slices.DeleteFunc(c.atts, func(b *matt) bool { return b == a })
			}
		}
	case KillTenetd, RestartDocker, Cut, Heal, KillHost:
		m.stepFault(ctx, op, x, st)
	case RemoveHost:
		m.stepRemoveHost(ctx, op, x, st)
	default:
		st.vs = append(st.vs, Violation{"outcome", "a known op", fmt.Sprintf("unknown op kind %q", op.Kind)})
	}
	return st.vs, st.lines
}

// touch records what op acts on.
func (m *Model) touch(op Op) {
	m.touched, m.touchedHosts = map[string]bool{}, map[string]bool{}
	if op.Container != "" {
		m.touched[op.Container] = true
	}
	for _, r := range op.Runs {
		m.touched[r.Name] = true
	}
	switch op.Kind {
	case KillTenetd, RestartDocker, Cut, Heal, KillHost:
		m.touchedHosts[op.Host] = true
	case NetCreate, NetRm, HandNetCreate, HandNetRm:
		for _, c := range m.attached(op.Key()) {
			m.touched[c.name] = true
		}
	}
}

// stepLog collects a step's violations and the lines of its operation log.
type stepLog struct {
	vs    []Violation
	lines []string
}

// note logs one command's outcome and judges it against v.
func (st *stepLog) note(what string, v verdict, r Result) {
	st.lines = append(st.lines, fmt.Sprintf("  %s -> %s", what, outcome(r)))
	if viol := judge(what, v, r); viol != nil {
		st.vs = append(st.vs, *viol)
	}
}

func outcome(r Result) string {
	switch {
	case r.Code < 0:
		return "could not run: " + oneLine(r.Out)
	case r.Code == 0:
		return "done"
	}
	return fmt.Sprintf("refused (exit %d): %s", r.Code, oneLine(r.Out))
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func judge(what string, v verdict, r Result) *Violation {
	switch {
	case r.Code < 0:
		return &Violation{"outcome", what + " runs", "could not run it: " + oneLine(r.Out)}
	case v.e == mustOK && !r.OK():
		return &Violation{"outcome", what + ": done (" + v.why + ")", outcome(r)}
	case v.e == mustFail && r.OK():
		return &Violation{"outcome", what + ": refused (" + v.why + ")", "done: " + oneLine(r.Out)}
	case v.e == either && v.ipamOnly && !r.OK() && !strings.Contains(r.Out, "IpamDriver."):
		return &Violation{"outcome", what + ": done, or refused by the IPAM (" + v.why + ")", "refused for another reason: " + outcome(r)}
	}
	return nil
}

func (m *Model) live(h string) bool { return !m.killed[h] && slices.Contains(m.hosts, h) }

// dockerName is the Docker name of network key ("" if the model has none).
func (m *Model) dockerName(key string) string {
	if n := m.nets[key]; n != nil {
		return n.docker
	}
	t, n, _ := strings.Cut(key, "/")
	return HandName(t, n)
}

// engineHas says whether host h's engine must have network key: "yes", "no",
// or "unsure" (a cut host, and the definition changed during the cut).
func (m *Model) engineHas(h, key string) string {
	n := m.nets[key]
	if n == nil || m.killed[h] {
		return "no"
	}
	if n.defined {
		if h == m.cut && n.since > m.cutAt {
			return "unsure"
		}
		return "yes"
	}
	if n.engines[h] {
		return "yes"
	}
	return "no"
}

// engineNames lists the Docker network names host h's engine must have,
// with the network each is, and the names it may or may not have.
func (m *Model) engineNames(h string) (want map[string]*mnet, unsure map[string]bool) {
	want, unsure = map[string]*mnet{}, map[string]bool{}
	for _, k := range sortedKeys(m.nets) {
		switch m.engineHas(h, k) {
		case "yes":
			want[m.nets[k].docker] = m.nets[k]
		case "unsure":
			unsure[m.nets[k].docker] = true
		}
	}
	if h == m.cut {
		for name, at := range m.gone {
			if at > m.cutAt {
				unsure[name] = true
			}
		}
	}
	for k := range m.odd {
		if host, name, _ := strings.Cut(k, " "); host == h && want[name] == nil {
			unsure[name] = true
		}
	}
	return want, unsure
}

// tenantNets lists the networks of tenant t that some live engine has or
// that are defined.
func (m *Model) tenantNets(t string) []*mnet {
	var out []*mnet
	for _, k := range sortedKeys(m.nets) {
		if n := m.nets[k]; n.tenant == t {
			out = append(out, n)
		}
	}
	return out
}

func (m *Model) predictTenantCreate(t string) verdict {
	switch {
	case !tenantRule.MatchString(t):
		return refuse("tenant name %q breaks the rule: 1-32 of a-z, 0-9 and '-', starting with a letter or digit", t)
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
		return refuse("network name %q breaks the rule: 1-64 of a-z, 0-9, '_', '.' and '-'", n)
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

func (m *Model) stepNetCreate(ctx context.Context, op Op, x Exec, st *stepLog) {
	v := m.predictNetCreate(op)
	args := []string{"network", "create", op.Key(), "--subnet", op.Subnet}
	if op.Internal {
		args = append(args, "--internal")
	}
	r := x.Tenetctl(ctx, op.Host, args...)
	before := len(st.vs)
	st.note("tenetctl "+strings.Join(args, " "), v, r)
	if !r.OK() || len(st.vs) > before {
		return
	}
	// The Docker name: docker_name from inspect when tenetd says, else
	// tenant-network.
	docker := HandName(op.Tenant, op.Network)
	ir := x.Tenetctl(ctx, op.Host, "network", "inspect", op.Key(), "--json")
	var info struct {
		DockerName string `json:"docker_name"`
	}
	if ir.OK() && json.Unmarshal([]byte(ir.Out), &info) == nil && info.DockerName != "" {
		docker = info.DockerName
	}
	st.lines = append(st.lines, fmt.Sprintf("  its Docker name: %s", docker))
	if o := m.dockerNameOwner(docker, op.Key()); o != "" {
		st.vs = append(st.vs, Violation{"outcome",
			fmt.Sprintf("tenetctl network create %s refused, or done under a Docker name no other network has", op.Key()),
			fmt.Sprintf("done, and its Docker name %s is network %s's", docker, o)})
		return
	}
	p := netip.MustParsePrefix(op.Subnet)
	m.nets[op.Key()] = &mnet{tenant: op.Tenant, name: op.Network, subnet: p, internal: op.Internal, defined: true,
		docker: docker, since: m.step}
	delete(m.gone, docker)
	return
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
		switch {
		case (c.running || c.unsure) && !c.dead && c.host != m.cut:
			return refuse("container %s on %s is attached", c.name, c.host)
		case c.running || c.unsure:
			v = maybe("container %s on %s (cut off or dead) is attached", c.name, c.host)
		}
	}
	return v
}

// orphan marks attachments to key of stopped containers (matching f, if
// given) whose network went away.
func (m *Model) orphan(key string, f func(*mctr) bool) {
	for _, c := range m.attached(key) {
		if !c.running && (f == nil || f(c)) {
			c.att(key).orphan = true
		}
	}
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
		if c.host == h && (c.running || c.unsure) {
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
		if c.running || c.dead || c.unsure {
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
	case free < need:
		return maybeAddr("pool %s has %d free addresses for %d containers", n.subnet, free, need)
	}
	return m.tolerate("10.3", ok("pool %s of %s has %d free addresses", n.subnet, key, free))
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

// ctrCommand runs until told to stop (busybox sleep as PID 1 would ignore
// SIGTERM and make every stop take 10 s).
var ctrCommand = []string{"sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"}

// ImageName is the image every container runs.
const ImageName = "tenet-test:latest"

func (m *Model) stepRun(ctx context.Context, op Op, x Exec, st *stepLog) {
	verdicts := make([]verdict, len(op.Runs))
	for i, r := range op.Runs {
		verdicts[i] = m.predictRun(r, op.Runs)
	}
	results := make([]Result, len(op.Runs))
	var wg sync.WaitGroup
	for i, r := range op.Runs {
		if m.ctrs[r.Name] != nil || m.killed[r.Host] {
			results[i] = Result{Code: 125, Out: "(not run: the name exists or the host is dead)"}
			continue
		}
		wg.Go(func() {
			args := []string{"run", "-d", "--name", r.Name, "--network", m.dockerName(r.Net)}
			if r.IP != "" {
				args = append(args, "--ip", r.IP)
			}
			if r.Policy {
				args = append(args, "--restart", "unless-stopped")
			}
			results[i] = x.Docker(ctx, r.Host, append(append(args, ImageName), ctrCommand...)...)
			if !results[i].OK() {
				// docker run leaves the container it could not start.
				x.Docker(ctx, r.Host, "rm", "-f", r.Name)
			}
		})
	}
	wg.Wait()
	got := map[string]string{} // tenant/ip: container
	for i, r := range op.Runs {
		res := results[i]
		st.lines = append(st.lines, fmt.Sprintf("  %s -> %s", r, outcome(res)))
		if v := judge("docker run "+r.Name+" on "+r.Host, verdicts[i], res); v != nil {
			st.vs = append(st.vs, *v)
		}
		if !res.OK() || m.ctrs[r.Name] != nil {
			continue
		}
		c := &mctr{name: r.Name, host: r.Host, running: true, policy: r.Policy, started: m.step}
		a := &matt{key: r.Net}
		if m.nets[r.Net] == nil {
			st.vs = append(st.vs, Violation{"outcome", fmt.Sprintf("docker run %s refused: the model has no network %s", r.Name, r.Net), "done"})
			continue
		}
		if r.IP != "" {
			a.fixed = netip.MustParseAddr(r.IP)
			a.ip = a.fixed
			id := m.nets[r.Net].tenant + "/" + r.IP
			if other, dup := got[id]; dup {
				st.vs = append(st.vs, Violation{"addresses", fmt.Sprintf("at most one of %s and %s gets --ip %s", other, r.Name, r.IP),
					"both started"})
			}
			got[id] = r.Name
		}
		c.atts = []*matt{a}
		m.ctrs[r.Name] = c
	}
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

func (m *Model) stepContainer(ctx context.Context, op Op, x Exec, st *stepLog) {
	c := m.ctrs[op.Container]
	exists := c != nil && !c.dead && c.host == op.Host
	var v verdict
	switch {
	case !exists && op.Kind == Remove:
		v = maybe("no container %s on %s; docker rm -f of a missing one exits 0 since Docker 23", op.Container, op.Host)
	case !exists:
		v = refuse("no container %s on %s", op.Container, op.Host)
	case op.Kind == Stop || op.Kind == Remove:
		v = ok("%s exists", c.name)
	case op.Kind == Start && c.running:
		v = ok("%s is already running", c.name)
	case op.Kind == Restart && c.running:
		// Its own addresses are released and asked for again at once.
		v = ok("%s is running; it asks again for the addresses it had", c.name)
		for _, a := range c.atts {
			switch {
			case a.orphan:
				v = maybe("network %s of %s was removed", a.key, c.name)
			case !a.fixed.IsValid() && c.host == m.cut:
				v = maybeAddr("host %s is cut off: it may need a block from another host", c.host)
			case !a.fixed.IsValid():
				v = worst(v, m.tolerate("10.3", v))
			}
		}
	default:
		v = m.predictStart(c)
	}
	args := []string{string(op.Kind), op.Container}
	if op.Kind == Remove {
		args = []string{"rm", "-f", op.Container}
	}
	if op.Kind == Restart || op.Kind == Stop {
		args = []string{string(op.Kind), "-t", "5", op.Container}
	}
	r := x.Docker(ctx, op.Host, args...)
	st.note("docker "+strings.Join(args, " "), v, r)
	if !exists {
		return
	}
	switch {
	case op.Kind == Stop && r.OK():
		m.stop(c)
		c.userStopped = true
	case op.Kind == Remove && r.OK():
		m.stop(c)
		delete(m.ctrs, c.name)
	case (op.Kind == Start || op.Kind == Restart) && r.OK():
		if op.Kind == Restart || !c.running {
			m.stop(c)
			c.started = m.step
		}
		c.running, c.userStopped = true, false
		for _, a := range c.atts {
			if a.fixed.IsValid() {
				a.ip = a.fixed
			}
		}
	case op.Kind == Restart:
		// The stop may have happened; the next observation says.
		c.unsure = true
	}
	return
}

// stop marks c stopped, releasing its addresses.
func (m *Model) stop(c *mctr) {
	if c.running {
		for _, a := range c.atts {
			m.release(c, a)
		}
	}
	c.running, c.pid = false, 0
}

func (m *Model) release(c *mctr, a *matt) {
	if a.ip.IsValid() && c.running {
		if n := m.nets[a.key]; n != nil {
			m.rel = append(m.rel, released{tenant: n.tenant, ip: a.ip})
			if len(m.rel) > 30 {
				m.rel = m.rel[len(m.rel)-30:]
			}
		}
	}
	a.ip, a.mac = netip.Addr{}, ""
}

func (m *Model) stepRemoveMany(ctx context.Context, op Op, x Exec, st *stepLog) {
	results := make([]Result, len(op.Runs))
	var wg sync.WaitGroup
	for i, r := range op.Runs {
		wg.Go(func() {
			if m.killed[r.Host] {
				results[i] = Result{Code: 1, Out: "(not run: host is dead)"}
				return
			}
			results[i] = x.Docker(ctx, r.Host, "rm", "-f", r.Name)
		})
	}
	wg.Wait()
	for i, r := range op.Runs {
		c := m.ctrs[r.Name]
		v := maybe("no container %s on %s; docker rm -f of a missing one exits 0 since Docker 23", r.Name, r.Host)
		if c != nil && !c.dead && c.host == r.Host {
			v = ok("%s exists", r.Name)
		}
		st.lines = append(st.lines, fmt.Sprintf("  %s: docker rm -f %s -> %s", r.Host, r.Name, outcome(results[i])))
		if viol := judge("docker rm -f "+r.Name, v, results[i]); viol != nil {
			st.vs = append(st.vs, *viol)
		}
		if results[i].OK() && v.e == mustOK {
			m.stop(c)
			delete(m.ctrs, c.name)
		}
	}
	return
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

// backAfterEngineRestart lists the containers of host h that dockerd must
// start again by itself: running ones with --restart unless-stopped.
func (m *Model) backAfterEngineRestart(h string) []*mctr {
	var out []*mctr
	for _, name := range sortedKeys(m.ctrs) {
		if c := m.ctrs[name]; c.host == h && !c.dead && c.running && c.policy {
			out = append(out, c)
		}
	}
	return out
}

func (m *Model) stepFault(ctx context.Context, op Op, x Exec, st *stepLog) {
	var back []*mctr
	if op.Kind == RestartDocker {
		back = m.backAfterEngineRestart(op.Host)
	}
	if !m.live(op.Host) {
		st.lines = append(st.lines, "  (not done: the host is dead)")
		return
	}
	start := time.Now()
	if err := x.Fault(ctx, op); err != nil {
		st.lines = append(st.lines, "  -> failed: "+oneLine(err.Error()))
		st.vs = append(st.vs, Violation{"outcome", op.String() + ": done", "failed: " + oneLine(err.Error())})
		return
	}
	st.lines = append(st.lines, fmt.Sprintf("  -> done in %.1fs", time.Since(start).Seconds()))
	m.lastFault, m.lastFaultKind = m.step, op.Kind
	switch op.Kind {
	case RestartDocker:
		for _, name := range sortedKeys(m.ctrs) {
			if c := m.ctrs[name]; c.host == op.Host && !c.dead && !slices.Contains(back, c) {
				m.stop(c)
			}
		}
		// dockerd starts them itself: wait until they run (30 s), then
		// judge. One with --ip may find its address taken by a container
		// without one that came back first.
		deadline := time.Now().Add(30 * time.Second)
		for _, c := range back {
			m.stop(c)
			c.running, c.started = true, m.step
			fixed := false
			for _, a := range c.atts {
				if a.fixed.IsValid() {
					a.ip, fixed = a.fixed, true
				}
			}
			var r Result
			for {
				r = x.Docker(ctx, op.Host, "inspect", "-f", "{{.State.Running}}", c.name)
				if strings.TrimSpace(r.Out) == "true" || time.Now().After(deadline) || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			running := strings.TrimSpace(r.Out) == "true"
			st.lines = append(st.lines, fmt.Sprintf("  %s (--restart unless-stopped) running again: %t", c.name, running))
			if !running && !fixed {
				st.vs = append(st.vs, Violation{"containers", c.name + " (--restart unless-stopped) runs again within 30 s of dockerd's start",
					"not running: " + oneLine(r.Out)})
			}
			if fixed {
				c.unsure = true
			}
		}
	case Cut:
		m.cut, m.cutAt = op.Host, m.step
	case Heal:
		m.cut, m.healAt = "", m.step
	case KillHost:
		m.killed[op.Host] = true
		for _, c := range m.ctrs {
			if c.host == op.Host {
				c.dead, c.unsure, c.pid = true, false, 0
				if !c.running {
					c.atts = nil
				}
				c.running = false
			}
		}
		for _, n := range m.nets {
			delete(n.engines, op.Host)
		}
	}
	return
}

func (m *Model) stepRemoveHost(ctx context.Context, op Op, x Exec, st *stepLog) {
	var v verdict
	switch {
	case !slices.Contains(m.hosts, op.Target):
		v = m.tolerate("10.8", refuse("host %s was never a member", op.Target))
	case m.removed[op.Target]:
		v = ok("%s is removed already: removal is safe to repeat", op.Target)
	case !m.killed[op.Target]:
		v = refuse("host %s is alive", op.Target)
	case m.cut != "":
		v = maybe("host %s is cut off: the heir cannot learn what it holds", m.cut)
	default:
		v = ok("host %s is dead and every other host is reachable", op.Target)
	}
	// The ring needs a few seconds to see the host dead: retry while
	// refused, for 30 s, unless a refusal is expected.
	deadline := time.Now().Add(30 * time.Second)
	var r Result
	tries := 0
	for {
		r = x.Tenetctl(ctx, op.Host, "host", "remove", op.Target)
		tries++
		if r.OK() || v.e == mustFail || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	st.note(fmt.Sprintf("tenetctl host remove %s (%d tries)", op.Target, tries), v, r)
	if r.OK() && m.killed[op.Target] {
		m.removed[op.Target] = true
		for _, name := range sortedKeys(m.ctrs) {
			if c := m.ctrs[name]; c.host == op.Target {
				for _, a := range c.atts {
					if n := m.nets[a.key]; n != nil && a.ip.IsValid() {
						m.limbo[n.tenant] = append(m.limbo[n.tenant], a.ip)
					}
				}
				delete(m.ctrs, name)
			}
		}
	}
	return
}

// String summarises the model, for the failure report.
func (m *Model) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hosts %v killed %v removed %v cut %q\n", m.hosts, sortedKeys(m.killed), sortedKeys(m.removed), m.cut)
	fmt.Fprintf(&b, "tenants %v\n", sortedKeys(m.tenants))
	for _, k := range sortedKeys(m.nets) {
		n := m.nets[k]
		kind := "defined"
		if !n.defined {
			kind = fmt.Sprintf("hand-made on %v", sortedKeys(n.engines))
		}
		fmt.Fprintf(&b, "network %s %s docker %s, %s\n", k, n.subnet, n.docker, kind)
	}
	for _, name := range sortedKeys(m.ctrs) {
		c := m.ctrs[name]
		state := "stopped"
		switch {
		case c.dead:
			state = "dead"
		case c.running:
			state = "running"
		}
		var atts []string
		for _, a := range c.atts {
			s := a.key + "=" + a.ip.String()
			if a.fixed.IsValid() {
				s += "(--ip)"
			}
			atts = append(atts, s)
		}
		fmt.Fprintf(&b, "container %s on %s %s %s\n", name, c.host, state, strings.Join(atts, " "))
	}
	return b.String()
}
