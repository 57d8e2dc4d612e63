package vm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/e2e/vm"
	"github.com/tenet-net/tenet/overlay"
)

// Under TCG every step is slow: limits here are generous, and only
// function is checked, never speed.
const (
	pingLimit    = 90 * time.Second
	rebootLimit  = 15 * time.Minute
	restartLimit = 8 * time.Minute
)

// wantDocker is the Docker engine version each release's docker.io has.
var wantDocker = map[string]string{"bookworm": "20.10.", "trixie": "26."}

// TestVMs runs the VM suite once per Debian release (TENET_VM_RELEASES, a
// comma-separated list, picks some): three VMs with Docker as Debian installs
// it and Tenet from its package, then the scenarios in order on the same
// cluster, each building on the one before.
func TestVMs(t *testing.T) {
	vm.Require(t)
	releases := vm.Releases
	if r := os.Getenv("TENET_VM_RELEASES"); r != "" {
		releases = strings.Split(r, ",")
	}
	// Build missing images side by side first: much of a build is waiting
	// on the mirror.
	start := time.Now()
	var wg sync.WaitGroup
	for _, rel := range releases {
		wg.Go(func() {
			if _, err := vm.EnsureImage(t.Context(), vm.DefaultCacheDir, rel, os.Getenv("TENET_VM_MIRROR"), t.Logf); err != nil {
				t.Errorf("image %s: %v", rel, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("images of %v ready %v after start", releases, time.Since(start).Round(time.Second))
	for _, rel := range releases {
		t.Run(rel, func(t *testing.T) { testRelease(t, rel) })
	}
}

func testRelease(t *testing.T, release string) {
	start := time.Now()
	c := vm.NewCluster(t, 3, release)
	t.Logf("%s: 3 VMs up with Docker and the test image in %v", release, time.Since(start).Round(time.Second))
	// Every step runs even when one before failed: later steps fail on
	// their own with what is missing, and show what still works.
	step := func(name string, fn func(t *testing.T, c *vm.Cluster)) {
		t.Helper()
		t.Run(name, func(t *testing.T) { fn(t, c) })
	}
	step("GuestKernel", testGuestKernel)
	if err := c.InstallTenet(t.Context()); err != nil {
		t.Fatalf("install tenet: %v", err)
	}
	t.Logf("%s: tenet installed and running %v after start", release, time.Since(start).Round(time.Second))
	step("InstalledAsAnAdminWould", testInstalled)
	step("NetworkDefinedOnceAppearsInEveryEngine", testDefinedOnce)
	step("ContainersOnThreeVMsShareATenantNetwork", testShare)
	step("AGuardGoesWithAContainerWhosePortWentFirst", testPortWentFirst)
	step("EncryptedNetworkCarriesNoPlaintext", testEncrypted)
	step("EncryptedVsClearThroughput", testEncryptedThroughput)
	step("TenantsWithTheSameSubnetStayIsolated", testIsolation)
	step("EgressUnderDockersIptables", testEgress)
	step("RestartingTenetdKeepsDockerAndContainers", testRestartTenetd)
	step("RebootedVMsContainersComeBack", testReboot)
	step("EncryptedNetworkAfterTheReboot", testEncryptedAfterReboot)
	t.Logf("%s: suite done in %v", release, time.Since(start).Round(time.Second))
}

// testGuestKernel records what the guest kernel offers (for the encryption
// work) and requires what Tenet needs today: vxlan, bridge, and tc's
// cls_bpf and clsact (sch_ingress) for port guards.
func testGuestKernel(t *testing.T, c *vm.Cluster) {
	h := c.Hosts[0]
	ctx := t.Context()
	uname, err := h.Run(ctx, "uname", "-r")
	if err != nil {
		t.Fatal(err)
	}
	var report []string
	for _, m := range []string{"vxlan", "bridge", "cls_bpf", "sch_ingress", "wireguard", "esp4", "esp6", "xfrm_user", "geneve", "br_netfilter", "nf_tables"} {
		_, err := h.Run(ctx, "modprobe", m)
		state := "loads"
		if err != nil {
			state = "FAILS: " + err.Error()
			if m == "vxlan" || m == "bridge" || m == "cls_bpf" || m == "sch_ingress" {
				t.Errorf("module %s does not load: %v", m, err)
			}
		}
		report = append(report, fmt.Sprintf("%s %s", m, state))
	}
	t.Logf("guest kernel %s: %s", strings.TrimSpace(uname), strings.Join(report, "; "))
}

// testInstalled checks that the VM is what an admin has after
// `apt-get install docker.io` and the project's package: AppArmor and
// Docker's iptables rules on, docker0 up, tenetd enabled and ordered before
// docker.service.
func testInstalled(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	for i, h := range c.Hosts {
		e := c.Engines[i]
		v, err := e.Docker(ctx, "version", "--format", "{{.Server.Version}}")
		if err != nil {
			t.Fatal(err)
		}
		if want := wantDocker[c.Image.Release]; !strings.HasPrefix(strings.TrimSpace(v), want) {
			t.Errorf("%s: Docker %s, want %s*", h.Name(), strings.TrimSpace(v), want)
		}
		checks := []struct {
			what string
			argv []string
			want string
		}{
			{"AppArmor enabled", []string{"cat", "/sys/module/apparmor/parameters/enabled"}, "Y"},
			{"Docker uses AppArmor", []string{"docker", "info", "--format", "{{.SecurityOptions}}"}, "apparmor"},
			{"docker-default profile loaded", []string{"cat", "/sys/kernel/security/apparmor/profiles"}, "docker-default (enforce)"},
			{"Docker's iptables rules", []string{"iptables", "-S", "FORWARD"}, "-j DOCKER-USER"},
			{"docker0", []string{"ip", "-br", "link", "show", "docker0"}, "docker0"},
			{"package installed", []string{"dpkg-query", "-W", "-f", "${Status}", "tenet"}, "install ok installed"},
			{"tenetd enabled", []string{"systemctl", "is-enabled", "tenetd"}, "enabled"},
			{"tenetd ordered before docker", []string{"systemctl", "show", "-p", "After", "docker.service"}, "tenetd.service"},
			{"docker wants tenetd", []string{"systemctl", "show", "-p", "Wants", "docker.service"}, "tenetd.service"},
			// The unit's `tenetd docker-dns`: names across hosts.
			{"engine asks tenetd's resolver first", []string{"cat", "/etc/docker/daemon.json"}, `"dns": [
    "169.254.53.53"`},
			{"tenetd and tenetctl in /usr/bin", []string{"sh", "-c", "command -v tenetd && command -v tenetctl"}, "/usr/bin/tenetd\n/usr/bin/tenetctl"},
		}
		for _, ch := range checks {
			out, err := h.Run(ctx, ch.argv...)
			if err != nil || !strings.Contains(out, ch.want) {
				t.Errorf("%s: %s: %v %q, want %q in it", h.Name(), ch.what, err, strings.TrimSpace(out), ch.want)
			}
		}
		// A container runs confined by Docker's profile.
		if out, err := e.Docker(ctx, "run", "--rm", "--network", "none", e2e.ImageName, "cat", "/proc/self/attr/current"); err != nil || !strings.Contains(out, "docker-default") {
			t.Errorf("%s: a container's AppArmor label: %v %q, want docker-default", h.Name(), err, strings.TrimSpace(out))
		}
		if i == 0 {
			t.Logf("%s: Docker %s; %s", h.Name(), strings.TrimSpace(v), strings.ReplaceAll(strings.TrimSpace(c.Image.Versions), "\n", ", "))
		}
	}
}

// testDefinedOnce defines a tenant and a network once, with tenetctl on h1;
// every engine gets the Docker network.
func testDefinedOnce(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	h1 := c.Hosts[1]
	if out, err := h1.Run(ctx, "tenetctl", "network", "create", "acme/web", "--subnet", "10.1.0.0/24"); err == nil {
		t.Errorf("a network of an undefined tenant was accepted: %s", out)
	}
	if _, err := h1.Run(ctx, "tenetctl", "tenant", "create", "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Run(ctx, "tenetctl", "network", "create", "acme/web", "--subnet", "10.1.0.0/24"); err != nil {
		t.Fatal(err)
	}
	defined := time.Now()
	for _, e := range c.Engines {
		e2e.Eventually(t, 60*time.Second, func() error {
			_, err := e.Docker(ctx, "network", "inspect", "acme.web")
			return err
		})
	}
	t.Logf("acme.web in all three engines %v after tenetctl network create returned", time.Since(defined).Round(time.Millisecond))
	out, err := c.Hosts[2].Run(ctx, "tenetctl", "network", "ls")
	if err != nil || !strings.Contains(out, "10.1.0.0/24") {
		t.Errorf("tenetctl network ls on h2: %v\n%s", err, out)
	}
	// Under emulation a network's first pass may outlast the plugin
	// call: the registry's retry must then adopt what was built, not
	// start over (which, where every try outlasts the call, never ends).
	for _, h := range c.Hosts {
		lines, err := h.Run(ctx, "sh", "-c", "journalctl -b -u tenetd -o cat | grep -e 'msg=\"netns add acme\"' -e 'plugin call failed.*CreateNetwork' -e 'adopting the datapath'; true")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(lines, `msg="netns add acme"`); n != 1 {
			t.Errorf("%s made tenant acme's namespace %d times for one network (a retry started over):\n%s", h.Name(), n, lines)
		} else if strings.Count(lines, "\n") > 1 {
			t.Logf("%s: the network's creation was retried:\n%s", h.Name(), lines)
		}
	}
}

// ips of the acme containers c0, c1, c2: each in the block its host owns
// at first (the IPAM seeds are h0, h1, h2).
var acmeIPs = []string{"10.1.0.10", "10.1.0.74", "10.1.0.138"}

func testShare(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	for i, e := range c.Engines {
		runContainer(t, e, fmt.Sprint("c", i), "--restart", "always", "--network", "acme.web", "--ip", acmeIPs[i], e2e.ImageName, "sleep", "1000000")
	}
	for i, e := range c.Engines {
		for j := range c.Engines {
			if i != j {
				awaitPing(t, e, fmt.Sprint("c", i), acmeIPs[j])
			}
		}
	}
	// Names across hosts, with nothing but the package's unit set up.
	for i, e := range c.Engines {
		j := (i + 1) % len(c.Engines)
		awaitName(t, e, fmt.Sprint("c", i), fmt.Sprint("c", j), acmeIPs[j])
	}
	if err := tcp(t, c.Engines[0], "c0", c.Engines[2], "c2", acmeIPs[2]); err != nil {
		t.Errorf("tcp c0 -> c2: %v", err)
	}
	if err := tcp(t, c.Engines[2], "c2", c.Engines[1], "c1", acmeIPs[1]); err != nil {
		t.Errorf("tcp c2 -> c1: %v", err)
	}
	out, err := c.Hosts[0].Run(ctx, "tenetctl", "endpoint", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range acmeIPs {
		if !strings.Contains(out, ip) {
			t.Errorf("tenetctl endpoint ls on h0 lacks %s:\n%s", ip, out)
		}
	}
}

// testPortWentFirst checks a container's port guard on the guest kernel:
// its BPF filter is on the port, passes the container's own traffic and
// drops a forged source (which, on an on-link address of the network,
// would otherwise be answered). Then it deletes the port (its veth pair)
// before docker rm, as a container namespace that goes first does, and
// requires that nothing of the endpoint is left once Docker removed it:
// tenetctl diagnose finds nothing wrong, and no guard table of an older
// tenetd is there (Debian 12's kernel once kept those).
func testPortWentFirst(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	h0, e0 := c.Hosts[0], c.Engines[0]
	runContainer(t, e0, "gone", "--cap-add", "NET_ADMIN", "--network", "acme.web", e2e.ImageName, "sleep", "1000000")
	id, err := e0.Docker(ctx, "inspect", "-f", `{{(index .NetworkSettings.Networks "acme.web").EndpointID}}`, "gone")
	if err != nil {
		t.Fatal(err)
	}
	port := overlay.BridgeVeth(strings.TrimSpace(id))
	inTenant := func(argv ...string) (string, error) {
		return h0.Run(ctx, append([]string{"ip", "netns", "exec", "tenet-acme"}, argv...)...)
	}
	if out, err := inTenant("tc", "filter", "show", "dev", port, "ingress"); err != nil || !strings.Contains(out, "tenet-guard-v2 "+port) {
		t.Fatalf("container gone's port %s has no guard filter: %v\n%s", port, err, out)
	}
	for _, peer := range acmeIPs[:2] { // c0 on this VM, c1 across VXLAN
		awaitPing(t, e0, "gone", peer)
	}
	const forged = "10.1.0.250"
	if _, err := e0.Docker(ctx, "exec", "gone", "ip", "addr", "add", forged+"/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	for _, peer := range acmeIPs[:2] {
		if out, err := e0.Docker(ctx, "exec", "gone", "ping", "-c3", "-W1", "-I", forged, peer); err == nil {
			t.Errorf("a ping from the forged source %s reached %s through the guard:\n%s", forged, peer, out)
		}
	}
	if out, err := inTenant("ip", "link", "del", port); err != nil {
		t.Fatalf("delete port %s: %v\n%s", port, err, out)
	}
	if _, err := e0.Docker(ctx, "rm", "-f", "gone"); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 60*time.Second, func() error {
		out, err := h0.Run(ctx, "tenetctl", "diagnose")
		if err != nil {
			return fmt.Errorf("tenetctl diagnose after docker rm: %w\n%s", err, out)
		}
		return nil
	})
	if out, err := inTenant("nft", "list", "tables", "netdev"); err != nil || strings.Contains(out, "tenet") {
		t.Errorf("guard tables in nftables: %v\n%s", err, out)
	}
}

// ips of the containers s0, s1, s2 on the encrypted network acme/secret.
var secretIPs = []string{"10.7.0.10", "10.7.0.74", "10.7.0.138"}

// testEncrypted defines an encrypted network once (tenetctl network create
// --encrypted), runs a container on it on each VM, and checks, with a
// capture on h1's underlay interface while a known word crosses each
// network: the clear network's word is in the capture (so the capture can
// see a payload), the encrypted network's is not, its VNI appears in no
// VXLAN header on the underlay, and WireGuard packets crossed instead.
func testEncrypted(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	h0, h1 := c.Hosts[0], c.Hosts[1]
	if out, err := h0.Run(ctx, "tenetctl", "network", "create", "acme/secret", "--subnet", "10.7.0.0/24", "--encrypted"); err != nil {
		t.Fatalf("tenetctl network create --encrypted: %v\n%s", err, out)
	}
	for _, e := range c.Engines {
		e2e.Eventually(t, 60*time.Second, func() error {
			_, err := e.Docker(ctx, "network", "inspect", "acme.secret")
			return err
		})
	}
	for i, e := range c.Engines {
		runContainer(t, e, fmt.Sprint("s", i), "--restart", "always", "--network", "acme.secret", "--ip", secretIPs[i], e2e.ImageName, "sleep", "1000000")
	}
	for i, e := range c.Engines {
		for j := range c.Engines {
			if i != j {
				awaitPing(t, e, fmt.Sprint("s", i), secretIPs[j])
			}
		}
	}
	out, err := h0.Run(ctx, "tenetctl", "network", "inspect", "acme/secret")
	if err != nil || !strings.Contains(out, "encrypted") {
		t.Errorf("tenetctl network inspect acme/secret: %v\n%s", err, out)
	}
	vniOf := func(network string) string {
		t.Helper()
		out, err := h0.Run(ctx, "tenetctl", "network", "inspect", network)
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "vni" {
				return f[1]
			}
		}
		t.Fatalf("no vni in tenetctl network inspect %s: %v\n%s", network, err, out)
		return ""
	}
	vni, clearVNI := vniOf("acme/secret"), vniOf("acme/web")

	// Capture everything over UDP on h1's underlay interface.
	dev, err := h1.Run(ctx, "sh", "-c", "ip -o -4 addr show | awk '$4 == \""+h1.Underlay().String()+"\" {print $2}'")
	dev = strings.TrimSpace(dev)
	if err != nil || dev == "" {
		t.Fatalf("h1's underlay interface: %v %q", err, dev)
	}
	if _, err := h1.Run(ctx, "sh", "-c", "rm -f /tmp/cap.pcap /tmp/cap.log; setsid tcpdump -i "+dev+" --immediate-mode -U -n -s 0 -w /tmp/cap.pcap udp > /tmp/cap.log 2>&1 < /dev/null & echo $! > /tmp/cap.pid"); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 30*time.Second, func() error {
		out, err := h1.Run(ctx, "cat", "/tmp/cap.log")
		if err != nil || !strings.Contains(out, "listening on") {
			return fmt.Errorf("tcpdump not listening yet: %v %q", err, out)
		}
		return nil
	})
	stamp := time.Now().UnixNano()
	secretWord, clearWord := fmt.Sprintf("TENET-SECRET-%d", stamp), fmt.Sprintf("TENET-CLEAR-%d", stamp)
	if err := sendWord(t, c.Engines[0], "s0", c.Engines[1], "s1", secretIPs[1], secretWord); err != nil {
		t.Errorf("tcp s0 -> s1 over the encrypted network: %v", err)
	}
	if err := sendWord(t, c.Engines[0], "c0", c.Engines[1], "c1", acmeIPs[1], clearWord); err != nil {
		t.Errorf("tcp c0 -> c1 over the clear network: %v", err)
	}
	count := func(script string) int {
		t.Helper()
		out, err := h1.Run(ctx, "sh", "-c", script)
		n, perr := strconv.Atoi(strings.TrimSpace(out))
		if perr != nil {
			t.Fatalf("%s: %v %q", script, err, out)
		}
		return n
	}
	// The clear word was sent last: once it is in the file, so is all
	// that crossed before it.
	var clearSeen int
	e2e.Eventually(t, 30*time.Second, func() error {
		if clearSeen = count("grep -a -c " + clearWord + " /tmp/cap.pcap || true"); clearSeen == 0 {
			return errors.New("the clear network's word is not in the capture (yet)")
		}
		return nil
	})
	if _, err := h1.Run(ctx, "sh", "-c", "kill -INT $(cat /tmp/cap.pid); while kill -0 $(cat /tmp/cap.pid) 2>/dev/null; do sleep 0.2; done"); err != nil {
		t.Fatal(err)
	}
	secretSeen := count("grep -a -c " + secretWord + " /tmp/cap.pcap || true")
	vxlan := func(vni string) int {
		return count("tcpdump -r /tmp/cap.pcap -n -T vxlan 'udp port 4789' 2>/dev/null | grep -c -E 'vni " + vni + "([^0-9]|$)' || true")
	}
	secretVXLAN, clearVXLAN := vxlan(vni), vxlan(clearVNI)
	wireguard := count("tcpdump -r /tmp/cap.pcap -n 'udp port 51820' 2>/dev/null | wc -l")
	t.Logf("capture on h1 (%s): clear word seen %d times, encrypted word %d; VXLAN packets of the clear vni %s %d, of the encrypted vni %s %d; WireGuard packets %d",
		dev, clearSeen, secretSeen, clearVNI, clearVXLAN, vni, secretVXLAN, wireguard)
	if clearSeen == 0 || clearVXLAN == 0 {
		t.Error("the clear network's word or VXLAN headers are not in the capture: the capture cannot show what it looks for")
	}
	if secretSeen != 0 || secretVXLAN != 0 {
		t.Errorf("the encrypted network's traffic crossed h1's underlay in clear: word %d times, %d VXLAN packets of its vni", secretSeen, secretVXLAN)
	}
	if wireguard == 0 {
		t.Error("no WireGuard packets on h1's underlay")
	}
	// Each tenant's names stay on its own network: s1 resolves on secret.
	awaitName(t, c.Engines[0], "s0", "s1", secretIPs[1])
}

// testEncryptedThroughput measures TCP throughput between containers on
// two VMs over the encrypted network and over the clear one, interleaved,
// three rounds each, with the guests' iperf3 run in the containers'
// namespaces; figures are printed, never asserted. Under software
// emulation the figures would measure the emulator, so it runs only where
// the VMs use KVM.
func testEncryptedThroughput(t *testing.T, c *vm.Cluster) {
	if !c.Accel.KVM {
		t.Skipf("not measured: the VMs run under software emulation (%s), where throughput measures the emulator", c.Accel.Reason)
	}
	ctx := t.Context()
	pid := func(i int, name string) string {
		out, err := c.Engines[i].Docker(ctx, "inspect", "-f", "{{.State.Pid}}", name)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	rate := func(from, to, toIP string) float64 {
		t.Helper()
		if _, err := c.Hosts[1].Run(ctx, "nsenter", "-t", pid(1, to), "-n", "iperf3", "-s", "-1", "-D"); err != nil {
			t.Fatal(err)
		}
		var out string
		e2e.Eventually(t, 20*time.Second, func() error {
			var err error
			out, err = c.Hosts[0].Run(ctx, "nsenter", "-t", pid(0, from), "-n", "iperf3", "-c", toIP, "-t", "5", "-f", "m")
			return err
		})
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); strings.HasSuffix(l, "receiver") && len(f) > 6 {
				if v, err := strconv.ParseFloat(f[len(f)-3], 64); err == nil {
					return v
				}
			}
		}
		t.Fatalf("no receiver rate in iperf3's output:\n%s", out)
		return 0
	}
	var enc, clear []float64
	for range 3 {
		enc = append(enc, rate("s0", "s1", secretIPs[1]))
		clear = append(clear, rate("c0", "c1", acmeIPs[1]))
	}
	mean := func(v []float64) float64 {
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		return sum / float64(len(v))
	}
	t.Logf("TCP throughput h0 -> h1, Mbit/s: encrypted %v (mean %.0f), clear %v (mean %.0f), encrypted/clear %.2f",
		enc, mean(enc), clear, mean(clear), mean(enc)/mean(clear))
}

// testEncryptedAfterReboot: h1 rebooted (testReboot) and made a new
// WireGuard key at boot; its peers took it from gossip without any manual
// step, and s1 (--restart always) reaches s0 and s2 over the encrypted
// network both ways.
func testEncryptedAfterReboot(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	for _, p := range [][2]int{{1, 0}, {1, 2}, {0, 1}, {2, 1}} {
		awaitPing(t, c.Engines[p[0]], fmt.Sprint("s", p[0]), secretIPs[p[1]])
	}
	if err := sendWord(t, c.Engines[2], "s2", c.Engines[1], "s1", secretIPs[1], fmt.Sprintf("after-reboot-%d", time.Now().UnixNano())); err != nil {
		t.Errorf("tcp s2 -> s1 after h1's reboot: %v", err)
	}
	// This boot's tenetd made a key of its own (kept in the kernel only).
	out, err := c.Hosts[1].Run(ctx, "journalctl", "-b", "0", "-u", "tenetd", "--no-pager", "-o", "cat")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "made this host's wireguard key") {
		t.Errorf("h1's tenetd made no new wireguard key after the reboot:\n%s", tail(out, 2000))
	}
	// The preshared keys rotated all along (every vm.WireGuardRotate on
	// each host) while s0 pinged s2 without a loss across h1's reboot
	// (testReboot). h0 and h2's session then dated from minutes before
	// (EncryptedNetworkCarriesNoPlaintext), and WireGuard renews a session
	// older than 2 minutes at its next packet (and may not use one past 3):
	// so new sessions were made during that ping, each with the preshared
	// key of its moment, and none lost a packet.
	out, err = c.Hosts[0].Run(ctx, "journalctl", "-u", "tenetd", "--no-pager", "-o", "cat")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "rotated the wireguard preshared keys"); n < 10 {
		t.Errorf("h0 rotated its preshared keys %d times, want at least 10 over the suite", n)
	} else {
		t.Logf("h0 rotated its preshared keys %d times", n)
	}
}

