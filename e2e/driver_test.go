package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// createNetwork runs the README's command on every engine.
func createNetwork(t *testing.T, c *e2e.Cluster, tenant, name, subnet string) string {
	t.Helper()
	dockerName := tenant + "-" + name
	for _, e := range c.Engines {
		if _, err := e.Docker(t.Context(), "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant="+tenant,
			"-o", "tenant="+tenant, "-o", "network="+name, "--subnet", subnet, dockerName); err != nil {
			t.Fatal(err)
		}
	}
	return dockerName
}

func run(t *testing.T, e *e2e.Engine, name, network, ip string) {
	t.Helper()
	if _, err := e.Docker(t.Context(), "run", "-d", "--name", name, "--network", network, "--ip", ip, e2e.ImageName, "sleep", "3600"); err != nil {
		t.Fatal(err)
	}
}

// fdb lists the static entries (MAC -> VTEP) of the VXLAN devices in a
// host's tenant namespace; entries the bridge learned are left out.
func fdb(t *testing.T, h e2e.Host, tenant string) string {
	t.Helper()
	out, err := h.Run(t.Context(), "sh", "-c", "ip netns exec tenet-"+tenant+" bridge fdb show | grep 'dev vx.* dst '")
	if err != nil && out != "" {
		t.Fatal(err)
	}
	return out
}

