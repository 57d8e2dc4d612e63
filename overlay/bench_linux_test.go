package overlay_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/tenet-net/tenet/overlay"
	"github.com/tenet-net/tenet/overlay/nstest"
)

// remotes returns n remote endpoints of vni spread over 50 VTEPs.
func remotes(n int, vni uint32) []overlay.Remote {
	out := make([]overlay.Remote, n)
	for i := range out {
		ip := netip.AddrFrom4([4]byte{10, byte(100 + i>>16), byte(i >> 8), byte(i)})
		vtep := netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i%50)})
		out[i] = overlay.Remote{VNI: vni, MAC: overlay.DeriveMAC([]netip.Addr{ip}, ""), IPs: []netip.Addr{ip}, VTEP: vtep}
	}
	return out
}

// BenchmarkProgram10000Remotes times one Reconcile that adds 10,000 remote
// endpoints (10,000 FDB and 10,000 neighbour entries, plus 50 flood
// entries) to a network, as a host does when it joins a busy network.
// Target: under 0.5 s.
func BenchmarkProgram10000Remotes(b *testing.B) {
	hs := newHosts(b, 1)
	dp := hs[0].dp
	base := overlay.State{Networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}}}
	full := base
	full.Remotes = remotes(10000, 4097)
	if err := dp.Reconcile(b.Context(), base); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		if err := dp.Reconcile(b.Context(), full); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		if err := dp.Reconcile(b.Context(), base); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/10k-remotes")
	fmt.Printf("program 10,000 remote endpoints: %.0f ms per Reconcile (target < 500 ms)\n", float64(total.Milliseconds())/float64(b.N))
}

// BenchmarkThroughput measures, on the same two simulated hosts, TCP
// throughput (iperf3, 3 s) between two endpoints over Tenet's datapath (a
// network with egress, so the hosts have Tenet's NAT and conntrack on),
// over a VXLAN built by hand with ip commands (bridge + vxlan, static FDB,
// MTU 1450), and over the bare underlay with Tenet's host rules in place
// and without them (the table deleted). The four run interleaved, round
// after round, and each ratio is reported as the mean of its per-round
// ratios with a 95% confidence interval. Targets: Tenet >= 0.97x the
// hand-built VXLAN; the underlay with Tenet's rules >= 0.98x without. Run
// with -benchtime=1x; TENET_BENCH_ROUNDS sets the rounds (default 10).
func BenchmarkThroughput(b *testing.B) {
	rounds := 10
	if n, err := strconv.Atoi(os.Getenv("TENET_BENCH_ROUNDS")); err == nil && n > 1 {
		rounds = n
	}
	hs := newHosts(b, 2)
	ctx := b.Context()
	e1, e2 := ep("e1", 4097, "10.1.0.10"), ep("e2", 4097, "10.1.0.11")
	web := overlay.Network{Tenant: "acme", Name: "web", VNI: 4097, Gateway: netip.MustParsePrefix("10.1.0.1/24"), Egress: true}
	c := &cluster{hosts: hs, networks: []overlay.Network{web}, eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	for _, h := range hs {
		if err := h.dp.Reconcile(ctx, c.state(h)); err != nil {
			b.Fatal(err)
		}
	}
	t1, t2 := attach(b, hs[0], e1, 24), attach(b, hs[1], e2, 24)
	m1, m2 := handBuilt(b, hs[0], hs[1], "10.9.0.1"), handBuilt(b, hs[1], hs[0], "10.9.0.2")
	rules := func(on bool) {
		for _, h := range hs {
			if on {
				if err := h.dp.Reconcile(ctx, c.state(h)); err != nil {
					b.Fatal(err)
				}
			} else {
				nftDel(b, h.netns, nftables.TableFamilyIPv4, "")
			}
		}
	}
	var tenet, hand, withRules, without []float64
	for b.Loop() {
		for r := range rounds {
			// Alternate the order, so that drift hits every path alike.
			paths := []func(){
				func() { tenet = append(tenet, iperf(b, t1.ns, t2.ns, t2.ip.String())) },
				func() { hand = append(hand, iperf(b, m1, m2, "10.9.0.2")) },
			}
			if r%2 == 1 {
				slices.Reverse(paths)
			}
			for _, p := range paths {
				p()
			}
			withRules = append(withRules, iperf(b, hs[0].netns, hs[1].netns, hs[1].vtep.String()))
			rules(false)
			without = append(without, iperf(b, hs[0].netns, hs[1].netns, hs[1].vtep.String()))
			rules(true)
		}
	}
	for _, p := range []struct {
		name string
		xs   []float64
	}{{"tenet", tenet}, {"hand-built vxlan", hand}, {"underlay, tenet's rules", withRules}, {"underlay, no rules", without}} {
		fmt.Printf("%-24s median %6.2f Gbit/s of %v\n", p.name, median(p.xs)/1e9, gbits(p.xs))
	}
	ratio := func(name string, a, bs []float64, target float64) float64 {
		rs := make([]float64, len(a))
		for i := range a {
			rs[i] = a[i] / bs[i]
		}
		m, half := meanCI(rs)
		fmt.Printf("%-44s %.3f ± %.3f (95%% CI, %d rounds; target >= %.2f)\n", name, m, half, len(rs), target)
		return m
	}
	b.ReportMetric(ratio("tenet / hand-built vxlan", tenet, hand, 0.97), "tenet/handbuilt")
	b.ReportMetric(ratio("underlay with tenet's rules / without", withRules, without, 0.98), "underlay-rules/none")
	ratio("hand-built vxlan / underlay without rules", hand, without, 0)
}

// meanCI returns the mean of xs and the half-width of its 95% confidence
// interval (Student's t).
func meanCI(xs []float64) (mean, half float64) {
	n := float64(len(xs))
	for _, x := range xs {
		mean += x
	}
	mean /= n
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / (n - 1))
	// t quantiles (0.975) for 1..30 degrees of freedom; 1.96 beyond.
	tq := []float64{12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
		2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}
	t := 1.96
	if df := len(xs) - 1; df >= 1 && df <= len(tq) {
		t = tq[df-1]
	}
	return mean, t * sd / math.Sqrt(n)
}

