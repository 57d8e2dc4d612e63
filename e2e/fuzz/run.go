package fuzz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/internal/core"
)

// Config is one fuzz run.
type Config struct {
	Seed     uint64
	Steps    int
	Hosts    int // 3-5; 0: drawn from the seed
	Weights  Weights
	Tolerate Tolerances
	// Ops replays these steps instead of drawing them (Seed then only
	// picks the negative probes).
	Ops []Op
	// Budget stops drawing new steps once this much time has passed (0:
	// none); the report says how many steps ran, which replay with
	// --steps.
	Budget time.Duration
	// Artifacts is a directory for each run's logs and operation log
	// (kept when it fails); empty: none.
	Artifacts string
	Out       io.Writer // progress; nil: none
	Verbose   bool      // also the testbed's own steps
}

// HostsFor is the number of hosts a seed runs on when Config.Hosts is 0:
// 3, 4 or 5.
func HostsFor(seed uint64) int { return 3 + int(seed%3) }

// Logged is one step of the operation log.
type Logged struct {
	Step     int           `json:"step"`
	Op       Op            `json:"op"`
	Lines    []string      `json:"lines,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Failure is how a run failed.
type Failure struct {
	Step       int // 0: before the first step or after the last
	Op         Op
	Violations []Violation
	Model      string
}

// Report is what a run did.
type Report struct {
	Seed      uint64
	Hosts     int
	Steps     int // steps done
	Ops       []Logged
	Failure   *Failure
	Duration  time.Duration
	Artifacts string
	Replay    string // the command that replays this run
}

// Run brings up a testbed, runs the steps, checks after each, tears the
// workload and the testbed down and checks what is left. An error is a
// problem of the testbed itself; the cluster's failures are in the report.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	start := time.Now()
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	if cfg.Weights == nil {
		cfg.Weights = DefaultWeights()
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = HostsFor(cfg.Seed)
	}
	if cfg.Hosts < 3 || cfg.Hosts > 5 {
		return nil, fmt.Errorf("fuzz: Hosts %d: must be 3-5", cfg.Hosts)
	}
	if cfg.Ops != nil {
		cfg.Steps = len(cfg.Ops)
	}
	rep = &Report{Seed: cfg.Seed, Hosts: cfg.Hosts, Replay: replayCommand(cfg, cfg.Steps)}
	fmt.Fprintf(out, "fuzz: seed %d, %d hosts, %d steps (replay: %s)\n", cfg.Seed, cfg.Hosts, cfg.Steps, rep.Replay)

	if _, err := e2e.Reap(ctx, e2e.DefaultBaseDir, nil); err != nil {
		fmt.Fprintf(out, "fuzz: reap stale testbed runs: %v\n", err)
	}
	tbLog := func(string, ...any) {}
	if cfg.Verbose {
		tbLog = func(f string, a ...any) { fmt.Fprintf(out, "    testbed: "+f+"\n", a...) }
	}
	upCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tb, err := e2e.Up(upCtx, e2e.Options{Hosts: cfg.Hosts, Engines: true, Logf: tbLog})
	if err != nil {
		return nil, fmt.Errorf("fuzz: testbed up: %w", err)
	}
	r := &runner{cfg: cfg, out: out, tb: tb, c: &cluster{tb: tb}, rep: rep}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if derr := tb.Down(dctx); derr != nil {
			err = errors.Join(err, derr)
		}
		if leaks := e2e.Leaks(e2e.DefaultBaseDir, tb.Run); len(leaks) > 0 && rep.Failure == nil {
			rep.Failure = &Failure{Step: rep.Steps, Violations: []Violation{{"leaks", "nothing of run " + tb.Run + " left after teardown",
				strings.Join(leaks, "; ")}}}
		}
		rep.Duration = time.Since(start)
	}()
	if _, serr := tb.StartTenetds(upCtx); serr != nil {
		return rep, fmt.Errorf("fuzz: start tenetd: %w", serr)
	}
	fmt.Fprintf(out, "fuzz: testbed %s up in %.1fs\n", tb.Run, time.Since(start).Seconds())
	r.run(ctx)
	return rep, nil
}

func replayCommand(cfg Config, steps int) string {
	s := fmt.Sprintf("scripts/fuzz.sh --seed %d --steps %d --hosts %d", cfg.Seed, steps, cfg.Hosts)
	if cfg.Ops != nil {
		s = fmt.Sprintf("scripts/fuzz.sh --replay OPS.json --seed %d --hosts %d", cfg.Seed, cfg.Hosts)
	}
	if w := cfg.Weights.String(); w != "" {
		s += " --weights " + w
	}
	if len(cfg.Tolerate) > 0 {
		s += " --tolerate " + strings.Join(sortedKeys(cfg.Tolerate), ",")
	}
	return s
}

type runner struct {
	cfg      Config
	out      io.Writer
	tb       *e2e.Testbed
	c        *cluster
	m        *Model
	rep      *Report
	baseline map[string]string // host: kernel objects after tenetd started
	pids     map[string][2]int // host: tenetd, dockerd PIDs
	faults   bool              // a step broke something on purpose
}

func (r *runner) hosts() []string {
	var hs []string
	for _, h := range r.tb.Hosts {
		hs = append(hs, h.Name())
	}
	return hs
}

func (r *runner) run(ctx context.Context) {
	hosts := r.hosts()
	r.m = NewModel(hosts, r.cfg.Tolerate)
	gen := NewGen(r.cfg.Seed, hosts, r.cfg.Weights)
	r.baseline = map[string]string{}
	r.pids = map[string][2]int{}
	for i, h := range hosts {
		k, err := r.c.kernel(ctx, h)
		if err != nil {
			r.fail(0, Op{}, Violation{"kernel", "kernel objects of " + h + " readable", err.Error()})
			return
		}
		r.baseline[h] = k
		r.pids[h] = [2]int{r.tb.Tenetds[i].Daemon.PID(), r.tb.Engines[i].Daemon().PID()}
	}
	began := time.Now()
	for step := 1; step <= r.cfg.Steps; step++ {
		if r.cfg.Budget > 0 && time.Since(began) > r.cfg.Budget {
			fmt.Fprintf(r.out, "fuzz: time budget %v spent after %d steps; stopping (replay with --steps %d)\n", r.cfg.Budget, step-1, step-1)
			break
		}
		var op Op
		if r.cfg.Ops != nil {
			op = r.cfg.Ops[step-1]
		} else {
			op = gen.Next()
		}
		t0 := time.Now()
		fmt.Fprintf(r.out, "step %d: %s\n", step, op)
		vs, lines := r.m.Step(ctx, op, r.c)
		for _, l := range lines {
			fmt.Fprintln(r.out, l)
		}
		stepEnd := time.Now()
		switch op.Kind {
		case KillTenetd, RestartDocker, Cut, Heal, KillHost:
			r.faults = true
			r.notePIDs()
		}
		if len(vs) == 0 {
			vs = r.settle(ctx, step, stepEnd, false)
		}
		if len(vs) == 0 {
			vs = r.checkPIDs()
		}
		r.rep.Ops = append(r.rep.Ops, Logged{Step: step, Op: op, Lines: lines, Duration: time.Since(t0)})
		r.rep.Steps = step
		if len(vs) > 0 {
			r.fail(step, op, vs...)
			return
		}
		fmt.Fprintf(r.out, "  ok (%.1fs)\n", time.Since(t0).Seconds())
		if ctx.Err() != nil {
			r.fail(step, op, Violation{"interrupted", "the run goes on", ctx.Err().Error()})
			return
		}
	}
	if vs := r.final(ctx); len(vs) > 0 {
		r.fail(0, Op{}, vs...)
		return
	}
	r.saveArtifacts(false)
}

// notePIDs records the daemons' PIDs after a step that restarted them.
func (r *runner) notePIDs() {
	for i, h := range r.hosts() {
		if r.tb.Killed(h) {
			delete(r.pids, h)
			continue
		}
		r.pids[h] = [2]int{r.tb.Tenetds[i].Daemon.PID(), r.tb.Engines[i].Daemon().PID()}
	}
}

// checkPIDs: tenetd and dockerd run with the PIDs they had, unless a step
// restarted them.
func (r *runner) checkPIDs() []Violation {
	var vs []Violation
	for i, h := range r.hosts() {
		want, ok := r.pids[h]
		if !ok {
			continue
		}
		for j, d := range []e2e.Daemon{r.tb.Tenetds[i].Daemon, r.tb.Engines[i].Daemon()} {
			select {
			case <-d.Done():
				vs = append(vs, Violation{"pids", fmt.Sprintf("%s on %s runs (pid %d)", d.Name(), h, want[j]), "it exited: " + logTail(d.LogPath())})
			default:
				if d.PID() != want[j] {
					vs = append(vs, Violation{"pids", fmt.Sprintf("%s on %s has pid %d", d.Name(), h, want[j]), fmt.Sprintf("pid %d", d.PID())})
				}
			}
		}
	}
	return vs
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// bounds returns how long engines and listings, and reachability, may take
// to match the model after step.
func (r *runner) bounds(step int) (nets, reach time.Duration) {
	// The registry syncs every 3 s; a plugin call Docker makes may take
	// up to tenetd's RequestTimeout (10 s) when the machine is loaded
	// (seen: the first network of a tenant on five hosts at once, creating
	// its namespace), and is retried at the next sync.
	nets, reach = 15*time.Second, 0
	if r.m.lastFault == step {
		switch r.m.lastFaultKind {
		case Cut, KillHost, KillTenetd:
			nets = 20 * time.Second // failure detection: about 3-6 s
		case RestartDocker:
			nets = 15 * time.Second
		case Heal:
			nets, reach = 45*time.Second, 45*time.Second // rejoin every 10 s, then sync
		}
	}
	return nets, reach
}

// settle observes the cluster until it matches the model: containers and
// addresses at once, engines' networks and tenetctl's listings within the
// bound, each pair of containers that share a network answering pings
// within 2 s of the step's end (longer after healing a cut), and no probe
// that must fail answering.
func (r *runner) settle(ctx context.Context, step int, stepEnd time.Time, full bool) []Violation {
	netBound, reachBound := r.bounds(step)
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(step)))
	var probes []Probe
	answered := map[string]time.Time{}
	tries := map[string]int{}
	var tObs, tProbe time.Duration
	for round := 0; ; round++ {
		t0 := time.Now()
		obs, vs := r.c.observe(ctx, r.m.LiveHosts(), r.m.CtlHosts())
		tObs += time.Since(t0)
		var imm []Violation
		imm = append(imm, r.m.checkContainers(obs)...)
		imm = append(imm, r.m.checkAddresses()...)
		if len(imm) > 0 {
			return imm
		}
		if round == 0 {
			probes = r.m.Probes(rng, 4, full, 24)
			for i := range probes {
				probes[i].Bound = max(probes[i].Bound, reachBound)
			}
		}
		var todo []Probe
		for _, p := range probes {
			if (p.Reach && answered[p.ID].IsZero()) || (!p.Reach && round == 0) {
				todo = append(todo, p)
			}
		}
		if len(todo) > 0 {
			sent := time.Now()
			got := r.c.probe(ctx, todo)
			tProbe += time.Since(sent)
			for _, p := range todo {
				tries[p.ID]++
				switch {
				case p.Reach && got[p.ID]:
					answered[p.ID] = sent
				case !p.Reach && got[p.ID]:
					return []Violation{{"reach", fmt.Sprintf("%s (on %s) never reaches %s: %s", p.From, p.Host, p.IP, p.Why), "it answered a ping"}}
				}
			}
		}
		vs = append(vs, r.m.checkEngineNets(obs)...)
		vs = append(vs, r.m.checkListings(obs)...)
		now := time.Now()
		var late []Violation
		pending := 0
		for _, p := range probes {
			if !p.Reach || !answered[p.ID].IsZero() {
				continue
			}
			pending++
			if now.After(stepEnd.Add(p.Bound)) {
				late = append(late, Violation{"reach", fmt.Sprintf("%s (on %s) reaches %s within %v of the step's end: %s", p.From, p.Host, p.IP, p.Bound, p.Why),
					fmt.Sprintf("no answer to %d pings (0.5 s each) in %.1fs", tries[p.ID], now.Sub(stepEnd).Seconds())})
			}
		}
		if len(late) > 0 {
			return late
		}
		if len(vs) == 0 && pending == 0 {
			if r.cfg.Verbose {
				fmt.Fprintf(r.out, "  settled in %.1fs: %d probes, %d rounds (observing %.1fs, probing %.1fs)\n",
					now.Sub(stepEnd).Seconds(), len(probes), round+1, tObs.Seconds(), tProbe.Seconds())
			}
			return nil
		}
		if len(vs) > 0 && now.After(stepEnd.Add(netBound)) {
			for i := range vs {
				vs[i].Expected += fmt.Sprintf(" (within %v of the step's end)", netBound)
			}
			return vs
		}
		if ctx.Err() != nil {
			return []Violation{{"interrupted", "the run goes on", ctx.Err().Error()}}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// final removes the workload the way an admin would, then checks that every
// live host is back to the kernel objects it had when tenetd started, that
// the daemons were never restarted behind the fuzzer's back, and that no
// log has a panic or an unexpected error.
func (r *runner) final(ctx context.Context) []Violation {
	fmt.Fprintln(r.out, "fuzz: removing every container, network and tenant")
	m := r.m
	if m.cut != "" {
		if vs, _ := m.Step(ctx, Op{Kind: Heal, Host: m.cut}, r.c); len(vs) > 0 {
			return vs
		}
		if vs := r.settle(ctx, m.step, time.Now(), false); len(vs) > 0 {
			return vs
		}
	}
	// The whole reachability matrix once, before taking it all down.
	m.touched, m.touchedHosts = nil, nil
	if vs := r.settle(ctx, m.step, time.Now(), true); len(vs) > 0 {
		return vs
	}
	var vs []Violation
	ring := m.view(m.LiveHosts()[0])
	var rms []RunSpec
	for _, name := range sortedKeys(m.ctrs) {
		if c := m.ctrs[name]; !c.dead {
			rms = append(rms, RunSpec{Name: name, Host: c.host})
		}
	}
	if len(rms) > 0 {
		s, _ := m.Step(ctx, Op{Kind: RemoveMany, Runs: rms}, r.c)
		vs = append(vs, s...)
	}
	for _, k := range sortedKeys(m.nets) {
		n := m.nets[k]
		var s []Violation
		if n.defined {
			// Endpoints of removed containers leave every host's view
			// within a moment; retry the refusal for 10 s. Those of a
			// dead host stay programmed (and listed) for its grace
			// period of 2 min.
			wait := 10 * time.Second
			for _, c := range m.attached(k) {
				if c.dead {
					wait = 150 * time.Second
				}
			}
			deadline := time.Now().Add(wait)
			for {
				res := r.c.Tenetctl(ctx, ring[0], "network", "rm", k)
				if res.OK() {
					m.gone[n.docker] = m.step
					delete(m.nets, k)
					break
				}
				if time.Now().After(deadline) {
					s = append(s, Violation{"outcome", fmt.Sprintf("tenetctl network rm %s done within %v once no container is left", k, wait), outcome(res)})
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		} else {
			s, _ = m.Step(ctx, Op{Kind: HandNetRm, Tenant: n.tenant, Network: n.name, Hosts: sortedKeys(n.engines)}, r.c)
		}
		vs = append(vs, s...)
	}
	for _, t := range sortedKeys(m.tenants) {
		// Refused while a host is still taking the tenant's last network
		// out of its engine: retried for 10 s.
		deadline := time.Now().Add(10 * time.Second)
		for {
			res := r.c.Tenetctl(ctx, ring[0], "tenant", "rm", t)
			if res.OK() {
				delete(m.tenants, t)
				break
			}
			if time.Now().After(deadline) {
				vs = append(vs, Violation{"outcome", fmt.Sprintf("tenetctl tenant rm %s done within 10 s once it has no network", t), outcome(res)})
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	if len(vs) > 0 {
		return vs
	}
	if vs := r.settle(ctx, m.step, time.Now(), false); len(vs) > 0 {
		return vs
	}
	// Kernel objects: what each host had when tenetd started, within 20 s,
	// and the time a network whose creation was given up on (a loaded
	// host) is kept for a retry that never came (its definition went).
	deadline := time.Now().Add(20*time.Second + core.DefaultConfig().AbandonedKeep)
	for {
		vs = nil
		for _, h := range m.LiveHosts() {
			k, err := r.c.kernel(ctx, h)
			if err != nil {
				vs = append(vs, Violation{"kernel", "kernel objects of " + h + " readable", err.Error()})
			} else if k != r.baseline[h] {
				vs = append(vs, Violation{"kernel", fmt.Sprintf("%s has, with no container or network left, what it had when tenetd started:\n%s",
					h, indent(r.baseline[h])), "it has:\n" + indent(k)})
			}
		}
		if len(vs) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	vs = append(vs, r.checkPIDs()...)
	vs = append(vs, r.checkLogs()...)
	return vs
}

func indent(s string) string { return "      " + strings.ReplaceAll(s, "\n", "\n      ") }

// errorAllowed lists the ERROR lines a run may log, and when.
var errorAllowed = []struct {
	re         *regexp.Regexp
	afterFault bool // only in runs that cut, killed or restarted something
	why        string
}{
	{regexp.MustCompile(`source=memberlist`), true, "memberlist reports peers it cannot reach while a host is cut off, dead or restarting"},
}

var panicLine = regexp.MustCompile(`^panic: |^fatal error: |goroutine \d+ \[running\]`)

// stackDump is a goroutine dump a daemon writes on purpose (containerd's
// and dockerd's on SIGUSR1, as one log line), not a crash.
var stackDump = regexp.MustCompile(`=== BEGIN goroutine stack dump ===`)

// checkLogs: no panic in any daemon's log, no ERROR line in tenetd's but
// those errorAllowed explains.
func (r *runner) checkLogs() []Violation {
	var vs []Violation
	for _, h := range r.tb.Hosts {
		for _, name := range []string{"tenetd", "dockerd"} {
			path := filepath.Join(h.Dir(), name+".log")
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, bad := logViolation(name, path, line, r.faults); bad {
					vs = append(vs, v)
				}
			}
		}
	}
	if len(vs) > 10 {
		vs = append(vs[:10], Violation{"logs", "", fmt.Sprintf("... and %d more", len(vs)-10)})
	}
	return vs
}

// logViolation judges one line of daemon name's log at path: a panic is
// always a violation, and in tenetd's log so is an ERROR line that
// errorAllowed does not explain (faults: the run cut, killed or restarted
// something).
func logViolation(name, path, line string, faults bool) (Violation, bool) {
	if panicLine.MatchString(line) && !stackDump.MatchString(line) {
		return Violation{"logs", "no panic in " + path, line}, true
	}
	if name != "tenetd" || !strings.Contains(line, "level=ERROR") {
		return Violation{}, false
	}
	for _, a := range errorAllowed {
		if a.re.MatchString(line) && (!a.afterFault || faults) {
			return Violation{}, false
		}
	}
	return Violation{"logs", "no unexpected ERROR line in " + path, line}, true
}

func (r *runner) fail(step int, op Op, vs ...Violation) {
	r.rep.Failure = &Failure{Step: step, Op: op, Violations: vs}
	if r.m != nil {
		r.rep.Failure.Model = r.m.String()
	}
	r.saveArtifacts(true)
}

// saveArtifacts keeps the operation log and, on failure, every host's
// daemon logs and the report.
func (r *runner) saveArtifacts(failed bool) {
	r.rep.Replay = replayCommand(r.cfg, r.rep.Steps)
	if r.cfg.Artifacts == "" {
		return
	}
	dir := filepath.Join(r.cfg.Artifacts, fmt.Sprintf("seed-%d-%s", r.cfg.Seed, time.Now().UTC().Format("20060102T150405")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(r.out, "fuzz: artifacts: %v\n", err)
		return
	}
	r.rep.Artifacts = dir
	var ops []Op
	for _, l := range r.rep.Ops {
		ops = append(ops, l.Op)
	}
	if b, err := json.MarshalIndent(ops, "", " "); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "ops.json"), b, 0o644)
	}
	r.rep.Replay = strings.Replace(r.rep.Replay, "OPS.json", filepath.Join(dir, "ops.json"), 1)
	if !failed {
		return
	}
	for _, h := range r.tb.Hosts {
		logs, _ := filepath.Glob(filepath.Join(h.Dir(), "*.log"))
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(dir, h.Name()+"-"+filepath.Base(l)), b, 0o644)
			}
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "report.txt"), []byte(r.rep.Text()), 0o644)
}

// Text renders the report: on failure the seed, the failing step, what the
// model expected and what was observed, the model, the operation log and
// the replay command.
func (rep *Report) Text() string {
	var b strings.Builder
	if rep.Failure == nil {
		fmt.Fprintf(&b, "PASS: seed %d, %d hosts, %d steps in %v\n", rep.Seed, rep.Hosts, rep.Steps, rep.Duration.Round(time.Second))
		return b.String()
	}
	f := rep.Failure
	where := fmt.Sprintf("step %d: %s", f.Step, f.Op)
	if f.Step == 0 {
		where = "after the last step (teardown and final checks)"
	}
	fmt.Fprintf(&b, "FAIL: seed %d, %d hosts, %s\n", rep.Seed, rep.Hosts, where)
	for _, v := range f.Violations {
		fmt.Fprintf(&b, "  %s\n", v)
	}
	if f.Model != "" {
		fmt.Fprintf(&b, "model after the step:\n%s\n", indent(strings.TrimSpace(f.Model)))
	}
	fmt.Fprintln(&b, "operation log:")
	for _, l := range rep.Ops {
		fmt.Fprintf(&b, "  %3d %s\n", l.Step, l.Op)
		for _, line := range l.Lines {
			fmt.Fprintf(&b, "      %s\n", strings.TrimSpace(line))
		}
	}
	fmt.Fprintf(&b, "replay: %s\n", rep.Replay)
	if rep.Artifacts != "" {
		fmt.Fprintf(&b, "logs and ops.json: %s\n", rep.Artifacts)
	}
	return b.String()
}

// Signature names a failure's kind, for shrinking: the op kind and the
// checks that failed.
func (f *Failure) Signature() string {
	var checks []string
	for _, v := range f.Violations {
		if !slices.Contains(checks, v.Check) {
			checks = append(checks, v.Check)
		}
	}
	slices.Sort(checks)
	return string(f.Op.Kind) + ":" + strings.Join(checks, ",")
}
