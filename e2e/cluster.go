package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// Cluster is a testbed owned by one test: NewCluster brings it up and the
// test's cleanup takes it down, also when the test fails.
type Cluster struct {
	*Testbed
}

// RequireRoot skips t unless it runs as root; e2e tests also skip in -short
// mode.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root: creates network namespaces, mounts, cgroups and Docker engines")
	}
}

// NewCluster brings up n hosts, each with a Docker engine and the test image.
// Its cleanup is registered before anything is created; on failure it first
// writes every host's daemon logs to t.Log.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if reaped, err := Reap(ctx, DefaultBaseDir, t.Logf); err != nil {
		t.Logf("reap stale testbed runs: %v", err)
	} else if len(reaped) > 0 {
		t.Logf("removed stale testbed runs %v", reaped)
	}
	c := &Cluster{}
	t.Cleanup(func() {
		if c.Testbed == nil {
			return
		}
		if t.Failed() {
			c.DumpLogs(t)
		}
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Down(cctx); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	tb, err := Up(ctx, Options{Hosts: n, Engines: true, Logf: func(f string, a ...any) {
		if testing.Verbose() {
			t.Logf(f, a...)
		}
	}})
	if err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	c.Testbed = tb
	return c
}

// DumpLogs writes each host's daemon logs and links to t.Log.
func (c *Cluster) DumpLogs(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, h := range c.Hosts {
		logs, _ := os.ReadDir(h.Dir())
		for _, l := range logs {
			if !strings.HasSuffix(l.Name(), ".log") {
				continue
			}
			b, _ := os.ReadFile(h.Dir() + "/" + l.Name())
			t.Logf("--- %s %s ---\n%s", h.Name(), l.Name(), tail(string(b), 4000))
		}
		for _, argv := range [][]string{{"ip", "-d", "addr"}, {"nft", "list", "ruleset"}, {"iptables", "-S", "FORWARD"}} {
			out, err := h.Run(ctx, argv...)
			if err != nil {
				out += err.Error()
			}
			t.Logf("--- %s %s ---\n%s", h.Name(), strings.Join(argv, " "), tail(out, 6000))
		}
	}
}

// Eventually polls check until it returns nil or limit passes, then fails t
// with check's last error.
func Eventually(t testing.TB, limit time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Engine returns host i's engine.
func (c *Cluster) Engine(i int) *Engine {
	if i < 0 || i >= len(c.Engines) {
		panic(fmt.Sprintf("cluster has %d engines, no %d", len(c.Engines), i))
	}
	return c.Engines[i]
}

// StartTenetds starts tenetd on every host (Testbed.StartTenetds) or fails
// t. The daemons end with the testbed.
func (c *Cluster) StartTenetds(t testing.TB) []*Tenetd {
	t.Helper()
	ds, err := c.Testbed.StartTenetds(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// AwaitPing waits until container from on engine e answers a ping to ip.
func AwaitPing(t testing.TB, e *Engine, from, ip string) {
	t.Helper()
	Eventually(t, 15*time.Second, func() error {
		_, err := e.Docker(t.Context(), "exec", from, "ping", "-c1", "-W1", ip)
		return err
	})
}

// NeverPing checks that container from cannot reach ip, for a few tries.
func NeverPing(t testing.TB, e *Engine, from, ip string) {
	t.Helper()
	for range 3 {
		if _, err := e.Docker(t.Context(), "exec", from, "ping", "-c1", "-W1", ip); err == nil {
			t.Errorf("%s on %s reached %s", from, e.Host().Name(), ip)
			return
		}
	}
}
