package fuzz

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// cluster runs the model's commands on a testbed with tenetd on every host,
// and observes it.
type cluster struct {
	tb *e2e.Testbed
}

var _ Exec = (*cluster)(nil)

// cmdTimeout bounds every single command the fuzzer runs.
const cmdTimeout = 2 * time.Minute

func (c *cluster) host(name string) (*e2e.NetnsHost, int, error) {
	i, err := c.tb.HostIndex(name)
	if err != nil {
		return nil, -1, err
	}
	return c.tb.Hosts[i], i, nil
}

func result(out string, err error) Result {
	if err == nil {
		return Result{Out: out}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return Result{Code: ee.ExitCode(), Out: out}
	}
	return Result{Code: -1, Out: err.Error()}
}

func (c *cluster) Tenetctl(ctx context.Context, host string, args ...string) Result {
	h, _, err := c.host(host)
	if err != nil {
		return Result{Code: -1, Out: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return result(h.Run(ctx, append([]string{c.tenetctl()}, args...)...))
}

func (c *cluster) tenetctl() string { return filepath.Join(c.tb.Dir, "tenetctl") }

func (c *cluster) Docker(ctx context.Context, host string, args ...string) Result {
	_, i, err := c.host(host)
	if err != nil {
		return Result{Code: -1, Out: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return result(c.tb.Engines[i].Docker(ctx, args...))
}

func (c *cluster) Fault(ctx context.Context, op Op) error {
	switch op.Kind {
	case KillTenetd:
		return c.tb.RestartTenetd(ctx, op.Host, true)
	case RestartDocker:
		return c.tb.RestartEngine(ctx, op.Host)
	case Cut:
		return c.tb.Cut(ctx, op.Host)
	case Heal:
		return c.tb.Heal(ctx, op.Host)
	case KillHost:
		return c.tb.KillHost(ctx, op.Host)
	}
	return fmt.Errorf("%s is not a fault", op.Kind)
}

// shell runs a script on host.
func (c *cluster) shell(ctx context.Context, host, script string) (string, error) {
	h, _, err := c.host(host)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	return h.Run(ctx, "sh", "-c", script)
}

// observe reads every live engine and the tenetctl listings of ctlHosts,
// one command per host, all hosts at once. A host that cannot be read is a
// violation.
func (c *cluster) observe(ctx context.Context, live, ctlHosts []string) (*Obs, []Violation) {
	obs := &Obs{Engines: map[string]*EngineObs{}, Ctl: map[string]*CtlObs{}}
	var mu sync.Mutex
	var vs []Violation
	var wg sync.WaitGroup
	for _, h := range live {
		wg.Go(func() {
			_, i, _ := c.host(h)
			script := "echo @@@engine\n" + engineScript(strings.Join(c.tb.Engines[i].Argv(), " "))
			ctl := slices.Contains(ctlHosts, h)
			if ctl {
				script += "echo @@@ctl\n" + ctlScript(c.tenetctl())
			}
			out, err := c.shell(ctx, h, script)
			eOut, cOut, _ := strings.Cut(out, "@@@ctl\n")
			eOut = strings.TrimPrefix(eOut, "@@@engine\n")
			var e *EngineObs
			var perr error
			if err == nil || !strings.Contains(eOut, "@@error") {
				e, perr = parseEngine(eOut)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case perr != nil:
				vs = append(vs, Violation{"engine", "engine " + h + " answers docker ps and docker network ls", oneLine(perr.Error())})
			case e == nil:
				vs = append(vs, Violation{"engine", "engine " + h + " answers docker ps and docker network ls", oneLine(err.Error())})
			default:
				obs.Engines[h] = e
			}
			if ctl {
				co := parseCtl(cOut)
				if err != nil && co.Err == "" && cOut == "" {
					co.Err = oneLine(err.Error())
				}
				obs.Ctl[h] = co
			}
		})
	}
	wg.Wait()
	return obs, vs
}

// probe runs probes, each host's at once, and returns which answered.
func (c *cluster) probe(ctx context.Context, probes []Probe) map[string]bool {
	byHost := map[string][]Probe{}
	for _, p := range probes {
		byHost[p.Host] = append(byHost[p.Host], p)
	}
	answered := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for h, ps := range byHost {
		wg.Go(func() {
			out, _ := c.shell(ctx, h, probeScript(ps))
			mu.Lock()
			defer mu.Unlock()
			for _, line := range strings.Split(out, "\n") {
				n, yes, ok := strings.Cut(strings.TrimSpace(line), " ")
				if i, err := strconv.Atoi(n); ok && err == nil && i >= 0 && i < len(ps) {
					answered[ps[i].ID] = answered[ps[i].ID] || yes == "y"
				}
			}
		})
	}
	wg.Wait()
	return answered
}

// kernelScript lists the kernel objects of a host that Tenet makes: links
// of the host namespace, named namespaces (tenants), nftables tables.
const kernelScript = `ip -o link show | awk -F': ' '{print "link " $2}' | cut -d@ -f1
for n in $(ls /run/netns 2>/dev/null); do echo "netns $n"; done
nft list tables | sed 's/^/nft /'
`

func (c *cluster) kernel(ctx context.Context, host string) (string, error) {
	out, err := c.shell(ctx, host, kernelScript)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n"), err
}
