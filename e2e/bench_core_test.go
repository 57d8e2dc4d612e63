package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay/nstest"
)

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

// startTenetds starts tenetd on the first n hosts only (the others are
// left for fakepeer), all of them IPAM seeds.
func startTenetds(b *testing.B, c *e2e.Cluster, n int) (bin, key string) {
	b.Helper()
	ctx := b.Context()
	bin, err := e2e.BuildTenetd(c.Dir)
	if err != nil {
		b.Fatal(err)
	}
	key = filepath.Join(c.Dir, "cluster.key")
	if err := e2e.WriteClusterKey(key); err != nil {
		b.Fatal(err)
	}
	var names []string
	for _, h := range c.Hosts[:n] {
		names = append(names, h.Name())
	}
	for _, h := range c.Hosts[:n] {
		var seeds []string
		for _, o := range c.Hosts[:n] {
			if o != h {
				seeds = append(seeds, o.Underlay().Addr().String())
			}
		}
		if _, err := e2e.StartTenetd(ctx, h, bin, key, seeds, names); err != nil {
			b.Fatal(err)
		}
	}
	return bin, key
}

func createNetworkOn(b *testing.B, engines []*e2e.Engine, tenant, name, subnet string) string {
	b.Helper()
	dn := tenant + "." + name
	for _, e := range engines {
		if out, err := e.Docker(b.Context(), "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant="+tenant,
			"-o", "tenant="+tenant, "-o", "network="+name, "--subnet", subnet, dn); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
	return dn
}

// fdbCount counts the static FDB entries in a host's tenant namespace.
func fdbCount(b *testing.B, h e2e.Host, tenant string) int {
	out, _ := h.Run(b.Context(), "sh", "-c", "ip netns exec tenet-"+tenant+" bridge fdb show | grep -c 'dev vx.* dst '")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// BenchmarkDockerRunWithManyRemotes measures docker run -d on h0 with no
// remote endpoints programmed, then with 10,000 (published by a fake peer
// on h3 on the same network, so they are in h0's kernel), then with none
// again (issue 13: at most +10%). Run with -benchtime=1x.
func BenchmarkDockerRunWithManyRemotes(b *testing.B) {
	c := e2e.NewCluster(b, 4)
	_, key := startTenetds(b, c, 3)
	ctx := b.Context()
	net := createNetworkOn(b, c.Engines[:3], "acme", "web", "10.1.0.0/16")
	fake := filepath.Join(c.Dir, "fakepeer")
	if out, err := exec.Command("go", "build", "-o", fake, "./cmd/fakepeer").CombinedOutput(); err != nil {
		b.Fatalf("build fakepeer: %v: %s", err, out)
	}
	h0 := c.Engine(0)
	measure := func(label string) time.Duration {
		var ds []time.Duration
		for range 20 {
			start := time.Now()
			if _, err := h0.Docker(ctx, "run", "-d", "--network", net, e2e.ImageName, "sleep", "600"); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		fmt.Printf("docker run -d, %-28s median %v (n=%d)\n", label, median(ds).Round(time.Millisecond), len(ds))
		return median(ds)
	}
	var base, loaded, after time.Duration
	for b.Loop() {
		base = measure("0 remote endpoints:")
		h3 := c.Hosts[3]
		d, err := h3.StartDaemon(ctx, e2e.DaemonSpec{Name: "fakepeer", Argv: []string{fake, "--name", "fake", "--bind", h3.Underlay().Addr().String(),
			"--key-file", key, "--join", c.Hosts[0].Underlay().Addr().String(), "--network", "acme/web", "--subnet", "10.1.0.0/16",
			"--first", "16384", "--count", "10000"}})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		e2e.Eventually(b, 120*time.Second, func() error {
			if n := fdbCount(b, c.Hosts[0], "acme"); n < 10000 {
				return fmt.Errorf("h0 has %d remote entries", n)
			}
			return nil
		})
		fmt.Printf("10,000 remote endpoints programmed on h0 in %v\n", time.Since(start).Round(time.Millisecond))
		loaded = measure("10,000 remote endpoints:")
		if err := d.Kill(ctx); err != nil {
			b.Fatal(err)
		}
		e2e.Eventually(b, 180*time.Second, func() error {
			if n := fdbCount(b, c.Hosts[0], "acme"); n > 100 {
				return fmt.Errorf("h0 still has %d remote entries", n)
			}
			return nil
		})
		after = measure("0 again:")
	}
	ref := (base + after) / 2
	fmt.Printf("with 10,000 remote endpoints: %.2fx the run without (target <= 1.10x)\n", float64(loaded)/float64(ref))
}

// pluginClient posts to a host's plugin socket from the test process.
type pluginClient struct {
	b    *testing.B
	http *http.Client
	each [][3]time.Duration // per endpoint: RequestAddress, CreateEndpoint, Join
	rms  [][3]time.Duration // per removal: Leave, DeleteEndpoint, ReleaseAddress
	// The host's namespace and where container ends go after Join.
	host *netlink.Handle
	sink netns.NsHandle
	addr string // the last endpoint's address, as RequestAddress gave it
}

func newPluginClient(b *testing.B, h e2e.Host) *pluginClient {
	sock := filepath.Join(h.Dir(), "mnt", "run-docker", "plugins", "tenet.sock")
	p := &pluginClient{b: b, http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
	nh, ok := h.(*e2e.NetnsHost)
	if !ok {
		b.Fatalf("host %s: not a namespace host", h.Name())
	}
	hostNS, err := netns.GetFromName(nh.Netns())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hostNS.Close() })
	if p.host, err = netlink.NewHandleAt(hostNS); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.host.Close)
	// One namespace holds every container end: Docker gives each
	// container its own, and what matters here is only that the ends
	// leave the host's namespace, as they do with Docker.
	if p.sink, err = netns.GetFromName(nstest.NewNetNS(b)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.sink.Close() })
	return p
}

