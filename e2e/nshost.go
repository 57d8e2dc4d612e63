package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NetnsHost is a simulated host on this machine: a network namespace joined to
// the run's underlay bridge, plus a private mount namespace in which /sys
// describes the host's network namespace and /run/docker, /run/containerd and
// /etc/docker are the host's own directories. Each host therefore has its own
// Docker plugin discovery: a socket in /run/docker/plugins on one host is not
// seen on another, nor in the root namespace.
//
// Both namespaces are held open by a "holder" process (sleep); everything on
// the host runs through nsenter into the holder's namespaces.
type NetnsHost struct {
	name     string
	netns    string
	dir      string
	underlay netip.Prefix
	holder   proc
	cgroup   string // v2 cgroup of the host's processes, relative to the root

	mu       sync.Mutex // guards the field below
	onDaemon func(daemonRecord) error
}

var _ Host = (*NetnsHost)(nil)

func (h *NetnsHost) Name() string           { return h.name }
func (h *NetnsHost) Underlay() netip.Prefix { return h.underlay }
func (h *NetnsHost) Dir() string            { return h.dir }

// Netns is the name of the host's network namespace (under /run/netns).
func (h *NetnsHost) Netns() string { return h.netns }

// holderScript prepares the host's mount namespace and then parks.
// Measured recipe (shared/TESTBED.md): sysfs must be mounted from inside the
// host's network namespace, and a fresh sysfs hides the cgroup mounts, so they
// are moved aside first and moved back on top.
func holderScript(dir string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	hold := filepath.Join(dir, "mnt", "cgroup-hold")
	var b strings.Builder
	b.WriteString("set -e\n")
	fmt.Fprintf(&b, "mount --rbind /sys/fs/cgroup %s\n", q(hold))
	b.WriteString("mount -t sysfs sysfs /sys\n")
	fmt.Fprintf(&b, "mount --move %s /sys/fs/cgroup\n", q(hold))
	for _, m := range hostMounts {
		src := filepath.Join(dir, "mnt", m.dir)
		fmt.Fprintf(&b, "mkdir -p %s\nmount --bind %s %s\n", m.target, q(src), m.target)
	}
	b.WriteString("echo ready\nexec sleep infinity\n")
	return b.String()
}

// hostMounts are the directories each host has to itself.
var hostMounts = []struct{ dir, target string }{
	{"run-docker", "/run/docker"},         // plugin sockets: /run/docker/plugins
	{"run-containerd", "/run/containerd"}, // shim sockets
	{"etc-docker", "/etc/docker"},         // plugin spec files: /etc/docker/plugins
	{"run-netns", "/run/netns"},           // the host's named namespaces (tenetd's tenants)
	{"run-tenet", "/run/tenet"},           // tenetd's admin socket
}

// startHolder starts the process that holds the host's namespaces and waits
// until its mount namespace is ready.
func startHolder(ctx context.Context, dir, netns, cgroup string) (proc, error) {
	for _, d := range []string{"cgroup-hold", "run-docker", "run-containerd", "etc-docker", "run-netns", "run-tenet"} {
		if err := os.MkdirAll(filepath.Join(dir, "mnt", d), 0o755); err != nil {
			return proc{}, err
		}
	}
	logPath := filepath.Join(dir, "holder.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return proc{}, err
	}
	defer logf.Close()
	cg, err := openCgroup(cgroup)
	if err != nil {
		return proc{}, err
	}
	defer cg.Close()

	cmd := exec.Command("unshare", "--mount", "--propagation", "slave", "--",
		"nsenter", "--net=/run/netns/"+netns, "--", "sh", "-c", holderScript(dir))
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return proc{}, err
	}
	if err := cmd.Start(); err != nil {
		return proc{}, fmt.Errorf("start holder of %s: %w", netns, err)
	}
	// The holder lives on after this process (testbed up); nobody waits for
	// it but the cgroup kill in tear-down. Release it so no zombie is kept.
	p, perr := procOf(cmd.Process.Pid)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			_ = cmd.Wait()
			b, _ := os.ReadFile(logPath)
			return proc{}, fmt.Errorf("holder of %s failed: %s", netns, strings.TrimSpace(string(b)))
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return proc{}, fmt.Errorf("holder of %s: %w", netns, ctx.Err())
	}
	if perr != nil {
		return proc{}, fmt.Errorf("holder of %s: %w", netns, perr)
	}
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return p, nil
}

// enter builds the command that runs argv inside the host's namespaces and
// cgroup. The caller closes the returned file after Start.
func (h *NetnsHost) enter(ctx context.Context, argv []string, bound bool) (*exec.Cmd, *os.File, error) {
	if len(argv) == 0 {
		return nil, nil, errors.New("empty command")
	}
	if !h.holder.alive() {
		return nil, nil, fmt.Errorf("host %s is down: its namespace holder (pid %d) is gone", h.name, h.holder.PID)
	}
	cg, err := openCgroup(h.cgroup)
	if err != nil {
		return nil, nil, err
	}
	args := append([]string{"-t", strconv.Itoa(h.holder.PID), "-n", "-m", "--"}, argv...)
	var cmd *exec.Cmd
	if bound {
		cmd = exec.CommandContext(ctx, "nsenter", args...)
	} else {
		cmd = exec.Command("nsenter", args...)
	}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	return cmd, cg, nil
}

// Run runs argv in the host's namespaces and returns its combined output.
func (h *NetnsHost) Run(ctx context.Context, argv ...string) (string, error) {
	cmd, cg, err := h.enter(ctx, argv, true)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", h.name, strings.Join(argv, " "), err)
	}
	defer cg.Close()
	cmd.WaitDelay = 5 * time.Second // a stray grandchild must not hold the pipe forever
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", h.name, strings.Join(argv, " "), err, tail(string(out), 2000))
	}
	return string(out), nil
}

// RunStdio runs argv in the host's namespaces with the given standard input
// and outputs (nil: none), as a shell would (scripts/testbed.sh exec). A
// non-zero exit is an *exec.ExitError carrying the command's exit code.
func (h *NetnsHost) RunStdio(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv ...string) error {
	cmd, cg, err := h.enter(ctx, argv, true)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", h.name, strings.Join(argv, " "), err)
	}
	defer cg.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd.Run()
}

// StartDaemon starts spec.Argv in the host's namespaces, detached from this
// process's session, logging to Dir()/<name>.log.
func (h *NetnsHost) StartDaemon(ctx context.Context, spec DaemonSpec) (Daemon, error) {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/ ") {
		return nil, fmt.Errorf("start daemon on %s: name %q: must be a non-empty word", h.name, spec.Name)
	}
	cmd, cg, err := h.enter(ctx, spec.Argv, false)
	if err != nil {
		return nil, fmt.Errorf("start %s on %s: %w", spec.Name, h.name, err)
	}
	defer cg.Close()
	logPath := filepath.Join(h.dir, spec.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setsid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s on %s: %w", spec.Name, h.name, err)
	}
	d, err := newProcDaemon(spec.Name, cmd, logPath)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	record := h.onDaemon
	h.mu.Unlock()
	if record != nil {
		if err := record(daemonRecord{Name: spec.Name, Proc: d.p, Log: logPath, Argv: spec.Argv}); err != nil {
			return d, err
		}
	}
	return d, nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
