package e2e

// Breaking a testbed on purpose, the way hosts break: a daemon crashes or is
// restarted by its admin, a host loses its underlay link and gets it back, a
// host dies for good. scripts/testbed.sh offers each as a command for hands-on
// work, and the operation fuzzer (e2e/fuzz) draws them at random; both call
// these functions, which log each step through the run's Logf.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// HostIndex returns the index of the host called name, or an error listing
// the hosts the run has.
func (tb *Testbed) HostIndex(name string) (int, error) {
	var names []string
	for i, h := range tb.Hosts {
		if h.Name() == name {
			return i, nil
		}
		names = append(names, h.Name())
	}
	return -1, fmt.Errorf("no host %q in run %s (hosts: %s)", name, tb.Run, strings.Join(names, " "))
}

// liveHost is HostIndex for a host that was not killed.
func (tb *Testbed) liveHost(name string) (int, error) {
	i, err := tb.HostIndex(name)
	if err != nil {
		return -1, err
	}
	tb.mu.Lock()
	killed := tb.led.Hosts[i].Killed
	tb.mu.Unlock()
	if killed {
		return -1, fmt.Errorf("host %s of run %s was killed for good", name, tb.Run)
	}
	return i, nil
}

// uplink is the underlay-side end of host name's veth, in the underlay
// namespace; the host's eth0 is its peer.
func (tb *Testbed) uplink(name string) string { return tb.Run + name }

// Cut takes host name off the underlay: the underlay end of its link goes
// down, as if its cable were pulled (its eth0 loses carrier). Its processes
// and containers keep running. No-op if it is already cut.
func (tb *Testbed) Cut(ctx context.Context, name string) error {
	if _, err := tb.liveHost(name); err != nil {
		return fmt.Errorf("cut: %w", err)
	}
	return tb.ip(ctx, "-n", tb.underlayNetns(), "link", "set", tb.uplink(name), "down")
}

// Heal puts host name back on the underlay after Cut. No-op if it is not cut.
func (tb *Testbed) Heal(ctx context.Context, name string) error {
	if _, err := tb.liveHost(name); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	return tb.ip(ctx, "-n", tb.underlayNetns(), "link", "set", tb.uplink(name), "up")
}

// IsCut reports whether host name is off the underlay (Cut, not healed).
func (tb *Testbed) IsCut(ctx context.Context, name string) (bool, error) {
	if _, err := tb.liveHost(name); err != nil {
		return false, err
	}
	out, err := exec.CommandContext(ctx, "ip", "-j", "-n", tb.underlayNetns(), "link", "show", tb.uplink(name)).Output()
	if err != nil {
		return false, fmt.Errorf("link of host %s: %w", name, err)
	}
	var links []struct {
		Flags []string `json:"flags"` // UP is the administrative state
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return false, fmt.Errorf("link of host %s: unexpected ip -j output %q", name, out)
	}
	return !slices.Contains(links[0].Flags, "UP"), nil
}

// KillHost kills host name for good, as a power cut would: every process of
// it (namespace holder, dockerd, containerd, tenetd, its containers) dies at
// once through its cgroup, and its underlay link is deleted. Its namespaces
// and directory stay until the run is torn down. The ledger marks it killed;
// later calls on it fail, naming that.
func (tb *Testbed) KillHost(ctx context.Context, name string) error {
	i, err := tb.liveHost(name)
	if err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	cg := filepath.Join(tb.led.Cgroup, name)
	tb.logf("kill host %s: every process in cgroup %s (pids %v)", name, cg, cgroupPIDs(cg))
	tb.mu.Lock()
	tb.led.Hosts[i].Killed = true
	tb.mu.Unlock()
	if err := tb.saveLedger(); err != nil {
		return err
	}
	kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := killCgroup(kctx, cg); err != nil {
		return fmt.Errorf("kill host %s: %w", name, err)
	}
	return tb.ip(ctx, "-n", tb.underlayNetns(), "link", "del", tb.uplink(name))
}

// Killed reports whether host name was killed for good (KillHost).
func (tb *Testbed) Killed(name string) bool {
	i, err := tb.HostIndex(name)
	if err != nil {
		return false
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.led.Hosts[i].Killed
}

// StopTenetd stops tenetd on host name as RestartTenetd does, and returns
// it (Start starts it again).
func (tb *Testbed) StopTenetd(ctx context.Context, name string, crash bool) (*Tenetd, error) {
	i, err := tb.liveHost(name)
	if err != nil {
		return nil, fmt.Errorf("stop tenetd: %w", err)
	}
	if i >= len(tb.Tenetds) || tb.Tenetds[i] == nil {
		return nil, fmt.Errorf("stop tenetd: host %s runs no tenetd (bring the testbed up with --tenet)", name)
	}
	t := tb.Tenetds[i]
	if err := stopDaemon(ctx, tb.logf, name, t.Daemon, crash); err != nil {
		return nil, err
	}
	return t, nil
}

// RestartTenetd stops tenetd on host name and starts it again with the same
// arguments, waiting until it serves its plugin socket. crash kills it
// (SIGKILL, as kill -9 or an OOM kill would); otherwise it is asked to end
// (SIGTERM, as systemctl restart would) and killed after 30 s.
func (tb *Testbed) RestartTenetd(ctx context.Context, name string, crash bool) error {
	t, err := tb.StopTenetd(ctx, name, crash)
	if err != nil {
		return fmt.Errorf("restart tenetd: %w", err)
	}
	if err := t.Start(ctx); err != nil {
		return err
	}
	tb.logf("host %s: tenetd started, pid %d, serving its plugin socket", name, t.Daemon.PID())
	return nil
}

// RestartEngine stops dockerd on host name (SIGTERM: it stops its
// containers first, unless it runs with --live-restore) and starts it again,
// waiting until it answers. Containers with a restart policy come back.
func (tb *Testbed) RestartEngine(ctx context.Context, name string) error {
	i, err := tb.liveHost(name)
	if err != nil {
		return fmt.Errorf("restart docker: %w", err)
	}
	if i >= len(tb.Engines) || tb.Engines[i] == nil {
		return fmt.Errorf("restart docker: host %s runs no Docker engine", name)
	}
	e := tb.Engines[i]
	if e.daemon == nil {
		return fmt.Errorf("restart docker: host %s: the ledger has no dockerd", name)
	}
	if err := stopDaemon(ctx, tb.logf, name, e.daemon, false); err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	tb.logf("host %s: dockerd started, pid %d, answering", name, e.daemon.PID())
	return nil
}

func stopDaemon(ctx context.Context, logf func(string, ...any), host string, d Daemon, crash bool) error {
	select {
	case <-d.Done():
		logf("host %s: %s (pid %d) is not running", host, d.Name(), d.PID())
		return nil
	default:
	}
	if crash {
		logf("host %s: kill -9 %s (pid %d)", host, d.Name(), d.PID())
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return d.Kill(kctx)
	}
	logf("host %s: stop %s (pid %d, SIGTERM, SIGKILL after 30s)", host, d.Name(), d.PID())
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.Stop(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