// testIsolation creates globex's network with the same subnet by hand on
// each engine (the README's other way), and checks that neither tenant
// reaches the other's containers.
func testIsolation(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	// A tenant is defined once for the cluster, its networks by hand.
	if _, err := c.Hosts[0].Run(ctx, "tenetctl", "tenant", "create", "globex"); err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Engines { // once the tenant has reached its host
		e2e.Eventually(t, 30*time.Second, func() error {
			_, err := e.Docker(ctx, "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant=globex",
				"-o", "tenant=globex", "-o", "network=web", "--subnet", "10.1.0.0/24", "globex-web")
			return err
		})
	}
	// g0 has the address acme's c0 has, on the same host.
	for _, g := range []struct {
		e        *e2e.Engine
		name, ip string
	}{{c.Engines[0], "g0", "10.1.0.10"}, {c.Engines[2], "g2", "10.1.0.140"}} {
		runContainer(t, g.e, g.name, "--network", "globex-web", "--ip", g.ip, e2e.ImageName, "sleep", "1000000")
	}
	awaitPing(t, c.Engines[0], "g0", "10.1.0.140")
	awaitPing(t, c.Engines[2], "g2", "10.1.0.10")
	e2e.NeverPing(t, c.Engines[0], "c0", "10.1.0.140") // globex's g2, from acme
	e2e.NeverPing(t, c.Engines[2], "g2", "10.1.0.74")  // acme's c1, from globex
	e2e.NeverPing(t, c.Engines[0], "g0", "10.1.0.138") // acme's c2, from globex
	// g2 listens; acme's c0 tries to send it data.
	if _, err := c.Engines[2].Docker(ctx, "exec", "-d", "g2", "sh", "-c", "nc -l -p 6000 > /tmp/stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Engines[0].Docker(ctx, "exec", "c0", "sh", "-c", "echo secret | nc -w 2 10.1.0.140 6000"); err == nil {
		t.Error("acme's c0 opened a TCP connection to globex's g2")
	}
	if out, _ := c.Engines[2].Docker(ctx, "exec", "g2", "cat", "/tmp/stolen"); strings.Contains(out, "secret") {
		t.Error("globex's g2 received acme's data")
	}
	// The same address in the other tenant is still acme's c0 for acme.
	awaitPing(t, c.Engines[2], "c2", "10.1.0.10")
}

