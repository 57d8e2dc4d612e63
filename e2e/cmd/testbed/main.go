// Command testbed brings simulated hosts with real Docker engines up and down
// from a shell (scripts/testbed.sh wraps it). Everything stays inside network
// namespaces it creates; see package e2e.
//
//	testbed up N [--tenet]    N hosts, each with dockerd and the test image (and tenetd)
//	testbed ls                runs on this machine
//	testbed exec HOST CMD...  run CMD on HOST of the testbed that is up
//	testbed docker HOST ARGS  the docker CLI against HOST's engine
//	testbed tenetctl HOST ARGS  tenetctl on HOST
//	testbed restart-tenetd HOST [--kill]  stop (or kill -9) tenetd on HOST and start it again
//	testbed restart-docker HOST  stop dockerd on HOST and start it again
//	testbed cut HOST | heal HOST  take HOST's underlay link down | up
//	testbed kill HOST         HOST dies for good: its processes and its link
//	testbed down [RUN...]     remove the testbed(s) that are up, and stale runs
//	testbed reap              remove runs whose test process is gone
//	testbed leaks             list anything of any run left on the machine; exit 1 if so
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

const usage = `usage: testbed [--dir DIR] COMMAND
  up N [--tenet]    bring up N hosts (1-%d), each with a Docker engine and the test image,
                    and with --tenet a tenetd on each, in one encrypted gossip ring
  ls                list testbed runs on this machine
  exec HOST CMD...  run CMD on HOST (h0, h1, ...) of the testbed that is up
  docker HOST ARGS  run the docker CLI against HOST's engine
  tenetctl HOST ARGS  run tenetctl on HOST (testbeds made with --tenet)
                    exec, docker and tenetctl exit with the command's own exit code
  restart-tenetd HOST [--kill]
                    stop tenetd on HOST (SIGTERM; --kill: SIGKILL, as a crash) and start it again
  restart-docker HOST
                    stop dockerd on HOST (it stops its containers) and start it again
  cut HOST          take HOST off the underlay (its link down); its processes keep running
  heal HOST         put HOST back on the underlay
  kill HOST         HOST dies for good: every process of it, containers included, and its link
  down [RUN...]     remove the given runs, or every testbed that is up and every stale run
  reap              remove runs whose test process is gone
  leaks             list anything of any testbed run left on this machine; exit 1 if so
`

func main() {
	dir := flag.String("dir", e2e.DefaultBaseDir, "directory holding the runs")
	flag.Usage = func() { fmt.Fprintf(os.Stderr, usage, e2e.MaxHosts) }
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, *dir, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
	}
	os.Exit(code)
}

func logf(format string, a ...any) { fmt.Printf("  "+format+"\n", a...) }

func run(ctx context.Context, dir string, args []string) (int, error) {
	if len(args) == 0 {
		flag.Usage()
		return 2, nil
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		tenet := len(rest) == 2 && rest[1] == "--tenet"
		if len(rest) != 1 && !tenet {
			return 2, errors.New("up takes the number of hosts and optionally --tenet, e.g. up 3 --tenet")
		}
		n, err := strconv.Atoi(rest[0])
		if err != nil {
			return 2, fmt.Errorf("up %q: not a number of hosts", rest[0])
		}
		return up(ctx, dir, n, tenet)
	case "ls":
		return ls(dir)
	case "exec", "docker", "tenetctl":
		if len(rest) < 2 {
			return 2, fmt.Errorf("%s needs a host and a command, e.g. %s h0 ps", cmd, cmd)
		}
		return execOn(ctx, dir, cmd, rest[0], rest[1:])
	case "restart-tenetd", "restart-docker", "cut", "heal", "kill":
		crash := cmd == "restart-tenetd" && len(rest) == 2 && rest[1] == "--kill"
		if len(rest) != 1 && !crash {
			more := ""
			if cmd == "restart-tenetd" {
				more = " [--kill]"
			}
			return 2, fmt.Errorf("%s takes one host%s, e.g. %s h1", cmd, more, cmd)
		}
		return breakHost(ctx, dir, cmd, rest[0], crash)
	case "down":
		return down(ctx, dir, rest)
	case "reap":
		reaped, err := e2e.Reap(ctx, dir, logf)
		fmt.Printf("reaped %d stale run(s) %v\n", len(reaped), reaped)
		return exitCode(err), err
	case "leaks":
		found := e2e.Leaks(dir, "tb")
		for _, f := range found {
			fmt.Println("leak:", f)
		}
		if len(found) > 0 {
			return 1, fmt.Errorf("%d leftover object(s) of testbed runs", len(found))
		}
		fmt.Println("no testbed leftovers")
		return 0, nil
	default:
		flag.Usage()
		return 2, fmt.Errorf("unknown command %q", cmd)
	}
}

func exitCode(err error) int {
	if err != nil {
		return 1
	}
	return 0
}

