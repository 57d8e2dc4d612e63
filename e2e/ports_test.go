package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// serveName runs a container whose TCP ports 80, 81 and 82 answer its
// name, and iperf3 on 5201, with the extra docker run arguments args.
func serveName(t *testing.T, e *e2e.Engine, name string, args ...string) {
	t.Helper()
	cmd := fmt.Sprintf("nc -ll -p 81 -e echo %[1]s & nc -ll -p 82 -e echo %[1]s & iperf3 -s -p 5201 >/dev/null 2>&1 & exec nc -ll -p 80 -e echo %[1]s", name)
	argv := append(append([]string{"run", "-d", "--name", name}, args...), e2e.ImageName, "sh", "-c", cmd)
	if _, err := e.Docker(t.Context(), argv...); err != nil {
		t.Fatal(err)
	}
}

// ask connects from host h to addr:port and returns what the server said
// ("" if it could not connect).
func ask(ctx context.Context, h e2e.Host, addr string, port int) (string, error) {
	out, err := h.Run(ctx, "sh", "-c", fmt.Sprintf("echo | busybox nc -w 2 %s %d", addr, port))
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return strings.TrimSpace(out), nil
}

// askFrom connects from container name on e to addr:port.
func askFrom(ctx context.Context, e *e2e.Engine, name, addr string, port int) string {
	out, err := e.Docker(ctx, "exec", name, "sh", "-c", fmt.Sprintf("echo | nc -w 2 %s %d", addr, port))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// awaitAnswer waits until addr:port, asked from h, answers want.
func awaitAnswer(t *testing.T, h e2e.Host, addr string, port int, want string) {
	t.Helper()
	e2e.Eventually(t, 15*time.Second, func() error {
		got, err := ask(t.Context(), h, addr, port)
		if got != want {
			return fmt.Errorf("%s asked %s:%d: got %q (%v), want %q", h.Name(), addr, port, got, err, want)
		}
		return nil
	})
}

// neverAnswers checks that addr:port, asked from h, answers nothing in a
// few tries.
func neverAnswers(t *testing.T, h e2e.Host, addr string, port int) {
	t.Helper()
	for range 3 {
		if got, _ := ask(t.Context(), h, addr, port); got != "" {
			t.Errorf("%s asked %s:%d and got %q", h.Name(), addr, port, got)
			return
		}
	}
}

var portCell = regexp.MustCompile(`0\.0\.0\.0:(\d+)->82/tcp`)

// TestPublishedPortsReachOnlyTheirContainer runs docker run -p on Tenet
// networks of two tenants with the same subnet and container address,
// beside a container on Docker's own bridge, on engines in Docker's default
// configuration. Each published port (fixed, on one host address, a range,
// -P, UDP) reaches its own container from the other host and from the host
// itself, and nothing else gets in; a port another program holds is
// refused and leaves nothing; ports keep working across a tenetd restart;
// a stopped container's ports are gone.
func TestPublishedPortsReachOnlyTheirContainer(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	ds := c.StartTenetds(t)
	ctx := t.Context()
	acme := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	globex := createNetwork(t, c, "globex", "web", "10.1.0.0/24")
	h0, h1, e0 := c.Hosts[0], c.Hosts[1], c.Engine(0)
	addr0 := h0.Underlay().Addr().String()

	serveName(t, e0, "pa", "--network", acme, "--ip", "10.1.0.10", "-p", "8080:80", "-p", "127.0.0.1:9090:80",
		"-p", "7000-7005:81", "--expose", "82", "-P", "-p", "5201:5201", "-p", "5201:5201/udp")
	serveName(t, e0, "pg", "--network", globex, "--ip", "10.1.0.10", "-p", "8081:80")
	serveName(t, e0, "pd", "-p", "9000:80") // Docker's bridge, its userland proxy
	// docker port cannot show a remote driver's ports; tenetctl does.
	ls, err := h0.Run(ctx, c.Dir+"/tenetctl", "endpoint", "ls")
	if err != nil {
		t.Fatal(err)
	}
	m := portCell.FindStringSubmatch(ls)
	if m == nil || !strings.Contains(ls, "0.0.0.0:7000->81/tcp") || !strings.Contains(ls, "127.0.0.1:9090->80/tcp") ||
		!strings.Contains(ls, "0.0.0.0:5201->5201/udp") {
		t.Fatalf("tenetctl endpoint ls:\n%s", ls)
	}
	var dyn int
	fmt.Sscan(m[1], &dyn)

	// From the other host, on the underlay.
	for _, p := range []struct {
		port int
		want string
	}{{8080, "pa"}, {8081, "pg"}, {7000, "pa"}, {dyn, "pa"}, {9000, "pd"}} {
		awaitAnswer(t, h1, addr0, p.port, p.want)
	}
	if out, err := h1.Run(ctx, "iperf3", "-c", addr0, "-p", "5201", "-u", "-t", "1", "-b", "1M"); err != nil {
		t.Errorf("udp through a published port (iperf3 -u): %v\n%s", err, out)
	}
	neverAnswers(t, h1, addr0, 9090) // published on 127.0.0.1 only
	// From the host itself, by its address and by 127.0.0.1, and from a
	// container on Docker's bridge.
	awaitAnswer(t, h0, addr0, 8080, "pa")
	awaitAnswer(t, h0, "127.0.0.1", 9090, "pa")
	awaitAnswer(t, h0, "127.0.0.1", 8081, "pg")
	if out := askFrom(ctx, e0, "pd", addr0, 8081); out != "pg" {
		t.Errorf("a container on Docker's bridge asked the published port 8081: %q", out)
	}
	// Nothing else gets in: not the containers' address, not their
	// tenants' uplinks (h1 routes them to h0; /32s, as h1 has uplinks of
	// its own in 169.254.0.0/16), not an unpublished port, not the host's
	// ports from a tenant's container.
	for _, r := range []string{"10.1.0.10/32", "169.254.0.6/32", "169.254.0.10/32"} {
		if _, err := h1.Run(ctx, "ip", "route", "add", r, "via", addr0); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []struct {
		addr string
		port int
	}{{"10.1.0.10", 80}, {"169.254.0.6", 80}, {"169.254.0.6", 8080}, {"169.254.0.10", 8081}, {addr0, 80}, {addr0, 7001}} {
		neverAnswers(t, h1, a.addr, a.port)
	}
	for _, port := range []int{8081, 8080, 9000} { // globex's, its own, Docker's
		if out := askFrom(ctx, e0, "pa", addr0, port); out != "" {
			t.Errorf("tenant acme's container reached the published port %d on its host: %q", port, out)
		}
	}

	// A port another program holds (Docker's proxy for pd) or another
	// container publishes: refused with the reason, leaving nothing.
	for _, tt := range []struct{ args, want string }{
		{"-p 9000:80", "tcp port 9000 on 0.0.0.0 is in use on this host"},
		{"-p 8081:80", "host port 8081/tcp is already published by endpoint"},
	} {
		argv := append([]string{"run", "-d", "--network", acme}, strings.Fields(tt.args)...)
		out, err := e0.Docker(ctx, append(argv, e2e.ImageName, "sleep", "60")...)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("docker run %s: %v\n%s", tt.args, err, out)
		}
	}
	if out, err := e0.Docker(ctx, "run", "-d", "-p", "8080:80", e2e.ImageName, "sleep", "60"); err == nil || !strings.Contains(out, "address already in use") {
		t.Errorf("Docker's bridge took Tenet's published port 8080: %v\n%s", err, out)
	}
	ls, _ = h0.Run(ctx, c.Dir+"/tenetctl", "endpoint", "ls", "--json")
	var eps []struct{ Host string }
	if err := json.Unmarshal([]byte(ls), &eps); err != nil || len(eps) != 2 {
		t.Errorf("refused containers left endpoints (%v):\n%s", err, ls)
	}
	if out, _ := h0.Run(ctx, "nft", "list", "map", "ip", "tenet", "pubany"); strings.Contains(out, "9000") {
		t.Errorf("a refused port left a rule:\n%s", out)
	}

	// tenetd killed and restarted: the ports work while it is gone, and
	// it takes their reservations back.
	if err := ds[0].Daemon.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	awaitAnswer(t, h1, addr0, 8081, "pg")
	if err := ds[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	awaitAnswer(t, h1, addr0, 8080, "pa")
	e2e.Eventually(t, 15*time.Second, func() error {
		out, err := e0.Docker(ctx, "run", "-d", "-p", "8081:80", e2e.ImageName, "sleep", "60")
		if err == nil || !strings.Contains(out, "address already in use") {
			return fmt.Errorf("after the restart Docker's bridge could publish 8081: %v %s", err, out)
		}
		return nil
	})

	// A stopped container's ports are gone, and free for others.
	if _, err := e0.Docker(ctx, "stop", "-t", "1", "pa"); err != nil {
		t.Fatal(err)
	}
	neverAnswers(t, h1, addr0, 8080)
	serveName(t, e0, "pd2", "-p", "8080:80")
	awaitAnswer(t, h1, addr0, 8080, "pd2")
}

// rootState is what a test run must not change in the root namespace:
// its forwarding and bridge-netfilter settings, its nf_tables ruleset
// (iptables-nft's too) and its links.
func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, k := range []string{"net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/route_localnet"} {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s", k, v)
	}
	for _, argv := range [][]string{{"nft", "list", "ruleset"}, {"ip", "-br", "link"}} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// TestDockerDefaultsStayInTheirHost runs Docker's default configuration
// (docker0, iptables with FORWARD policy DROP, the userland proxy) beside
// Tenet on two hosts: containers on Docker's bridge and on a tenant
// network work side by side, tenant egress passes the DROP policy through
// the accepts Tenet adds itself, neither reaches the other, the accepts go
// with the host's last tenant, and the root namespace is left as it was.
func TestDockerDefaultsStayInTheirHost(t *testing.T) {
	before := rootState(t)
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	ctx := t.Context()
	h0, h1, e0 := c.Hosts[0], c.Hosts[1], c.Engine(0)
	out, err := h0.Run(ctx, "sh", "-c", "iptables -S FORWARD; cat /proc/sys/net/ipv4/ip_forward; ip -br link show docker0")
	if err != nil || !strings.Contains(out, "-P FORWARD DROP") || !strings.Contains(out, "-A FORWARD -j DOCKER-USER") ||
		!strings.Contains(out, "docker0") {
		t.Fatalf("h0 does not run Docker's defaults: %v\n%s", err, out)
	}
	// An outside address behind h1, which tenants may reach.
	const outside = "203.0.113.5"
	for _, cmd := range []struct {
		h    e2e.Host
		argv string
	}{{h1, "ip addr add " + outside + "/32 dev eth0"}, {h0, "ip route add " + outside + "/32 via " + h1.Underlay().Addr().String()}} {
		if out, err := cmd.h.Run(ctx, strings.Fields(cmd.argv)...); err != nil {
			t.Fatalf("%s: %v: %s", cmd.argv, err, out)
		}
	}
	net := createNetwork(t, c, "acme", "web", "10.1.0.0/24")
	run(t, e0, "t0", net, "10.1.0.10")
	run(t, c.Engine(1), "t1", net, "10.1.0.74")
	for _, n := range []string{"b1", "b2"} {
		if _, err := e0.Docker(ctx, "run", "-d", "--name", n, e2e.ImageName, "sleep", "3600"); err != nil {
			t.Fatal(err)
		}
	}
	b2, err := e0.Docker(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "b2")
	if err != nil {
		t.Fatal(err)
	}
	b2 = strings.TrimSpace(b2)
	out, _ = h0.Run(ctx, "iptables", "-S", "FORWARD")
	if !strings.Contains(out, "-A FORWARD -j TENET-FORWARD") {
		t.Errorf("Tenet added no accepts to FORWARD:\n%s", out)
	}

	e2e.AwaitPing(t, e0, "t0", "10.1.0.74")                   // Tenet, across hosts
	e2e.AwaitPing(t, e0, "t0", outside)                       // tenant egress past FORWARD DROP
	e2e.AwaitPing(t, e0, "b1", b2)                            // Docker's bridge
	e2e.AwaitPing(t, e0, "b1", h1.Underlay().Addr().String()) // and its NAT out
	e2e.NeverPing(t, e0, "t0", b2)
	e2e.NeverPing(t, e0, "b1", "10.1.0.10")
	e2e.NeverPing(t, e0, "b1", "169.254.0.6")

	// The host's last tenant goes, and Tenet's accepts with it; Docker's
	// bridge carries on.
	if _, err := e0.Docker(ctx, "rm", "-f", "t0"); err != nil {
		t.Fatal(err)
	}
	if _, err := e0.Docker(ctx, "network", "rm", net); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 10*time.Second, func() error {
		out, err := h0.Run(ctx, "iptables", "-S")
		if err != nil || strings.Contains(out, "TENET") {
			return fmt.Errorf("h0's iptables after its last tenant went: %v\n%s", err, out)
		}
		return nil
	})
	e2e.AwaitPing(t, e0, "b1", b2)
	if err := c.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if after := rootState(t); after != before {
		t.Errorf("the root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
}