// testEgress checks egress where Docker manages iptables (its FORWARD
// policy DROP), with no manual step (README: Tenet's own TENET-FORWARD
// chain): c0 reaches the one underlay address tenetd allows
// (vm.EgressTarget), and never another host's underlay address.
func testEgress(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	e0 := c.Engines[0]
	target := vm.EgressTarget.String()
	e2e.Eventually(t, 20*time.Second, func() error {
		_, err := e0.Docker(ctx, "exec", "c0", "ping", "-c1", "-W2", target)
		return err
	})
	if out, err := c.Hosts[0].Run(ctx, "iptables", "-S", "FORWARD"); err != nil || !strings.Contains(out, "-P FORWARD DROP") {
		t.Errorf("h0's FORWARD policy is not Docker's DROP (%v): %s", err, out)
	}
	e2e.NeverPing(t, e0, "c0", c.Hosts[1].Underlay().Addr().String())
}

// testRestartTenetd restarts tenetd on h1 as an admin would: Docker and the
// containers keep running (the unit is wanted by docker.service, not
// required by it), and a new container on h1 is reached from h0.
func testRestartTenetd(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	h1, e1 := c.Hosts[1], c.Engines[1]
	show := func(unit, prop string) string {
		out, err := h1.Run(ctx, "systemctl", "show", "-p", prop, "--value", unit)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	started := func() string {
		out, err := e1.Docker(ctx, "inspect", "-f", "{{.State.StartedAt}}", "c1")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	dockerPID, tenetdPID, c1Started := show("docker", "MainPID"), show("tenetd", "MainPID"), started()
	if _, err := h1.Run(ctx, "systemctl", "restart", "tenetd"); err != nil {
		t.Fatal(err)
	}
	if now := show("tenetd", "MainPID"); now == tenetdPID || now == "0" {
		t.Fatalf("tenetd's pid %s after restart, was %s", now, tenetdPID)
	}
	if now := show("docker", "MainPID"); now != dockerPID {
		t.Errorf("restarting tenetd restarted Docker: pid %s, was %s", now, dockerPID)
	}
	if now := started(); now != c1Started {
		t.Errorf("restarting tenetd restarted c1: started %s, was %s", now, c1Started)
	}
	awaitPing(t, c.Engines[0], "c0", acmeIPs[1])
	awaitPing(t, c.Engines[0], "s0", secretIPs[1]) // the kernel's wireguard key and peers kept
	runContainer(t, e1, "c1b", "--network", "acme.web", "--ip", "10.1.0.80", e2e.ImageName, "sleep", "1000000")
	awaitPing(t, c.Engines[0], "c0", "10.1.0.80")
	if _, err := e1.Docker(ctx, "rm", "-f", "c1b"); err != nil {
		t.Fatal(err)
	}
}

// testReboot reboots h1 while c0 (h0) pings c2 (h2): c1, started with
// --restart always, comes back by itself and reaches its peers, and c0 never
// loses c2.
func testReboot(t *testing.T, c *vm.Cluster) {
	ctx := t.Context()
	h1, e0, e1 := c.Hosts[1], c.Engines[0], c.Engines[1]
	// ping in the background inside c0 (clear network) and s0 (encrypted),
	// its pid kept, so it can be stopped with SIGINT and print its
	// statistics.
	pings := [][2]string{{"c0", acmeIPs[2]}, {"s0", secretIPs[2]}}
	for _, p := range pings {
		if _, err := e0.Docker(ctx, "exec", "-d", p[0], "sh", "-c",
			"echo $$ > /tmp/ping.pid; exec ping -i 0.5 -W 1 "+p[1]+" > /tmp/ping.log 2>&1"); err != nil {
			t.Fatal(err)
		}
		e2e.Eventually(t, 20*time.Second, func() error {
			out, err := e0.Docker(ctx, "exec", p[0], "cat", "/tmp/ping.log")
			if err != nil || !strings.Contains(out, "seq=") {
				return fmt.Errorf("background ping in %s not answered yet: %v %q", p[0], err, out)
			}
			return nil
		})
	}
	rebooted := time.Now()
	if err := h1.Reboot(ctx, rebootLimit); err != nil {
		t.Fatal(err)
	}
	t.Logf("h1 answers ssh again %v after systemctl reboot", time.Since(rebooted).Round(time.Second))
	// No manual step: Docker restarts c1 at boot, through tenetd.
	e2e.Eventually(t, restartLimit, func() error {
		out, err := e1.Docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Error}}", "c1")
		if err != nil || !strings.HasPrefix(out, "true") {
			return fmt.Errorf("c1 not running after the reboot: %v %q", err, strings.TrimSpace(out))
		}
		return nil
	})
	t.Logf("c1 running again %v after systemctl reboot", time.Since(rebooted).Round(time.Second))
	awaitPing(t, e1, "c1", acmeIPs[0])
	awaitPing(t, e1, "c1", acmeIPs[2])
	awaitPing(t, e0, "c0", acmeIPs[1])
	awaitPing(t, c.Engines[2], "c2", acmeIPs[1])
	t.Logf("c1 reaches c0 and c2 both ways %v after systemctl reboot", time.Since(rebooted).Round(time.Second))
	awaitName(t, e1, "c1", "c2", acmeIPs[2])
	awaitName(t, e0, "c0", "c1", acmeIPs[1])
	if err := tcp(t, e1, "c1", e0, "c0", acmeIPs[0]); err != nil {
		t.Errorf("tcp c1 -> c0 after the reboot: %v", err)
	}
	// Boot order: tenetd was up (its plugin socket served) before Docker
	// started.
	mono := func(unit, prop string) uint64 {
		out, err := h1.Run(ctx, "systemctl", "show", "-p", prop, "--value", unit)
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatalf("%s %s: %q: %v", unit, prop, out, err)
		}
		return v
	}
	if up, dockerStart := mono("tenetd", "ActiveEnterTimestampMonotonic"), mono("docker", "ExecMainStartTimestampMonotonic"); up == 0 || up > dockerStart {
		t.Errorf("boot order: tenetd active at %d µs, docker started at %d µs: want tenetd first", up, dockerStart)
	}
	// c0 never lost c2 while h1 was down, nor s0 s2 (whose WireGuard
	// session never involved h1).
	for _, p := range pings {
		if _, err := e0.Docker(ctx, "exec", p[0], "sh", "-c", "kill -INT $(cat /tmp/ping.pid)"); err != nil {
			t.Fatal(err)
		}
		var stats string
		e2e.Eventually(t, 10*time.Second, func() error {
			out, err := e0.Docker(ctx, "exec", p[0], "cat", "/tmp/ping.log")
			if err != nil || !strings.Contains(out, "packets received") {
				return fmt.Errorf("no ping statistics in %s yet: %v", p[0], err)
			}
			stats = out
			return nil
		})
		var sent, received int
		for _, l := range strings.Split(stats, "\n") {
			if strings.Contains(l, "packets transmitted") {
				fmt.Sscanf(l, "%d packets transmitted, %d packets received", &sent, &received)
			}
		}
		if sent < 20 || received != sent {
			t.Errorf("%s -> %s across h1's reboot: %d sent, %d received\n%s", p[0], p[1], sent, received, tail(stats, 600))
		} else {
			t.Logf("%s -> %s across h1's reboot: %d sent, %d received", p[0], p[1], sent, received)
		}
	}
	// Every host sees h1 up again.
	e2e.Eventually(t, pingLimit, func() error {
		out, err := c.Hosts[0].Run(ctx, "tenetctl", "host", "ls")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == "h1" && f[2] != "up" {
				return fmt.Errorf("h0 sees h1 as %s:\n%s", f[2], out)
			}
		}
		return nil
	})
}

