package fuzz

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// How each kind of op runs through an Exec and what its outcome does to
// the model.

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

// orphan marks attachments to key of stopped containers (matching f, if
// given) whose network went away.
func (m *Model) orphan(key string, f func(*mctr) bool) {
	for _, c := range m.attached(key) {
		if !c.running && (f == nil || f(c)) {
			c.att(key).orphan = true
		}
	}
}

// ctrCommand runs until told to stop (busybox sleep as PID 1 would ignore
// SIGTERM and make every stop take 10 s).
var ctrCommand = []string{"sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"}

// ImageName is the image every container runs.
const ImageName = "tenet-test:latest"

func (m *Model) stepRun(ctx context.Context, op Op, x Exec, st *stepLog) {
	op.Runs = slices.Clone(op.Runs)
	for i := range op.Runs {
		op.Runs[i].Net = m.byDockerName(op.Runs[i].Host, op.Runs[i].Net)
	}
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
		if v := st.judge("docker run "+r.Name+" on "+r.Host, verdicts[i], res); v != nil {
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
			case a.pending:
				// A connect the IPAM refused: asked for anew at the start.
				fixed := ""
				if a.fixed.IsValid() {
					fixed = a.fixed.String()
				}
				v = worst(v, m.predictAddr(a.key, c.host, fixed, 1, c.name))
			case !a.fixed.IsValid() && c.host == m.cut:
				v = maybeAddr("host %s is cut off: it may need a block from another host", c.host)
			case !a.fixed.IsValid() && m.outOfReach(c.host) != "":
				o := m.outOfReach(c.host)
				v = maybeAddr("host %s is out of reach of %s: it may own the space %s needs", o, c.host, c.host)
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
		if viol := st.judge("docker rm -f "+r.Name, v, results[i]); viol != nil {
			st.vs = append(st.vs, *viol)
		}
		if results[i].OK() && v.e == mustOK {
			m.stop(c)
			delete(m.ctrs, c.name)
		}
	}
	return
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