func up(ctx context.Context, dir string, n int, tenet bool) (int, error) {
	fmt.Printf("bringing up %d host(s):\n", n)
	start := time.Now()
	tb, err := e2e.Up(ctx, e2e.Options{Hosts: n, Engines: true, Persistent: true, BaseDir: dir, Logf: logf})
	if err != nil {
		return 1, err
	}
	if tenet {
		if _, err := tb.StartTenetds(ctx); err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return 1, errors.Join(err, tb.Down(cctx))
		}
	}
	fmt.Printf("run %s is up in %.1fs:\n", tb.Run, time.Since(start).Seconds())
	fmt.Printf("  %-4s %-22s %-18s %s\n", "HOST", "NETNS", "UNDERLAY", "DOCKER SOCKET")
	for i, h := range tb.Hosts {
		fmt.Printf("  %-4s %-22s %-18s %s\n", h.Name(), h.Netns(), h.Underlay(), tb.Engines[i].Socket())
	}
	fmt.Println("try: scripts/testbed.sh docker h0 run --rm --network none " + e2e.ImageName + " ip addr")
	fmt.Println("then: scripts/testbed.sh down")
	return 0, nil
}

func ls(dir string) (int, error) {
	runs, err := e2e.Runs(dir)
	if err != nil {
		return 1, err
	}
	if len(runs) == 0 {
		fmt.Println("no testbed runs")
		return 0, nil
	}
	fmt.Printf("%-12s %-10s %-6s %-20s %s\n", "RUN", "KIND", "STALE", "CREATED", "HOSTS")
	for _, r := range runs {
		kind := "test"
		if r.Persistent {
			kind = "up"
		}
		fmt.Printf("%-12s %-10s %-6t %-20s %v\n", r.Run, kind, r.Stale, r.Created.Format(time.DateTime), r.Hosts)
	}
	return 0, nil
}

// current finds the one testbed brought up with "up".
func current(dir string) (*e2e.Testbed, error) {
	runs, err := e2e.Runs(dir)
	if err != nil {
		return nil, err
	}
	var up []string
	for _, r := range runs {
		if r.Persistent {
			up = append(up, r.Run)
		}
	}
	switch len(up) {
	case 0:
		return nil, errors.New("no testbed is up: run scripts/testbed.sh up N first")
	case 1:
		return e2e.Attach(dir, up[0], logf)
	default:
		return nil, fmt.Errorf("%d testbeds are up (%v): bring them down and up again", len(up), up)
	}
}

// execOn runs a command on a host with this process's standard input and
// outputs, and exits with the command's exit code (tenetctl's 2 for bad
// usage stays 2).
func execOn(ctx context.Context, dir, how string, host string, argv []string) (int, error) {
	tb, err := current(dir)
	if err != nil {
		return 1, err
	}
	i, err := tb.HostIndex(host)
	if err != nil {
		return 2, err
	}
	switch how {
	case "tenetctl":
		argv = append([]string{tb.Dir + "/tenetctl"}, argv...)
	case "docker":
		if i >= len(tb.Engines) {
			return 1, fmt.Errorf("host %s has no engine", host)
		}
		argv = tb.Engines[i].Argv(argv...)
	}
	err = tb.Hosts[i].RunStdio(ctx, os.Stdin, os.Stdout, os.Stderr, argv...)
	if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() > 0 {
		return ee.ExitCode(), nil // the command said why on stderr
	}
	return exitCode(err), err
}

// breakHost restarts a daemon, cuts, heals or kills a host, printing each step.
func breakHost(ctx context.Context, dir, cmd, host string, crash bool) (int, error) {
	tb, err := current(dir)
	if err != nil {
		return 1, err
	}
	if _, err := tb.HostIndex(host); err != nil {
		return 2, err
	}
	fmt.Printf("%s %s:\n", cmd, host)
	start := time.Now()
	var done string
	switch cmd {
	case "restart-tenetd":
		err, done = tb.RestartTenetd(ctx, host, crash), "tenetd restarted"
	case "restart-docker":
		err, done = tb.RestartEngine(ctx, host), "dockerd restarted (containers with a restart policy come back)"
	case "cut":
		err, done = tb.Cut(ctx, host), "cut from the underlay; undo with: scripts/testbed.sh heal "+host
	case "heal":
		err, done = tb.Heal(ctx, host), "back on the underlay"
	case "kill":
		err, done = tb.KillHost(ctx, host), "killed for good; the other hosts see it down (tenetctl host remove "+host+" reclaims its addresses)"
	}
	if err != nil {
		return 1, err
	}
	fmt.Printf("done in %.1fs: %s %s\n", time.Since(start).Seconds(), host, done)
	return 0, nil
}

func down(ctx context.Context, dir string, runs []string) (int, error) {
	if len(runs) == 0 {
		all, err := e2e.Runs(dir)
		if err != nil {
			return 1, err
		}
		for _, r := range all {
			if r.Persistent || r.Stale {
				runs = append(runs, r.Run)
			}
		}
	}
	if len(runs) == 0 {
		fmt.Println("nothing to bring down")
		return 0, nil
	}
	var errs []error
	for _, r := range runs {
		fmt.Printf("bringing down run %s:\n", r)
		if err := e2e.Teardown(ctx, dir, r, logf); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		fmt.Println("done: no namespace, process, cgroup, mount or directory of these runs is left")
	}
	return exitCode(err), err
}