// runContainer runs `docker run -d --name NAME ARGS...` on e. As of this
// writing tenetd's garbage collector may delete a new endpoint between
// Docker's Join and the moment Docker bind-mounts the container's namespace
// at the sandbox path (it takes the missing path for a sandbox that is
// gone), which a slow host (a VM under TCG) hits: docker run then fails
// with "failed to add interface tc… to sandbox … Link not found". That is
// reported as an error, and the run tried again (up to 3 times) so that
// the later steps still show what works.
func runContainer(t *testing.T, e *e2e.Engine, name string, args ...string) {
	t.Helper()
	ctx := t.Context()
	for try := 1; ; try++ {
		out, err := e.Docker(ctx, append([]string{"run", "-d", "--name", name}, args...)...)
		if err == nil {
			return
		}
		if !strings.Contains(out, "to sandbox") || try == 3 {
			t.Fatalf("%s: docker run %s: %v", e.Host().Name(), name, err)
		}
		t.Errorf("%s: docker run %s (try %d): tenetd removed the endpoint before Docker made its sandbox: %v", e.Host().Name(), name, try, err)
		if _, err := e.Docker(ctx, "rm", "-f", name); err != nil {
			t.Fatal(err)
		}
	}
}

// awaitName waits until name resolves to ip in container from.
func awaitName(t *testing.T, e *e2e.Engine, from, name, ip string) {
	t.Helper()
	e2e.Eventually(t, 30*time.Second, func() error {
		out, err := e.Docker(t.Context(), "exec", from, "ping", "-c1", "-W2", name)
		if err != nil || !strings.Contains(out, "("+ip+")") {
			return fmt.Errorf("%s: ping %s: %v %q, want it to reach %s", from, name, err, out, ip)
		}
		return nil
	})
}

