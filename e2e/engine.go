package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Engine is a real Docker engine (Debian's docker.io, 20.10 as of this
// writing) running on a host.
type Engine struct {
	host   Host
	sock   string
	daemon Daemon
	cfg    EngineConfig
}

// EngineConfig holds what differs between engines on one machine.
type EngineConfig struct {
	// CgroupParent puts the engine's containers below the testbed's cgroup,
	// so tear-down ends them too. Empty: Docker's default.
	CgroupParent string
	// LiveRestore keeps containers running while dockerd restarts.
	LiveRestore bool
	// DNS servers the engine gives its containers (dockerd --dns, the
	// "dns" of daemon.json), in order; empty: the host's resolv.conf.
	DNS []string
}

// DefaultDNS is what a testbed's engines are given, as the README's
// install steps set it: Tenet's resolver, then the outside world's server
// (ServeUpstreamDNS).
var DefaultDNS = []string{"169.254.53.53", Outside.String()}

// SetDNS changes the engine's DNS servers from its next Start.
func (e *Engine) SetDNS(servers []string) { e.cfg.DNS = servers }

// StartEngine starts dockerd on h, with its data root, exec root and socket in
// h.Dir()/docker, and waits until it answers.
func StartEngine(ctx context.Context, h Host, cfg EngineConfig) (*Engine, error) {
	dir := filepath.Join(h.Dir(), "docker")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	e := &Engine{host: h, sock: filepath.Join(dir, "docker.sock"), cfg: cfg}
	if err := e.Start(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// SystemEngine is an engine the host runs itself, as a system service (a
// VM's docker.service), serving its API at sock. The testbed does not start
// or stop it: Start, Stop and Daemon are not for it.
func SystemEngine(h Host, sock string) *Engine {
	return &Engine{host: h, sock: sock}
}

// Start starts the engine's dockerd (again) and waits until it answers.
func (e *Engine) Start(ctx context.Context) error {
	dir := filepath.Dir(e.sock)
	argv := []string{"dockerd",
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"-H", "unix://" + e.sock,
		// Otherwise Docker's defaults, as most hosts run it: docker0,
		// iptables (FORWARD policy DROP), the userland proxy. All of it
		// stays in the host's network namespace: the tables, docker0,
		// ip_forward and bridge-nf-call-iptables are per namespace (the
		// kernel has br_netfilter built in; nothing is loaded).
		// overlay2 makes docker run about 3x faster than vfs here.
		"--storage-driver=overlay2",
	}
	if e.cfg.CgroupParent != "" {
		argv = append(argv, "--cgroup-parent="+e.cfg.CgroupParent)
	}
	if e.cfg.LiveRestore {
		argv = append(argv, "--live-restore")
	}
	for _, s := range e.cfg.DNS {
		argv = append(argv, "--dns", s)
	}
	d, err := e.host.StartDaemon(ctx, DaemonSpec{Name: "dockerd", Argv: argv})
	if err != nil {
		return err
	}
	e.daemon = d
	return e.awaitReady(ctx, 60*time.Second)
}

func (e *Engine) awaitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := e.Docker(ctx, "version", "--format", "{{.Server.Version}}")
		if err == nil {
			return nil
		}
		select {
		case <-e.daemon.Done():
			return fmt.Errorf("dockerd on %s exited: %s", e.host.Name(), e.logTail())
		case <-ctx.Done():
			return fmt.Errorf("dockerd on %s: %w", e.host.Name(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd on %s not answering after %v: %w; log: %s", e.host.Name(), limit, err, e.logTail())
		}
	}
}

func (e *Engine) logTail() string {
	if e.daemon == nil {
		return ""
	}
	b, err := os.ReadFile(e.daemon.LogPath())
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 1500)
}

// Stop stops dockerd (SIGTERM; it stops its containers first).
func (e *Engine) Stop(ctx context.Context) error {
	if e.daemon == nil {
		return errors.New("engine was not started")
	}
	return e.daemon.Stop(ctx)
}

// SetLiveRestore sets --live-restore for the engine's next Start.
func (e *Engine) SetLiveRestore(on bool) { e.cfg.LiveRestore = on }

// Docker runs the docker CLI on the engine's host against this engine.
func (e *Engine) Docker(ctx context.Context, args ...string) (string, error) {
	return e.host.Run(ctx, e.Argv(args...)...)
}

// Argv is the command line, on the engine's host, of the docker CLI with
// args against this engine.
func (e *Engine) Argv(args ...string) []string {
	return append([]string{"docker", "-H", "unix://" + e.sock}, args...)
}

// Host is the host the engine runs on.
func (e *Engine) Host() Host { return e.host }

// Socket is the engine's API socket, as a path on its host.
func (e *Engine) Socket() string { return e.sock }

// Daemon is the engine's dockerd process.
func (e *Engine) Daemon() Daemon { return e.daemon }

// Containers lists the IDs of the engine's containers, running or not.
func (e *Engine) Containers(ctx context.Context) ([]string, error) {
	out, err := e.Docker(ctx, "ps", "-aq", "--no-trunc")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}
