package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

const probeSocket = "/run/docker/plugins/tenet-probe.sock"

// buildProbe builds the probe plugin (a do-nothing network driver that logs
// each call with its host's name).
func buildProbe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "probeplugin")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/probeplugin").CombinedOutput()
	if err != nil {
		t.Fatalf("build probe plugin: %v\n%s", err, out)
	}
	return bin
}

func startProbe(t *testing.T, h e2e.Host, bin, socket string) e2e.Daemon {
	t.Helper()
	ctx := t.Context()
	name := strings.TrimSuffix(filepath.Base(socket), ".sock")
	d, err := h.StartDaemon(ctx, e2e.DaemonSpec{Name: name, Argv: []string{bin, "--socket", socket, "--host", h.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 10*time.Second, func() error {
		_, err := h.Run(ctx, "test", "-S", socket)
		return err
	})
	return d
}

func readLog(t *testing.T, h e2e.Host, d e2e.Daemon) string {
	t.Helper()
	out, err := h.Run(t.Context(), "cat", d.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestThreeHostsEachEngineRunsContainersAndFindsOnlyItsOwnPlugin is the
// foundation every multi-host test stands on: three hosts, a real engine on
// each running a container, and plugin discovery that is per host.
func TestThreeHostsEachEngineRunsContainersAndFindsOnlyItsOwnPlugin(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	ctx := t.Context()
	probe := buildProbe(t)

	// The underlay connects the hosts: each pings the next one's address.
	for i, h := range c.Hosts {
		peer := c.Hosts[(i+1)%len(c.Hosts)]
		if _, err := h.Run(ctx, "ping", "-c1", "-W2", peer.Underlay().Addr().String()); err != nil {
			t.Errorf("underlay %s -> %s: %v", h.Name(), peer.Name(), err)
		}
		out, err := h.Run(ctx, "cat", "/sys/class/net/eth0/mtu")
		if err != nil || strings.TrimSpace(out) != fmt.Sprint(e2e.UnderlayMTU) {
			t.Errorf("%s: eth0 mtu %q (%v), want %d", h.Name(), out, err, e2e.UnderlayMTU)
		}
	}

	// A container on each engine, with the tools tests rely on.
	for i, e := range c.Engines {
		out, err := e.Docker(ctx, "run", "--rm", "--network", "none", e2e.ImageName, "sh", "-c",
			"ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok; ip -o link show lo; nc 2>&1 | head -1; iperf3 --version | head -1")
		if err != nil {
			t.Fatalf("host %d: %v", i, err)
		}
		for _, want := range []string{"ping-ok", "lo:", "BusyBox", "iperf 3"} {
			if !strings.Contains(out, want) {
				t.Errorf("host %d: container output lacks %q:\n%s", i, want, out)
			}
		}
		if _, err := e.Docker(ctx, "run", "-d", "--name", "on-"+e.Host().Name(), "--network", "none", e2e.ImageName, "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range c.Engines {
		out, err := e.Docker(ctx, "ps", "--format", "{{.Names}}")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Fields(out), []string{"on-" + e.Host().Name()}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: running containers %v, want %v", e.Host().Name(), got, want)
		}
	}

	// A plugin of the same name on every host; nothing in the root namespace.
	probes := make([]e2e.Daemon, len(c.Hosts))
	for i, h := range c.Hosts {
		probes[i] = startProbe(t, h, probe, probeSocket)
	}
	if _, err := os.Stat(probeSocket); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is visible in the root mount namespace (err %v)", probeSocket, err)
	}
	netIDs := make([]string, len(c.Engines))
	for i, e := range c.Engines {
		out, err := e.Docker(ctx, "network", "create", "-d", "tenet-probe", "probe-"+e.Host().Name())
		if err != nil {
			t.Fatal(err)
		}
		netIDs[i] = strings.TrimSpace(out)
	}
	// Each engine called only its own host's plugin: host i's log holds
	// host i's network and no other.
	for i, h := range c.Hosts {
		log := readLog(t, h, probes[i])
		if !strings.Contains(log, "probe host="+h.Name()) {
			t.Errorf("%s: probe log does not start with its host:\n%s", h.Name(), log)
		}
		for j, id := range netIDs {
			has := strings.Contains(log, "path=/NetworkDriver.CreateNetwork network="+id)
			if has != (i == j) {
				t.Errorf("%s's plugin saw CreateNetwork of %s's network %s: %v, want %v\n%s",
					h.Name(), c.Hosts[j].Name(), id[:12], has, i == j, log)
			}
		}
	}

	// A plugin present only on h0 is not found by the other engines. Docker
	// retries a missing plugin for about 15 s before giving up; both
	// engines wait at once.
	startProbe(t, c.Hosts[0], probe, "/run/docker/plugins/tenet-solo.sock")
	if _, err := c.Engine(0).Docker(ctx, "network", "create", "-d", "tenet-solo", "solo"); err != nil {
		t.Fatalf("h0 cannot use its own plugin: %v", err)
	}
	var wg sync.WaitGroup
	for _, e := range c.Engines[1:] {
		wg.Go(func() {
			out, err := e.Docker(ctx, "network", "create", "-d", "tenet-solo", "solo")
			if err == nil || !strings.Contains(out, "not found") {
				t.Errorf("%s found h0's plugin: err %v, output %q", e.Host().Name(), err, out)
			}
		})
	}
	wg.Wait()
}

// TestDownLeavesNothing brings a testbed with running containers down and
// checks that no namespace, process, cgroup, mount or directory remains.
func TestDownLeavesNothing(t *testing.T) {
	e2e.RequireRoot(t)
	ctx := t.Context()
	tb, err := e2e.Up(ctx, e2e.Options{Hosts: 2, Engines: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Down(context.Background()) }) // in case a check below fails first
	for _, e := range tb.Engines {
		if _, err := e.Docker(ctx, "run", "-d", "--network", "none", e2e.ImageName, "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	if leaks := e2e.Leaks(e2e.DefaultBaseDir, tb.Run); len(leaks) == 0 {
		t.Fatal("Leaks finds nothing of a running testbed; it cannot be trusted to find leftovers")
	}
	if err := tb.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if leaks := e2e.Leaks(e2e.DefaultBaseDir, tb.Run); len(leaks) > 0 {
		t.Fatalf("after Down:\n%s", strings.Join(leaks, "\n"))
	}
	if err := tb.Down(ctx); err != nil {
		t.Fatalf("second Down: %v", err)
	}
}

const helperEnv = "TENET_E2E_HELPER"

// TestHelperUp is not a test: TestKilledRunIsReaped runs the test binary with
// helperEnv set, and this brings up a testbed, prints its run name and waits
// to be killed.
func TestHelperUp(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestKilledRunIsReaped")
	}
	tb, err := e2e.Up(t.Context(), e2e.Options{Hosts: 1, Engines: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Engines[0].Docker(t.Context(), "run", "-d", "--network", "none", e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("run=%s\n", tb.Run)
	select {
	case <-t.Context().Done():
	case <-time.After(2 * time.Minute): // never reached: the parent kills us
	}
}

// TestKilledRunIsReaped kills (SIGKILL) a process that owns a running
// testbed, as a test timeout would, and checks that Reap removes all of it.
func TestKilledRunIsReaped(t *testing.T) {
	e2e.RequireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperUp$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	run := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if r, ok := strings.CutPrefix(sc.Text(), "run="); ok {
				run <- r
			}
		}
		close(run)
	}()
	var name string
	select {
	case name = <-run:
	case <-time.After(2 * time.Minute):
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if name == "" {
		t.Fatal("helper did not bring a testbed up")
	}
	t.Cleanup(func() { _ = e2e.Teardown(context.Background(), e2e.DefaultBaseDir, name, nil) })

	if len(e2e.Leaks(e2e.DefaultBaseDir, name)) == 0 {
		t.Fatal("the killed helper's testbed is already gone; nothing to reap")
	}
	reaped, err := e2e.Reap(t.Context(), e2e.DefaultBaseDir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(reaped), name) {
		t.Errorf("Reap removed %v, not the killed run %s", reaped, name)
	}
	if leaks := e2e.Leaks(e2e.DefaultBaseDir, name); len(leaks) > 0 {
		t.Fatalf("after Reap:\n%s", strings.Join(leaks, "\n"))
	}
}