func awaitPing(t *testing.T, e *e2e.Engine, from, ip string) {
	t.Helper()
	e2e.Eventually(t, pingLimit, func() error {
		_, err := e.Docker(t.Context(), "exec", from, "ping", "-c1", "-W2", ip)
		return err
	})
}

// tcp sends a line from one container to a listener in another and returns
// an error unless the listener received it, in one of three tries.
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
	return sendWordOnce(t, from, fromName, to, toName, toIP, fmt.Sprintf("hello-%s-%d", fromName, time.Now().UnixNano()))
}

// sendWord is tcp with a word of the caller's, in one of three tries.
func sendWord(t *testing.T, from *e2e.Engine, fromName string, to *e2e.Engine, toName, toIP, word string) error {
	t.Helper()
	var err error
	for range 3 {
		if err = sendWordOnce(t, from, fromName, to, toName, toIP, word); err == nil {
			return nil
		}
		t.Logf("tcp %s -> %s: %v; trying again", fromName, toName, err)
	}
	return err
}

func sendWordOnce(t *testing.T, from *e2e.Engine, fromName string, to *e2e.Engine, toName, toIP, word string) error {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var got string
	wg.Go(func() {
		got, _ = to.Docker(ctx, "exec", toName, "timeout", "40", "nc", "-l", "-p", "5000")
	})
	defer wg.Wait()
	var err error
	for ctx.Err() == nil {
		if _, err = from.Docker(ctx, "exec", fromName, "sh", "-c", "echo "+word+" | nc -w 3 "+toIP+" 5000"); err == nil {
			break
		}
		time.Sleep(time.Second) // the listener starts over ssh; poll until it is there
	}
	if err != nil {
		return err
	}
	wg.Wait()
	if !strings.Contains(got, word) {
		return fmt.Errorf("%s received %q, want %q", toName, got, word)
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