func mac(t *testing.T, e *e2e.Engine, container string) string {
	t.Helper()
	out, err := e.Docker(t.Context(), "exec", container, "cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// tcp sends a line from one container to a listener in another and
// returns an error unless the listener received it, in one of three tries.
// The listener runs in the foreground of a docker exec (so its end is
// seen); the sender retries until it is up.
func tcp(t *testing.T, from *e2e.Engine, fromName string, to *e2e.Engine, toName, toIP string) error {
	t.Helper()
	var err error
	for range 3 {
		if err = tcpOnce(t, from, fromName, to, toName, toIP); err == nil {
			return nil
		}
		t.Logf("tcp %s -> %s: %v; trying again", fromName, toName, err)
	}
	return err
}

func tcpOnce(t *testing.T, from *e2e.Engine, fromName string, to *e2e.Engine, toName, toIP string) error {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	word := fmt.Sprintf("hello-%s-%d", fromName, time.Now().UnixNano())
	got := make(chan string, 1)
	go func() {
		out, _ := to.Docker(ctx, "exec", toName, "timeout", "15", "nc", "-l", "-p", "5000")
		got <- out
	}()
	var err error
	for ctx.Err() == nil {
		if _, err = from.Docker(ctx, "exec", fromName, "sh", "-c", "echo "+word+" | nc -w 2 "+toIP+" 5000"); err == nil {
			break
		}
		select {
		case out := <-got:
			return fmt.Errorf("listener in %s ended before the send (%q); last send: %v", toName, out, err)
		case <-time.After(100 * time.Millisecond): // poll interval while the listener starts
		}
	}
	if err != nil {
		return err
	}
	select {
	case out := <-got:
		if !strings.Contains(out, word) {
			return fmt.Errorf("%s received %q, want %q", toName, out, word)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: listener never returned: %w", toName, ctx.Err())
	}
}

func TestContainersOnThreeHostsShareATenantNetwork(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	c.StartTenetds(t)
	ctx := t.Context()
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	ips := []string{"10.1.0.10", "10.1.0.74", "10.1.0.138"}
	for i, e := range c.Engines {
		run(t, e, fmt.Sprint("c", i), net, ips[i])
	}
	for i, e := range c.Engines {
		for j := range c.Engines {
			if i != j {
				e2e.AwaitPing(t, e, fmt.Sprint("c", i), ips[j])
			}
		}
	}
	// tenetctl on any host lists every container, with the host it lives on.
	tenetctl := c.Dir + "/tenetctl"
	for _, h := range c.Hosts {
		e2e.Eventually(t, 10*time.Second, func() error {
			out, err := h.Run(ctx, tenetctl, "endpoint", "ls", "--json")
			if err != nil {
				return err
			}
			var eps []struct{ IP, Host, Network string }
			if err := json.Unmarshal([]byte(out), &eps); err != nil {
				return fmt.Errorf("tenetctl endpoint ls --json: %w: %s", err, out)
			}
			got := map[string]string{}
			for _, e := range eps {
				got[e.IP] = e.Host + " " + e.Network
			}
			for i, ip := range ips {
				if want := fmt.Sprintf("h%d acme/web", i); got[ip] != want {
					return fmt.Errorf("%s: tenetctl says %s is at %q, want %q", h.Name(), ip, got[ip], want)
				}
			}
			return nil
		})
	}
	if out, err := c.Hosts[0].Run(ctx, tenetctl, "endpoint", "ls"); err != nil || !strings.Contains(out, "NETWORK") {
		t.Errorf("tenetctl endpoint ls: %v\n%s", err, out)
	} else {
		t.Logf("tenetctl endpoint ls on h0:\n%s", out)
	}
	// Only root may use tenetctl or the plugin socket.
	for _, sock := range []string{"/run/tenet/admin.sock", "/run/docker/plugins/tenet.sock"} {
		out, err := c.Hosts[0].Run(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", tenetctl, "--socket", sock, "status")
		if err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("a non-root user asked %s: err %v, output %q", sock, err, out)
		}
	}

	// The container's interface has the network's MTU: the underlay's 1500
	// minus 50.
	if out, err := c.Engine(0).Docker(ctx, "exec", "c0", "cat", "/sys/class/net/eth0/mtu"); err != nil || strings.TrimSpace(out) != "1450" {
		t.Errorf("container mtu %q (%v), want 1450", out, err)
	}
	// Egress: the containers reach the outside world through their host's
	// tenant router, NATed, but never a host of the cluster (their own
	// included); a container of an --internal network reaches nothing
	// outside.
	if _, err := c.Engine(0).Docker(ctx, "exec", "c0", "ping", "-c1", "-W2", e2e.Outside.String()); err != nil {
		t.Errorf("egress from c0 to the outside world (%s): %v", e2e.Outside, err)
	}
	for _, h := range c.Hosts {
		e2e.NeverPing(t, c.Engine(0), "c0", h.Underlay().Addr().String())
	}
	for _, e := range c.Engines {
		if _, err := e.Docker(ctx, "network", "create", "-d", "tenet", "--internal", "--ipam-driver", "tenet", "--ipam-opt", "tenant=acme",
			"-o", "tenant=acme", "-o", "network=vault", "--subnet", "10.3.0.0/24", "acme-vault"); err != nil {
			t.Fatal(err)
		}
	}
	run(t, c.Engine(1), "v1", "acme-vault", "10.3.0.75")
	run(t, c.Engine(2), "v2", "acme-vault", "10.3.0.139")
	e2e.AwaitPing(t, c.Engine(1), "v1", "10.3.0.139")
	e2e.NeverPing(t, c.Engine(1), "v1", c.Hosts[1].Underlay().Addr().String())
	e2e.NeverPing(t, c.Engine(1), "v1", e2e.Outside.String())

	// TCP both ways across hosts.
	if err := tcp(t, c.Engine(0), "c0", c.Engine(2), "c2", ips[2]); err != nil {
		t.Errorf("tcp c0 -> c2: %v", err)
	}
	if err := tcp(t, c.Engine(2), "c2", c.Engine(0), "c0", ips[0]); err != nil {
		t.Errorf("tcp c2 -> c0: %v", err)
	}

	// docker network connect / disconnect of a running container.
	db := createNetwork(t, c, "acme", "db", "10.2.0.0/24")
	run(t, c.Engine(1), "d1", db, "10.2.0.75")
	// Both networks have egress through the same tenant router, which
	// still never routes between them.
	e2e.AwaitPing(t, c.Engine(2), "c2", ips[0])
	e2e.NeverPing(t, c.Engine(0), "c0", "10.2.0.75")
	e2e.NeverPing(t, c.Engine(1), "c1", "10.2.0.75")
	if _, err := c.Engine(1).Docker(ctx, "network", "connect", "--ip", "10.1.0.85", net, "d1"); err != nil {
		t.Fatal(err)
	}
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.85")
	e2e.AwaitPing(t, c.Engine(1), "d1", ips[2])
	// d1's web interface (its second) is in h0's FDB.
	d1out, err := c.Engine(1).Docker(ctx, "exec", "d1", "cat", "/sys/class/net/eth1/address")
	if err != nil {
		t.Fatal(err)
	}
	d1webMAC := strings.TrimSpace(d1out)
	if !strings.Contains(fdb(t, c.Hosts[0], "acme"), d1webMAC) {
		t.Errorf("h0 has no FDB entry for d1's web interface %s", d1webMAC)
	}
	if _, err := c.Engine(1).Docker(ctx, "network", "disconnect", net, "d1"); err != nil {
		t.Fatal(err)
	}
	e2e.NeverPing(t, c.Engine(0), "c0", "10.1.0.85")
	if f := fdb(t, c.Hosts[0], "acme"); strings.Contains(f, d1webMAC) {
		t.Errorf("after disconnect, h0 still has d1's web entry:\n%s", f)
	}

	// docker rm -f withdraws the endpoint from the other hosts within 1 s.
	c2mac := mac(t, c.Engine(2), "c2")
	for _, h := range c.Hosts[:2] {
		if !strings.Contains(fdb(t, h, "acme"), c2mac) {
			t.Fatalf("%s has no FDB entry for c2 (%s) before rm", h.Name(), c2mac)
		}
	}
	if _, err := c.Engine(2).Docker(ctx, "rm", "-f", "c2"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	for _, h := range c.Hosts[:2] {
		e2e.Eventually(t, time.Second-time.Since(removed), func() error {
			if f := fdb(t, h, "acme"); strings.Contains(f, c2mac) {
				return fmt.Errorf("%s still has c2's FDB entry:\n%s", h.Name(), f)
			}
			return nil
		})
	}
	t.Logf("c2's FDB entries gone from h0 and h1 %v after docker rm -f returned", time.Since(removed).Round(time.Millisecond))
}

func TestTenantsWithTheSameSubnetReachOnlyTheirOwnContainers(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	acme := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	globex := createNetwork(t, c, "globex", "web", "10.1.0.0/24")
	run(t, c.Engine(0), "a0", acme, "10.1.0.10")
	run(t, c.Engine(1), "a1", acme, "10.1.0.74")
	run(t, c.Engine(0), "g0", globex, "10.1.0.10")
	run(t, c.Engine(1), "g1", globex, "10.1.0.76")
	e2e.AwaitPing(t, c.Engine(0), "a0", "10.1.0.74")
	e2e.AwaitPing(t, c.Engine(1), "a1", "10.1.0.10")
	e2e.AwaitPing(t, c.Engine(0), "g0", "10.1.0.76")
	e2e.AwaitPing(t, c.Engine(1), "g1", "10.1.0.10")
	if err := tcp(t, c.Engine(0), "a0", c.Engine(1), "a1", "10.1.0.74"); err != nil {
		t.Errorf("acme tcp: %v", err)
	}
	// Each tenant's containers never reach the other's, by ping or TCP.
	e2e.NeverPing(t, c.Engine(0), "a0", "10.1.0.76")
	e2e.NeverPing(t, c.Engine(0), "g0", "10.1.0.74")
	ctx := t.Context()
	if _, err := c.Engine(1).Docker(ctx, "exec", "-d", "g1", "sh", "-c", "nc -l -p 6000 > /tmp/stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Engine(0).Docker(ctx, "exec", "a0", "sh", "-c", "echo secret | nc -w 2 10.1.0.76 6000"); err == nil {
		t.Error("acme's a0 opened a TCP connection to globex's g1")
	}
	if out, _ := c.Engine(1).Docker(ctx, "exec", "g1", "cat", "/tmp/stolen"); strings.Contains(out, "secret") {
		t.Error("globex's g1 received acme's data")
	}
}

func TestKillingTenetdLosesNoPing(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	ds := c.StartTenetds(t)
	ctx := t.Context()
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	run(t, c.Engine(0), "c0", net, "10.1.0.10")
	run(t, c.Engine(1), "c1", net, "10.1.0.74")
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.74")

	// 300 pings, 20 per second, across the kill, the other host noticing,
	// and the restart.
	var wg sync.WaitGroup
	var pingOut string
	var pingErr error
	wg.Go(func() {
		pingOut, pingErr = c.Engine(0).Docker(context.Background(), "exec", "c0", "ping", "-c", "300", "-i", "0.05", "-W", "1", "10.1.0.74")
	})
	if err := ds[1].Daemon.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// h0 notices that h1's tenetd is gone; h1's endpoints stay programmed.
	e2e.Eventually(t, 20*time.Second, func() error {
		out, _ := c.Hosts[0].Run(ctx, "cat", ds[0].Daemon.LogPath())
		if !strings.Contains(out, "host down") {
			return fmt.Errorf("h0 has not noticed h1 is down")
		}
		return nil
	})
	if err := ds[1].Start(ctx); err != nil {
		t.Fatal(err)
	}
	// A new container on the restarted host joins and is reachable.
	run(t, c.Engine(1), "c1b", net, "10.1.0.85")
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.85")
	e2e.AwaitPing(t, c.Engine(1), "c1b", "10.1.0.10")
	wg.Wait()
	if pingErr != nil || !strings.Contains(pingOut, "300 packets received") {
		t.Errorf("pings across the tenetd kill and restart: %v\n%s", pingErr, pingOut)
	}
}

// TestRestartingDockerKeepsTraffic restarts dockerd (with --live-restore,
// as systemctl restart docker would) under a running ping: the datapath is
// in the kernel, so no ping is lost, and the restarted engine attaches new
// containers that the other host reaches.
func TestRestartingDockerKeepsTraffic(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	ctx := t.Context()
	e1 := c.Engine(1)
	e1.SetLiveRestore(true)
	stop := func() error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return e1.Stop(sctx)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	run(t, c.Engine(0), "c0", net, "10.1.0.10")
	run(t, e1, "c1", net, "10.1.0.74")
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.74")

	var wg sync.WaitGroup
	var pingOut string
	var pingErr error
	wg.Go(func() {
		pingOut, pingErr = c.Engine(0).Docker(context.Background(), "exec", "c0", "ping", "-c", "100", "-i", "0.05", "-W", "1", "10.1.0.74")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := e1.Docker(ctx, "ps", "--format", "{{.Names}}"); err != nil || !strings.Contains(out, "c1") {
		t.Fatalf("c1 did not survive the engine restart: %v %q", err, out)
	}
	run(t, e1, "c1b", net, "10.1.0.85")
	e2e.AwaitPing(t, c.Engine(0), "c0", "10.1.0.85")
	wg.Wait()
	if pingErr != nil || !strings.Contains(pingOut, "100 packets received") {
		t.Errorf("pings across the dockerd restart: %v\n%s", pingErr, pingOut)
	}
}

// TestContainersStartedAtOnceOnThreeHostsGetDistinctAddresses starts
// containers without --ip on all hosts at the same time: the cluster-wide
// IPAM gives each its own address, and they all reach one another.
func TestContainersStartedAtOnceOnThreeHostsGetDistinctAddresses(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	ds := c.StartTenetds(t)
	ctx := t.Context()
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	const perHost = 4
	type started struct {
		e    *e2e.Engine
		name string
	}
	var mu sync.Mutex
	var all []started
	var wg sync.WaitGroup
	for i, e := range c.Engines {
		for j := range perHost {
			wg.Go(func() {
				name := fmt.Sprintf("x%d-%d", i, j)
				if _, err := e.Docker(ctx, "run", "-d", "--name", name, "--network", net, e2e.ImageName, "sleep", "3600"); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				mu.Lock()
				all = append(all, started{e, name})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ips := map[string]string{}
	for _, s := range all {
		out, err := s.e.Docker(ctx, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+net+"\").IPAddress}}", s.name)
		if err != nil {
			t.Fatal(err)
		}
		ip := strings.TrimSpace(out)
		if other, dup := ips[ip]; dup {
			t.Errorf("%s and %s both got %s", s.name, other, ip)
		}
		ips[ip] = s.name
	}
	if len(ips) != len(c.Engines)*perHost {
		t.Fatalf("%d distinct addresses for %d containers: %v", len(ips), len(c.Engines)*perHost, ips)
	}
	// Each container reaches one on every other host.
	for _, s := range all[:3] {
		for ip, name := range ips {
			if !strings.HasPrefix(name, "x"+s.name[1:2]) {
				e2e.AwaitPing(t, s.e, s.name, ip)
				break
			}
		}
	}
	t.Logf("addresses: %v", ips)

	// An admin reclaims the space of a host gone for good: refused while it
	// is alive, done (and safe to repeat) once it is down.
	tenetctl := c.Dir + "/tenetctl"
	if out, err := c.Hosts[0].Run(ctx, tenetctl, "host", "remove", "h2"); err == nil {
		t.Errorf("removing a live host was accepted: %s", out)
	}
	if err := ds[2].Daemon.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 20*time.Second, func() error {
		out, err := c.Hosts[0].Run(ctx, tenetctl, "host", "remove", "h2")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := c.Hosts[1].Run(ctx, tenetctl, "host", "remove", "h2"); err != nil {
		t.Errorf("repeating the removal on another host: %v: %s", err, out)
	}
	// Containers still start on the remaining hosts.
	if _, err := c.Engine(1).Docker(ctx, "run", "-d", "--network", net, e2e.ImageName, "sleep", "600"); err != nil {
		t.Errorf("after removing h2: %v", err)
	}
}

// TestNetworkDefinedOnceAppearsInEveryEngine: an admin defines a tenant and
// a network once, on one host, with tenetctl; every engine has the Docker
// network within 2 s, containers on all hosts use it, and removing it is
// refused while containers are attached and done everywhere after.
func TestNetworkDefinedOnceAppearsInEveryEngine(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	c.StartTenetds(t)
	ctx := t.Context()
	tenetctl := c.Dir + "/tenetctl"
	h1 := c.Hosts[1]
	ctl := func(h e2e.Host, args ...string) (string, error) {
		return h.Run(ctx, append([]string{tenetctl}, args...)...)
	}
	if out, err := ctl(h1, "network", "create", "acme/web", "--subnet", "10.1.0.0/24"); err == nil {
		t.Errorf("a network of an undefined tenant was accepted: %s", out)
	}
	if _, err := ctl(h1, "tenant", "create", "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl(h1, "network", "create", "acme/web", "--subnet", "10.1.0.0/24"); err != nil {
		t.Fatal(err)
	}
	defined := time.Now()
	for _, e := range c.Engines {
		e2e.Eventually(t, 2*time.Second-time.Since(defined), func() error {
			_, err := e.Docker(ctx, "network", "inspect", "acme.web")
			return err
		})
	}
	t.Logf("acme.web in all three engines %v after tenetctl network create returned", time.Since(defined).Round(time.Millisecond))
	var st struct {
		HostsUp  int    `json:"hosts_up"`
		KeyInUse string `json:"key_in_use"`
	}
	if out, err := ctl(c.Hosts[0], "status", "--json"); err != nil || json.Unmarshal([]byte(out), &st) != nil || st.HostsUp != 3 || st.KeyInUse == "" {
		t.Errorf("tenetctl status --json: %v %q -> %+v", err, out, st)
	}
	if out, err := ctl(c.Hosts[0], "network", "create", "acme/db", "--subnet", "10.1.0.128/25"); err == nil {
		t.Errorf("an overlapping subnet in one tenant was accepted: %s", out)
	}

	for i, e := range c.Engines {
		if _, err := e.Docker(ctx, "run", "-d", "--name", fmt.Sprint("w", i), "--network", "acme.web", e2e.ImageName, "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	ip := func(i int) string {
		out, err := c.Engine(i).Docker(ctx, "inspect", "-f", "{{(index .NetworkSettings.Networks \"acme.web\").IPAddress}}", fmt.Sprint("w", i))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	e2e.AwaitPing(t, c.Engine(0), "w0", ip(2))
	e2e.AwaitPing(t, c.Engine(2), "w2", ip(1))

	out, err := ctl(c.Hosts[2], "network", "rm", "acme/web")
	if err == nil || !strings.Contains(out, "still attached") {
		t.Errorf("removing a network with containers: err %v, output %q", err, out)
	}
	if out, err := ctl(c.Hosts[2], "tenant", "rm", "acme"); err == nil || !strings.Contains(out, "still has network") {
		t.Errorf("removing a tenant with networks: err %v, output %q", err, out)
	}
	for i, e := range c.Engines {
		if _, err := e.Docker(ctx, "rm", "-f", fmt.Sprint("w", i)); err != nil {
			t.Fatal(err)
		}
	}
	e2e.Eventually(t, 10*time.Second, func() error {
		out, err := ctl(c.Hosts[2], "network", "rm", "acme/web")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	for _, e := range c.Engines {
		e2e.Eventually(t, 10*time.Second, func() error {
			if _, err := e.Docker(ctx, "network", "inspect", "acme.web"); err == nil {
				return fmt.Errorf("%s still has acme.web", e.Host().Name())
			}
			return nil
		})
	}
	if _, err := ctl(c.Hosts[0], "tenant", "rm", "acme"); err != nil {
		t.Fatal(err)
	}
	out, err = ctl(c.Hosts[1], "tenant", "ls", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("tenant ls after removing the only tenant: %v %q", err, out)
	}
}

// sniff runs tcpdump in a container's network namespace (from its host,
// in the background, its output in a file), waits until it listens, and
// returns a function that stops it and returns the packets it saw.
func sniff(t *testing.T, e *e2e.Engine, container, filter string) func() []string {
	t.Helper()
	ctx := t.Context()
	h := e.Host()
	pid, err := e.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", container)
	if err != nil {
		t.Fatal(err)
	}
	file := fmt.Sprintf("%s/sniff-%s-%d", h.Dir(), container, time.Now().UnixNano())
	if _, err := h.Run(ctx, "sh", "-c", "nsenter --net=/proc/"+strings.TrimSpace(pid)+"/ns/net tcpdump --immediate-mode -l -nn -e -i eth0 '"+
		filter+"' > "+file+" 2>&1 & echo $! > "+file+".pid"); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		_, _ = h.Run(context.Background(), "sh", "-c", "kill -INT $(cat "+file+".pid) 2>/dev/null; while kill -0 $(cat "+file+".pid) 2>/dev/null; do sleep 0.05; done")
	}
	t.Cleanup(stop)
	e2e.Eventually(t, 10*time.Second, func() error {
		out, _ := h.Run(ctx, "cat", file)
		if !strings.Contains(out, "listening on") {
			return fmt.Errorf("tcpdump in %s not listening: %q", container, out)
		}
		return nil
	})
	return func() []string {
		stop()
		out, _ := h.Run(context.Background(), "cat", file)
		var pkts []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " > ") {
				pkts = append(pkts, l)
			}
		}
		return pkts
	}
}

// TestAttacksFromAContainerFail attacks from inside a real container (with
// NET_ADMIN and NET_RAW): a forged source address, a forged source MAC, a
// gratuitous ARP claiming a neighbour's address, and sending to another
// tenant's MAC and address. Victims on the same host and across hosts
// receive none of it; legitimate traffic flows.
func TestAttacksFromAContainerFail(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	ctx := t.Context()
	acme := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	globex := createNetwork(t, c, "globex", "web", "10.1.0.0/24")
	e0, e1 := c.Engine(0), c.Engine(1)
	// Every container publishes a port, so that the attacks run with the
	// published ports' rules in place (the only way in from outside).
	runCap := func(e *e2e.Engine, name, network, ip, port string) {
		if _, err := e.Docker(ctx, "run", "-d", "--name", name, "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW",
			"--network", network, "--ip", ip, "-p", port+":80", e2e.ImageName, "sleep", "3600"); err != nil {
			t.Fatal(err)
		}
	}
	runCap(e0, "att", acme, "10.1.0.10", "8080")     // the attacker, on h0
	runCap(e0, "near", acme, "10.1.0.11", "8081")    // a victim on the same host
	runCap(e1, "far", acme, "10.1.0.74", "8082")     // a victim on the other host
	runCap(e1, "other", globex, "10.1.0.75", "8083") // another tenant's container
	e2e.AwaitPing(t, e0, "att", "10.1.0.11")
	e2e.AwaitPing(t, e0, "att", "10.1.0.74")
	otherMAC := mac(t, e1, "other")
	attack := func(args ...string) {
		_, _ = e0.Docker(ctx, append([]string{"exec", "att"}, args...)...) // failures are expected
	}
	nearSniff := sniff(t, e0, "near", "(icmp and src host 10.1.0.99) or ether src 02:66:66:66:66:66 or (arp and arp[14:4] = 0x0a01004a)")
	farSniff := sniff(t, e1, "far", "(icmp and src host 10.1.0.99) or ether src 02:66:66:66:66:66 or (arp and arp[14:4] = 0x0a01000b)")
	otherSniff := sniff(t, e1, "other", "icmp or tcp")
	hostSniff := sniff(t, e0, "near", "tcp")

	// Forged source address.
	attack("ip", "addr", "add", "10.1.0.99/32", "dev", "eth0")
	attack("ping", "-c1", "-W1", "-I", "10.1.0.99", "10.1.0.11")
	attack("ping", "-c1", "-W1", "-I", "10.1.0.99", "10.1.0.74")
	attack("ip", "addr", "del", "10.1.0.99/32", "dev", "eth0")
	// Forged source MAC.
	realMAC := mac(t, e0, "att")
	attack("ip", "link", "set", "eth0", "address", "02:66:66:66:66:66")
	attack("ping", "-c1", "-W1", "10.1.0.11")
	attack("ping", "-c1", "-W1", "10.1.0.74")
	attack("ip", "link", "set", "eth0", "address", realMAC)
	// Gratuitous ARP claiming the victims' addresses.
	attack("ip", "addr", "add", "10.1.0.74/32", "dev", "eth0")
	attack("arping", "-U", "-c", "2", "-I", "eth0", "-s", "10.1.0.74", "10.1.0.74")
	attack("ip", "addr", "del", "10.1.0.74/32", "dev", "eth0")
	attack("ip", "addr", "add", "10.1.0.11/32", "dev", "eth0")
	attack("arping", "-U", "-c", "2", "-I", "eth0", "-s", "10.1.0.11", "10.1.0.11")
	attack("ip", "addr", "del", "10.1.0.11/32", "dev", "eth0")
	// Another tenant's MAC and address, with a forged neighbour entry.
	attack("ip", "neigh", "replace", "10.1.0.75", "lladdr", otherMAC, "dev", "eth0")
	attack("ping", "-c2", "-W1", "10.1.0.75")
	attack("ip", "neigh", "del", "10.1.0.75", "dev", "eth0")
	// The published ports, from inside: through the hosts' addresses,
	// straight to the uplinks, with a forged source too.
	for _, addr := range []string{"198.51.100.10", "198.51.100.11", "169.254.0.6", "169.254.0.10"} {
		for _, port := range []string{"8081", "8082", "8083", "80"} {
			attack("sh", "-c", "echo x | nc -w 1 "+addr+" "+port)
		}
	}
	attack("ip", "addr", "add", "198.51.100.11/32", "dev", "eth0")
	attack("sh", "-c", "echo x | nc -w 1 -s 198.51.100.11 198.51.100.10 8081")
	attack("ip", "addr", "del", "198.51.100.11/32", "dev", "eth0")

	for name, stop := range map[string]func() []string{"near": nearSniff, "far": farSniff, "other": otherSniff, "near (tcp)": hostSniff} {
		if pkts := stop(); len(pkts) > 0 {
			t.Errorf("%s received the attacker's packets:\n%s", name, strings.Join(pkts, "\n"))
		}
	}
	// Legitimate traffic is unaffected, and the same capture does see it.
	seen := sniff(t, e1, "far", "icmp and src host 10.1.0.10")
	e2e.AwaitPing(t, e0, "att", "10.1.0.11")
	e2e.AwaitPing(t, e0, "att", "10.1.0.74")
	if pkts := seen(); len(pkts) == 0 {
		t.Error("the victim's capture saw not even legitimate pings; it proves nothing")
	}
}

// TestAFailedStartLeaksNoAddress: when the driver refuses an endpoint
// (here: a MAC another container of the network has), Docker's rollback
// releases the address IPAM handed out, so the next container gets it.
func TestAFailedStartLeaksNoAddress(t *testing.T) {
	c := e2e.NewCluster(t, 1)
	c.StartTenetds(t)
	ctx := t.Context()
	e := c.Engine(0)
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	addr := func(name string) string {
		out, err := e.Docker(ctx, "inspect", "-f", "{{(index .NetworkSettings.Networks \""+net+"\").IPAddress}}", name)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	// Debian's docker.io CLI (20.10) still sends --mac-address the way a
	// 20.10 engine takes it; newer CLIs refuse to talk to it about that.
	docker20 := func(args ...string) (string, error) {
		return e.Host().Run(ctx, append([]string{"/usr/bin/docker", "-H", "unix://" + e.Socket()}, args...)...)
	}
	if _, err := docker20("run", "-d", "--name", "first", "--network", net, "--mac-address", "02:00:00:00:00:aa", e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	first := addr("first")
	out, err := docker20("run", "-d", "--name", "dup", "--network", net, "--mac-address", "02:00:00:00:00:aa", e2e.ImageName, "sleep", "600")
	if err == nil || !strings.Contains(out, "already used") {
		t.Fatalf("a container with a taken MAC started: %v %q", err, out)
	}
	if _, err := e.Docker(ctx, "run", "-d", "--name", "second", "--network", net, e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	second := addr("second")
	// IPAM hands out the lowest free address: if the failed start had kept
	// its address, the second would have the one after it.
	a4, _ := netip.ParseAddr(first)
	if want := a4.Next().String(); second != want {
		t.Errorf("second got %s, want %s (the address the failed start was given, released again)", second, want)
	}
}
