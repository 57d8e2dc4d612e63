package vm

import (
	"context"
	"os"
	"testing"
	"time"
)

// Require skips t unless VM tests were asked for: they boot QEMU VMs for
// minutes, so they run only with TENET_VM=1 (scripts/test-vm.sh sets it), as
// root, and not in -short mode.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("vm: skipped in -short mode")
	}
	if os.Getenv("TENET_VM") != "1" {
		t.Skip("vm: VM tests run only when asked (TENET_VM=1, or scripts/test-vm.sh): they boot QEMU VMs and take minutes")
	}
	if os.Geteuid() != 0 {
		t.Skip("vm: needs root: creates a network namespace, taps and QEMU VMs")
	}
}

// Cluster is a VM testbed owned by one test: NewCluster boots it and the
// test's cleanup takes it down, also when the test fails.
type Cluster struct {
	*Testbed
}

// NewCluster boots n VMs of release, each with Docker as Debian installs it
// and the test image. Its cleanup is registered before anything is created;
// on failure it first writes every VM's logs to t.Log.
func NewCluster(t testing.TB, n int, release string) *Cluster {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if reaped, err := Reap(ctx, DefaultBaseDir, t.Logf); err != nil {
		t.Logf("reap stale VM runs: %v", err)
	} else if len(reaped) > 0 {
		t.Logf("removed stale VM runs %v", reaped)
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
			t.Errorf("vm testbed down: %v", err)
		}
	})
	tb, err := Up(ctx, Options{Hosts: n, Release: release, Logf: t.Logf})
	if err != nil {
		t.Fatalf("vm testbed up: %v", err)
	}
	c.Testbed = tb
	return c
}

// DumpLogs writes each VM's tenetd and docker journals, links and console
// tail to t.Log.
func (c *Cluster) DumpLogs(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, h := range c.Hosts {
		for _, cmd := range [][]string{
			// Warnings first: under the suite's short key rotation, the
			// tail of the whole journal is mostly rotation.
			{"journalctl", "-b", "-u", "tenetd", "--no-pager", "-p", "warning", "-n", "60"},
			{"journalctl", "-b", "-u", "tenetd", "--no-pager", "-n", "150"},
			{"journalctl", "-b", "-u", "docker", "--no-pager", "-n", "60"},
			{"ip", "-d", "link"},
			{"sh", "-c", "for n in $(ip netns list | cut -d' ' -f1); do echo \"== $n\"; ip netns exec $n bridge fdb show | grep dst; done"},
		} {
			out, err := h.Run(ctx, cmd...)
			if err != nil {
				out += "\n" + err.Error()
			}
			t.Logf("--- %s: %v ---\n%s", h.Name(), cmd, tail(out, 8000))
		}
		t.Logf("--- %s: console ---\n%s", h.Name(), h.consoleTail())
	}
}
