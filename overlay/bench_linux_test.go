package overlay_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

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

// BenchmarkThroughput measures, in one run on the same two simulated hosts,
// TCP throughput (iperf3) between two endpoints over Tenet's datapath, over a
// VXLAN built by hand with ip commands (bridge + vxlan, static FDB, MTU
// 1450), and over the bare underlay, and prints the ratios. Target: Tenet at
// least 0.95x the hand-built VXLAN. Run with -benchtime=1x.
func BenchmarkThroughput(b *testing.B) {
	hs := newHosts(b, 2)
	ctx := b.Context()
	e1, e2 := ep("e1", 4097, "10.1.0.1"), ep("e2", 4097, "10.1.0.2")
	c := &cluster{hosts: hs, networks: []overlay.Network{{Tenant: "acme", Name: "web", VNI: 4097}},
		eps: map[*host][]overlay.Endpoint{hs[0]: {e1}, hs[1]: {e2}}}
	for _, h := range hs {
		if err := h.dp.Reconcile(ctx, c.state(h)); err != nil {
			b.Fatal(err)
		}
	}
	t1, t2 := attach(b, hs[0], e1, 24), attach(b, hs[1], e2, 24)
	m1, m2 := handBuilt(b, hs[0], hs[1], "10.9.0.1"), handBuilt(b, hs[1], hs[0], "10.9.0.2")
	pairs := []struct {
		name            string
		clientNS, srvNS string
		srvIP           string
	}{
		{"tenet", t1.ns, t2.ns, t2.ip.String()},
		{"hand-built vxlan", m1, m2, "10.9.0.2"},
		{"underlay", hs[0].netns, hs[1].netns, hs[1].vtep.String()},
	}
	results := map[string][]float64{}
	for b.Loop() {
		for range 3 { // interleaved rounds, so drift hits every path alike
			for _, p := range pairs {
				results[p.name] = append(results[p.name], iperf(b, p.clientNS, p.srvNS, p.srvIP))
			}
		}
	}
	med := map[string]float64{}
	for _, p := range pairs {
		med[p.name] = median(results[p.name])
		fmt.Printf("%-17s %6.2f Gbit/s (median of %v)\n", p.name, med[p.name]/1e9, gbits(results[p.name]))
	}
	fmt.Printf("tenet / hand-built vxlan = %.3f (target >= 0.95)\n", med["tenet"]/med["hand-built vxlan"])
	fmt.Printf("tenet / underlay         = %.3f\n", med["tenet"]/med["underlay"])
	fmt.Printf("hand-built / underlay    = %.3f\n", med["hand-built vxlan"]/med["underlay"])
	b.ReportMetric(med["tenet"]/med["hand-built vxlan"], "tenet/handbuilt")
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
