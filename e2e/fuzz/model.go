package fuzz

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
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
//	gc    docker run or start may fail because tenetd's endpoint collector removed the endpoint Docker was setting up (found by this fuzzer; README)
type Tolerances map[string]bool

// KnownTolerances are the points Tolerances understands.
var KnownTolerances = []string{"10.1", "10.3", "10.7", "10.8", "10.9", "gc"}

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

func ok(why string, a ...any) verdict { return verdict{mustOK, fmt.Sprintf(why, a...), false} }

func refuse(why string, a ...any) verdict { return verdict{mustFail, fmt.Sprintf(why, a...), false} }

func maybe(why string, a ...any) verdict { return verdict{either, fmt.Sprintf(why, a...), false} }

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
	tenantRule  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	networkRule = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$`)
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
	// pending: a docker network connect whose address assignment failed
	// (the IPAM refused, or --ip is outside the subnets). Docker (20.10)
	// keeps the network in the container's configuration anyway, with no
	// address, and asks for one again at the container's next start.
	pending bool
	since   int // step of the refused connect
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
	netRmAt map[string]int  // tenant -> step of its last network rm through tenetctl
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
		nets: map[string]*mnet{}, gone: map[string]int{}, netRmAt: map[string]int{}, odd: map[string]bool{}, ctrs: map[string]*mctr{}, limbo: map[string][]netip.Addr{},
		tol: tol}
}

// Step runs op through x, judging each command's outcome, and folds the
// outcome into the model. It returns the violations it saw and a line per
// command run, for the operation log.
func (m *Model) Step(ctx context.Context, op Op, x Exec) ([]Violation, []string) {
	m.step++
	st := &stepLog{tol: m.tol}
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
				m.netRmAt[op.Tenant] = m.step
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
		op.Tenant, op.Network, _ = strings.Cut(m.byDockerName(op.Host, op.Key()), "/")
		c := m.ctrs[op.Container]
		v := m.predictConnect(op)
		args := []string{"network", "connect"}
		if op.IP != "" {
			args = append(args, "--ip", op.IP)
		}
		r := x.Docker(ctx, op.Host, append(args, m.dockerName(op.Key()), op.Container)...)
		note(fmt.Sprintf("docker network connect %s %s", m.dockerName(op.Key()), op.Container), v, r)
		// Docker (20.10) records the network in the container's settings
		// before libnetwork assigns the address, and keeps it when that
		// fails: when the IPAM driver refuses, and when --ip is outside the
		// network's subnets (a name that means another network on this
		// host, seed 301749145).
		ipamRefused := !r.OK() && (strings.Contains(r.Out, "IpamDriver.") ||
			strings.Contains(r.Out, "does not belong to any of this network's subnets"))
		if c != nil && c.att(op.Key()) == nil && (r.OK() || ipamRefused && c.running) {
			a := &matt{key: op.Key(), pending: !r.OK(), since: m.step}
			if op.IP != "" {
				a.fixed = netip.MustParseAddr(op.IP)
				if r.OK() && c.running {
					a.ip = a.fixed
				}
			}
			c.atts = append(c.atts, a)
		}
	case Disconnect:
		op.Tenant, op.Network, _ = strings.Cut(m.byDockerName(op.Host, op.Key()), "/")
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
	tol   Tolerances
}

// note logs one command's outcome and judges it against v.
func (st *stepLog) note(what string, v verdict, r Result) {
	st.lines = append(st.lines, fmt.Sprintf("  %s -> %s", what, outcome(r)))
	if viol := st.judge(what, v, r); viol != nil {
		st.vs = append(st.vs, *viol)
	}
}

// collectorRace matches how docker run and start fail when tenetd's
// endpoint collector removes an endpoint Docker is still setting up (see
// README: found by this fuzzer, not yet in an issue).
var collectorRace = regexp.MustCompile(`failed to add interface \S+ to sandbox|EndpointOperInfo: endpoint info \S+: no such endpoint`)

// judge is judge, with the tolerance "gc" for the collector race.
func (st *stepLog) judge(what string, v verdict, r Result) *Violation {
	if st.tol["gc"] && !r.OK() && r.Code > 0 && collectorRace.MatchString(r.Out) {
		st.lines = append(st.lines, "  (refused by the endpoint collector race: tolerated, gc)")
		return nil
	}
	return judge(what, v, r)
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

// byDockerName is the network an op on host h naming key reaches, as
// Docker resolves key's Docker name in h's engine: key itself if h's
// engine may have it; else the network h's engine may hold under that
// name (hand-made networks of different tenants may share a Docker name
// on different engines: seed 364622054); else key, if the model has it;
// else the network holding the name anywhere (a hand-made create refused
// because another definition has its name leaves the generator a key
// that Docker resolves, by name, to that other network: seed 410540331).
func (m *Model) byDockerName(h, key string) string {
	if m.nets[key] != nil && m.engineHas(h, key) != "no" {
		return key
	}
	name := m.dockerName(key)
	for _, k := range sortedKeys(m.nets) {
		if k != key && m.nets[k].docker == name && m.engineHas(h, k) != "no" {
			return k
		}
	}
	if m.nets[key] != nil {
		return key
	}
	if o := m.dockerNameOwner(name, key); o != "" {
		return o
	}
	return key
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
