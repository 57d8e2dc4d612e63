package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

// Tenetd is a tenetd daemon running on a testbed host.
type Tenetd struct {
	Host   Host
	Daemon Daemon
	argv   []string
}

// BuildTenetd compiles cmd/tenetd and cmd/tenetctl into dir and returns
// tenetd's path (tenetctl is beside it).
func BuildTenetd(dir string) (string, error) {
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" || strings.TrimSpace(string(mod)) == os.DevNull {
		return "", fmt.Errorf("find module root (run from the Tenet repository): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	for _, name := range []string{"tenetd", "tenetctl"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %w: %s", name, err, out)
		}
	}
	return filepath.Join(dir, "tenetd"), nil
}

// WriteClusterKey writes a new cluster key (hex) to path.
func WriteClusterKey(path string) error {
	k, err := gossip.GenerateKey()
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("%x\n", k)), 0o600)
}

// StartTenetd starts tenetd on h, joining the hosts at seeds (addresses),
// with ipamSeeds (host names) owning the address blocks at first, its state
// in h.Dir()/tenet, and waits for its plugin socket.
func StartTenetd(ctx context.Context, h Host, bin, keyFile string, seeds, ipamSeeds []string) (*Tenetd, error) {
	argv := []string{bin, "--name", h.Name(), "--vtep", h.Underlay().Addr().String(),
		"--key-file", keyFile, "--state-dir", filepath.Join(h.Dir(), "tenet"), "--log-level", "debug",
		"--ipam-seeds", strings.Join(ipamSeeds, ","),
		"--docker-socket", filepath.Join(h.Dir(), "docker", "docker.sock"),
		// The outside world's DNS server (ServeUpstreamDNS), never the
		// machine's own.
		"--dns-upstream", Outside.String()}
	if len(seeds) > 0 {
		argv = append(argv, "--join", strings.Join(seeds, ","))
	}
	t := &Tenetd{Host: h, argv: argv}
	return t, t.Start(ctx)
}

// Start starts (again) the daemon and waits until it serves its plugin
// socket (its log says so: a socket file left by a killed daemon proves
// nothing).
func (t *Tenetd) Start(ctx context.Context) error {
	logPath := filepath.Join(t.Host.Dir(), "tenetd.log")
	before := 0
	if out, err := t.Host.Run(ctx, "cat", logPath); err == nil {
		before = len(out)
	}
	d, err := t.Host.StartDaemon(ctx, DaemonSpec{Name: "tenetd", Argv: t.argv})
	if err != nil {
		return err
	}
	t.Daemon = d
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := t.Host.Run(ctx, "cat", logPath)
		if len(out) > before && strings.Contains(out[before:], "serving docker plugin") {
			return nil
		}
		select {
		case <-d.Done():
			b, _ := os.ReadFile(d.LogPath())
			return fmt.Errorf("tenetd on %s exited: %s", t.Host.Name(), tail(string(b), 2000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tenetd on %s: no plugin socket after 30s", t.Host.Name())
		}
	}
}

// StartTenetds builds tenetd and tenetctl into the run's directory, writes a
// new cluster key there, and starts tenetd on every host, each joining all
// the others, with all hosts as IPAM seeds.
func (tb *Testbed) StartTenetds(ctx context.Context) ([]*Tenetd, error) {
	bin, err := BuildTenetd(tb.Dir)
	if err != nil {
		return nil, err
	}
	key := filepath.Join(tb.Dir, "cluster.key")
	if err := WriteClusterKey(key); err != nil {
		return nil, err
	}
	tb.logf("cluster key %s (AES-256-GCM, new for this run)", key)
	var names []string
	for _, h := range tb.Hosts {
		names = append(names, h.Name())
	}
	var ds []*Tenetd
	for _, h := range tb.Hosts {
		var seeds []string
		for _, o := range tb.Hosts {
			if o != h {
				seeds = append(seeds, o.Underlay().Addr().String())
			}
		}
		d, err := StartTenetd(ctx, h, bin, key, seeds, names)
		if err != nil {
			return ds, err
		}
		tb.logf("host %s: tenetd pid %d, plugin /run/docker/plugins/tenet.sock, log %s", h.Name(), d.Daemon.PID(), d.Daemon.LogPath())
		ds = append(ds, d)
	}
	tb.Tenetds = ds
	return ds, nil
}