// handBuilt builds, with iproute2 commands, what an operator would by hand:
// a namespace with a veth to a bridge in the host namespace, a VXLAN device
// (VNI 9999, learning off) on that bridge with a static FDB entry for peer's
// side, and ip/24 on the inner end. It returns the inner namespace.
func handBuilt(b testing.TB, h, peer *host, ip string) string {
	ns := nstest.NewNetNS(b)
	peerMAC := "02:99:00:00:00:02"
	myMAC := "02:99:00:00:00:01"
	if ip == "10.9.0.2" {
		myMAC, peerMAC = peerMAC, myMAC
	}
	run := func(args ...string) {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			b.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("-n", h.netns, "link", "add", "hbbr", "mtu", "1450", "type", "bridge")
	run("-n", h.netns, "link", "add", "hbvx", "mtu", "1450", "type", "vxlan", "id", "9999", "dstport", "4789",
		"local", h.vtep.String(), "nolearning")
	run("-n", h.netns, "link", "set", "hbvx", "master", "hbbr", "up")
	run("-n", h.netns, "link", "add", "hbv0", "mtu", "1450", "type", "veth", "peer", "name", "eth0", "mtu", "1450", "address", myMAC, "netns", ns)
	run("-n", h.netns, "link", "set", "hbv0", "master", "hbbr", "up")
	run("-n", h.netns, "link", "set", "hbbr", "up")
	peerIP := "10.9.0.2"
	if ip == peerIP {
		peerIP = "10.9.0.1"
	}
	run("-n", ns, "addr", "add", ip+"/24", "dev", "eth0")
	run("-n", ns, "link", "set", "eth0", "up")
	run("-n", ns, "neigh", "add", peerIP, "lladdr", peerMAC, "dev", "eth0", "nud", "permanent")
	if out, err := exec.Command("ip", "netns", "exec", h.netns, "bridge", "fdb", "append", peerMAC, "dev", "hbvx",
		"dst", peer.vtep.String(), "self", "permanent").CombinedOutput(); err != nil {
		b.Fatalf("bridge fdb: %v: %s", err, out)
	}
	return ns
}

// iperf runs a 3-second iperf3 TCP test from clientNS to a one-off server in
// srvNS and returns the received bits per second.
func iperf(b testing.TB, clientNS, srvNS, srvIP string) float64 {
	b.Helper()
	srv := exec.Command("ip", "netns", "exec", srvNS, "iperf3", "-s", "-1", "-B", srvIP)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "exec", srvNS, "ss", "-Hltn", "sport", "= :5201").CombinedOutput()
		if strings.Contains(string(out), "5201") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("iperf3 server in %s did not listen", srvNS)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := exec.Command("ip", "netns", "exec", clientNS, "iperf3", "-c", srvIP, "-t", "3", "-J").Output()
	if err != nil {
		b.Fatalf("iperf3 -c %s from %s: %v: %s", srvIP, clientNS, err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 output: %v: %s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func gbits(xs []float64) []string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.2f", x/1e9))
	}
	return out
}