func (p *pluginClient) call(path string, req, resp any) {
	body, _ := json.Marshal(req)
	r, err := p.http.Post("http://plugin"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		p.b.Fatal(err)
	}
	defer r.Body.Close()
	out, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 {
		p.b.Fatalf("%s: %d %s", path, r.StatusCode, out)
	}
	if resp != nil {
		if err := json.Unmarshal(out, resp); err != nil {
			p.b.Fatal(err)
		}
	}
}

// endpoint makes one endpoint as docker run would: an address, the
// endpoint, the join, then (untimed) the container's end of the veth pair
// moved out of the host's namespace; it returns how long the three calls
// took, and adds each call's time to p.each.
func (p *pluginClient) endpoint(netID, pool, id string) time.Duration {
	start := time.Now()
	var addr struct{ Address string }
	p.call("/IpamDriver.RequestAddress", map[string]any{"PoolID": pool, "Options": map[string]string{"com.docker.network.endpoint.name": id}}, &addr)
	p.addr = addr.Address
	t1 := time.Now()
	p.call("/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": netID, "EndpointID": id, "Interface": map[string]string{"Address": addr.Address}}, nil)
	t2 := time.Now()
	var join struct{ InterfaceName struct{ SrcName string } }
	p.call("/NetworkDriver.Join", map[string]any{"NetworkID": netID, "EndpointID": id}, &join)
	end := time.Now()
	p.each = append(p.each, [3]time.Duration{t1.Sub(start), t2.Sub(t1), end.Sub(t2)})
	// What Docker does next, untimed: the container's end of the veth
	// pair moves into the container's namespace. Left in the host's, a
	// thousand of them would slow every listing of the host's links and
	// addresses, a state Docker never leaves a host in.
	l, err := p.host.LinkByName(join.InterfaceName.SrcName)
	if err != nil {
		p.b.Fatalf("container end %q of %s: %v", join.InterfaceName.SrcName, id, err)
	}
	if err := p.host.LinkSetNsFd(l, int(p.sink)); err != nil {
		p.b.Fatalf("move %s out of the host: %v", join.InterfaceName.SrcName, err)
	}
	return end.Sub(start)
}

// remove undoes endpoint as docker rm would: leave, delete the endpoint,
// release its address (addr as RequestAddress gave it). It returns the
// time the three calls took.
func (p *pluginClient) remove(netID, pool, id, addr string) time.Duration {
	start := time.Now()
	p.call("/NetworkDriver.Leave", map[string]any{"NetworkID": netID, "EndpointID": id}, nil)
	t1 := time.Now()
	p.call("/NetworkDriver.DeleteEndpoint", map[string]any{"NetworkID": netID, "EndpointID": id}, nil)
	t2 := time.Now()
	ip, _, _ := strings.Cut(addr, "/")
	p.call("/IpamDriver.ReleaseAddress", map[string]any{"PoolID": pool, "Address": ip}, nil)
	end := time.Now()
	p.rms = append(p.rms, [3]time.Duration{t1.Sub(start), t2.Sub(t1), end.Sub(t2)})
	return end.Sub(start)
}

// BenchmarkPluginCalls measures, through the hosts' plugin sockets, the
// calls docker run makes (RequestAddress, CreateEndpoint, Join). First 1,000
// endpoints created one after another on h0: the last 10 against the first
// 10 (printed, but minutes apart, so the machine's noise moves it). Then
// side by side (issue 13: at most 1.5x): h0, holding 999, makes and removes
// its 1,000th while h1 makes and removes its first in a network with no
// endpoint anywhere, alternating 80 times; medians compared, for the making
// and for the removal (the calls of docker rm, per call). Then the p99
// of those calls with one peer blackholed (in the ring, but its gossip TCP
// port dropping every packet) against without, in blocks ordered so that
// neither side sees a larger network on average, 500 calls each (at most
// 1.2x). A p99 of fewer calls is the third-slowest of 300, which one
// collection or slow fsync moves: 40 rounds and 300 calls each put single
// runs at 1.60x and 1.30x. Run with -benchtime=1x.
func BenchmarkPluginCalls(b *testing.B) {
	c := e2e.NewCluster(b, 3)
	c.StartTenetds(b)
	ctx := b.Context()
	dn := createNetworkOn(b, c.Engines, "acme", "web", "10.1.0.0/20")
	out, err := c.Engine(0).Docker(ctx, "network", "inspect", "-f", "{{.Id}}", dn)
	if err != nil {
		b.Fatal(err)
	}
	netID, pool := strings.TrimSpace(out), "acme/10.1.0.0/20"
	// The blackhole rounds use a network of their own: a bridge holds
	// 1,023 endpoints (overlay.MaxEndpointsPerNetwork).
	dn2 := createNetworkOn(b, c.Engines, "acme", "db", "10.2.0.0/20")
	out, err = c.Engine(0).Docker(ctx, "network", "inspect", "-f", "{{.Id}}", dn2)
	if err != nil {
		b.Fatal(err)
	}
	netID2, pool2 := strings.TrimSpace(out), "acme/10.2.0.0/20"
	p := newPluginClient(b, c.Hosts[0])
	n, lastID := 0, ""
	next := func() string { n++; lastID = fmt.Sprintf("bench%058d", n); return lastID }
	var costs []time.Duration
	var normal, holed []time.Duration
	h2 := c.Hosts[2]
	blackhole := func(on bool) {
		cmd := "nft delete table inet benchhole 2>/dev/null; true"
		if on {
			cmd = "nft add table inet benchhole && nft add chain inet benchhole in '{ type filter hook input priority -10; }' && " +
				"nft add rule inet benchhole in tcp dport 7946 drop && " +
				"nft add chain inet benchhole out '{ type filter hook output priority -10; }' && nft add rule inet benchhole out tcp sport 7946 drop"
		}
		if out, err := h2.Run(ctx, "sh", "-c", cmd); err != nil {
			b.Fatalf("blackhole %v: %v: %s", on, err, out)
		}
	}
	// Side by side: h0 keeps 999 endpoints and h1 none; rounds alternate
	// making (and removing) h0's 1,000th and h1's 1st, so both see the
	// machine as it is at that moment. h1's are on the other network,
	// where no host has an endpoint yet: a first endpoint as on a new
	// host, not one beside h0's 999 remote ones.
	out, err = c.Engine(1).Docker(ctx, "network", "inspect", "-f", "{{.Id}}", dn2)
	if err != nil {
		b.Fatal(err)
	}
	netID1, p1 := strings.TrimSpace(out), newPluginClient(b, c.Hosts[1])
	var atK, at1, rmK, rm1 []time.Duration
	for b.Loop() {
		for range 1000 {
			costs = append(costs, p.endpoint(netID, pool, next()))
		}
		p.remove(netID, pool, lastID, p.addr) // h0 holds 999
		for round := range 80 {
			kth := func() {
				id := next()
				atK = append(atK, p.endpoint(netID, pool, id))
				rmK = append(rmK, p.remove(netID, pool, id, p.addr))
			}
			first := func() {
				id := next()
				at1 = append(at1, p1.endpoint(netID1, pool2, id))
				rm1 = append(rm1, p1.remove(netID1, pool2, id, p1.addr))
			}
			if round%2 == 0 {
				kth()
				first()
			} else {
				first()
				kth()
			}
		}
		// Blocks of 125 in the order without, with, with, without
		// (twice): the network grows by each call, and this order gives
		// both sides the same mean size, where alternating gave the
		// blackholed side 100 more endpoints in every pair.
		for round := range 8 {
			on := round%4 == 1 || round%4 == 2
			blackhole(on)
			for range 125 {
				d := p.endpoint(netID2, pool2, next())
				if on {
					holed = append(holed, d)
				} else {
					normal = append(normal, d)
				}
			}
		}
		blackhole(false)
	}
	first, last := mean(costs[:10]), mean(costs[len(costs)-10:])
	for i, call := range []string{"RequestAddress", "CreateEndpoint", "Join"} {
		var f, l []time.Duration
		for _, e := range p.each[:10] {
			f = append(f, e[i])
		}
		for _, e := range p.each[990:1000] {
			l = append(l, e[i])
		}
		fmt.Printf("  %-15s first 10 %v each, last 10 %v each\n", call, mean(f).Round(10*time.Microsecond), mean(l).Round(10*time.Microsecond))
	}
	fmt.Printf("1,000 endpoints on one host: first 10 %v each, last 10 %v each: %.2fx (target <= 1.5x); the 1,000th took %v\n",
		first.Round(10*time.Microsecond), last.Round(10*time.Microsecond), float64(last)/float64(first), costs[len(costs)-1].Round(10*time.Microsecond))
	// Means move with one slow call (an fsync, a collection); medians of
	// 20 say what a typical call costs at each end.
	mf, ml := median(costs[:20]), median(costs[len(costs)-20:])
	fmt.Printf("  medians: first 20 %v, last 20 %v: %.2fx\n", mf.Round(10*time.Microsecond), ml.Round(10*time.Microsecond), float64(ml)/float64(mf))
	fmt.Printf("side by side, %d interleaved rounds: the 1,000th on h0 (999 held) median %v, the 1st on h1 (none in its network) median %v: %.2fx (target <= 1.5x)\n",
		len(atK), median(atK).Round(10*time.Microsecond), median(at1).Round(10*time.Microsecond), float64(median(atK))/float64(median(at1)))
	fmt.Printf("  and their removal (the calls of docker rm): the 1,000th median %v, the 1st %v: %.2fx\n",
		median(rmK).Round(10*time.Microsecond), median(rm1).Round(10*time.Microsecond), float64(median(rmK))/float64(median(rm1)))
	for i, call := range []string{"Leave", "DeleteEndpoint", "ReleaseAddress"} {
		// h0's last 40 removals are of its 1,000th; h1 made only its 1st.
		var k, f []time.Duration
		for _, e := range p.rms[len(p.rms)-len(rmK):] {
			k = append(k, e[i])
		}
		for _, e := range p1.rms {
			f = append(f, e[i])
		}
		fmt.Printf("    %-15s the 1,000th median %v, the 1st %v\n", call, median(k).Round(10*time.Microsecond), median(f).Round(10*time.Microsecond))
	}
	fmt.Printf("plugin calls of one docker run, %d and %d calls: p99 %v without, %v with h2 blackholed: %.2fx (target <= 1.2x)\n",
		len(normal), len(holed), p99(normal).Round(10*time.Microsecond), p99(holed).Round(10*time.Microsecond), float64(p99(holed))/float64(p99(normal)))
}
