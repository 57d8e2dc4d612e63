// Command tenetd is Tenet's per-host daemon: it joins the cluster's gossip
// ring, programs the VXLAN datapath, and serves Docker's remote network
// driver protocol on /run/docker/plugins/tenet.sock and the admin API on
// /run/tenet/admin.sock.
//
//	tenetd --name h1 --vtep 198.51.100.11 --key-file /etc/tenet/key --join 198.51.100.10 --ipam-seeds h0,h1,h2
//	tenetd genkey > /etc/tenet/key
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/driver"
	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/admin"
	"github.com/tenet-net/tenet/internal/atomicfile"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/metrics"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/internal/resolver"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/internal/sdnotify"
	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/overlay"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type options struct {
	name, vtep, bind, keyFile, socket, adminSocket, dockerSocket, stateDir, netnsPrefix, logLevel, metricsAddr string
	resolvConf                                                                                                 string
	join, ipamSeeds, allowEgress, dnsUpstream                                                                  []string
	dns                                                                                                        bool
	port, vxlanPort, wgPort                                                                                    int
	requestTimeout, pskRotation                                                                                time.Duration
	// systemd's environment: $NOTIFY_SOCKET, $WATCHDOG_USEC, $WATCHDOG_PID.
	notifySocket, watchdogUsec, watchdogPID string
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "genkey" {
		return genkey(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "docker-dns" {
		return dockerDNS(args[1:], stdout, stderr)
	}
	var o options
	var raw rawFlags
	fs := newFlagSet("tenetd", &o, &raw, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: tenetd --vtep ADDR --ipam-seeds H1,H2,... [flags]\n       tenetd genkey\n       tenetd docker-dns [flags]\n\nflags:\n")
		fs.PrintDefaults()
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "tenetd", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tenetd: unexpected argument %q (flags only, or genkey, or docker-dns)\n", fs.Arg(0))
		return 2
	}
	if raw.join != "" {
		o.join = strings.Split(raw.join, ",")
	}
	if raw.seeds != "" {
		o.ipamSeeds = strings.Split(raw.seeds, ",")
	}
	if raw.allow != "" {
		o.allowEgress = strings.Split(raw.allow, ",")
	}
	if raw.upstream != "" {
		o.dnsUpstream = strings.Split(raw.upstream, ",")
	}
	o.notifySocket, o.watchdogUsec, o.watchdogPID = os.Getenv("NOTIFY_SOCKET"), os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(stderr, "tenetd:", err)
		return 1
	}
	return 0
}

// rawFlags are the comma-separated lists among tenetd's flags, as given.
type rawFlags struct{ join, seeds, allow, upstream string }

// newFlagSet declares tenetd's flags into o and raw.
func newFlagSet(name string, o *options, raw *rawFlags, stderr io.Writer) *flag.FlagSet {
	host, _ := os.Hostname()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.name, "name", host, "this host's unique name in the cluster")
	fs.StringVar(&o.vtep, "vtep", "", "this host's underlay address (required): VXLAN source and gossip address")
	fs.StringVar(&o.bind, "bind", "", "address the gossip ring listens on (default: the VTEP)")
	fs.IntVar(&o.port, "port", 7946, "gossip port (UDP and TCP)")
	fs.StringVar(&raw.join, "join", "", "comma-separated HOST[:PORT] of hosts to join; rejoined while unreachable")
	fs.StringVar(&raw.allow, "allow-egress", "", "comma-separated addresses or CIDRs on the underlay that tenants may reach anyway (by default they reach no member's address, no underlay network and no gossip or VXLAN port)")
	fs.StringVar(&raw.seeds, "ipam-seeds", "", "comma-separated names of the hosts that first own each pool's address blocks (required; the same list on every host, never changed once pools exist)")
	fs.StringVar(&o.keyFile, "key-file", "/etc/tenet/key", "file holding the cluster key in hex (tenetd genkey)")
	fs.StringVar(&o.socket, "plugin-socket", "/run/docker/plugins/"+driver.PluginName+".sock", "Docker plugin socket")
	fs.StringVar(&o.adminSocket, "admin-socket", "/run/tenet/admin.sock", "root-only socket tenetctl talks to")
	fs.StringVar(&o.dockerSocket, "docker-socket", "/var/run/docker.sock", "the local Docker engine's API socket, where networks defined with tenetctl are created")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/tenet", "where local state is kept across restarts")
	fs.StringVar(&o.netnsPrefix, "netns-prefix", "tenet-", "prefix of tenant namespace names")
	fs.IntVar(&o.vxlanPort, "vxlan-port", overlay.DefaultPort, "VXLAN UDP port")
	fs.IntVar(&o.wgPort, "wireguard-port", overlay.DefaultWireGuardPort, "UDP port, on the underlay, of encrypted networks' traffic (WireGuard)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "the longest a Docker plugin call may take")
	fs.DurationVar(&o.pskRotation, "wireguard-rotate", time.Hour, "how often encrypted networks' preshared keys with the other hosts are replaced (0: only at each start; at least 10s)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.dns, "dns", true, "answer containers' DNS queries at "+overlay.ResolverAddr.String()+" with the names of every container on their tenant network, on any host (needs the engine's \"dns\" setting to name that address first; see the README)")
	fs.StringVar(&raw.upstream, "dns-upstream", "", "comma-separated ADDR[:PORT] of the DNS servers asked for other names; the first also answers Docker's own networks (default: the nameservers of --resolv-conf, those behind systemd-resolved first)")
	fs.StringVar(&o.resolvConf, "resolv-conf", "/etc/resolv.conf", "where the host's DNS servers are listed, unless --dns-upstream names them")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9474", "HOST:PORT serving /metrics (Prometheus), /healthz and /readyz over HTTP; \"\" turns it off (tenants cannot reach the host's addresses, but any local process can reach loopback)")
	return fs
}

// genkey prints a new random cluster key.
func genkey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenetd genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: tenetd genkey\n  print a new random cluster key (AES-256, hex) for --key-file; the same file goes to every host\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tenetd genkey: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	k, err := gossip.GenerateKey()
	if err != nil {
		fmt.Fprintln(stderr, "tenetd:", err)
		return 1
	}
	fmt.Fprintln(stdout, hex.EncodeToString(k))
	return 0
}

func run(ctx context.Context, o options) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", o.logLevel, err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("host", o.name)
	vtep, err := netip.ParseAddr(o.vtep)
	if err != nil {
		return fmt.Errorf("--vtep %q: must be this host's underlay IP address", o.vtep)
	}
	bind := vtep
	if o.bind != "" {
		if bind, err = netip.ParseAddr(o.bind); err != nil {
			return fmt.Errorf("--bind %q: not an IP address", o.bind)
		}
	}
	key, err := readKey(o.keyFile)
	if err != nil {
		return err
	}
	if o.port < 1 || o.port > 65535 || o.vxlanPort < 1 || o.vxlanPort > 65535 || o.wgPort < 1 || o.wgPort > 65535 {
		return fmt.Errorf("--port %d / --vxlan-port %d / --wireguard-port %d: must be 1-65535", o.port, o.vxlanPort, o.wgPort)
	}
	if o.pskRotation != 0 && o.pskRotation < 10*time.Second {
		return fmt.Errorf("--wireguard-rotate %v: must be 0 (only at start) or at least 10s", o.pskRotation)
	}
	if len(o.ipamSeeds) == 0 {
		return errors.New("--ipam-seeds: name the hosts that first own address blocks, e.g. --ipam-seeds h0,h1,h2 (the same on every host)")
	}
	notify := sdnotify.New(o.notifySocket)
	watchdog, err := sdnotify.WatchdogInterval(o.watchdogUsec, o.watchdogPID, os.Getpid())
	if err != nil {
		return err
	}

	// Metrics first: the core and the driver report to them, and
	// memberlist's are attached before gossip starts.
	m := metrics.New(metrics.Config{Host: o.name, Version: version, Logger: logger.With("component", "metrics")})
	defer m.Close()
	if err := m.AttachMemberlist(o.name); err != nil {
		return err
	}

	gcfg := gossip.DefaultConfig()
	gcfg.NodeName, gcfg.BindAddr, gcfg.BindPort, gcfg.VTEP = o.name, bind, o.port, vtep
	gcfg.Seeds, gcfg.Keys, gcfg.Logger = o.join, [][]byte{key}, logger
	gcfg.PeersFile = filepath.Join(o.stateDir, "peers")
	node, err := gossip.New(gcfg)
	if err != nil {
		return err
	}
	ocfg := overlay.DefaultConfig()
	ocfg.VTEP, ocfg.Port, ocfg.NetnsPrefix, ocfg.Logger = vtep, uint16(o.vxlanPort), o.netnsPrefix, logger
	ocfg.WireGuardPort = uint16(o.wgPort)
	dp, err := overlay.New(ocfg)
	if err != nil {
		return err
	}
	defer dp.Close()
	icfg := ipam.DefaultConfig()
	icfg.Host, icfg.Seeds, icfg.Logger = o.name, o.ipamSeeds, logger
	icfg.Store = atomicfile.Store{Path: filepath.Join(o.stateDir, "ipam.json")}
	addrs, err := ipam.New(icfg, driver.GossipReplica{Node: node})
	if err != nil {
		return err
	}

	ccfg := core.DefaultConfig()
	ccfg.Host, ccfg.VTEP, ccfg.StateDir, ccfg.Logger, ccfg.Observer = o.name, vtep, o.stateDir, logger, m
	under := underlay(vtep)
	ccfg.PSKRotation = o.pskRotation
	ccfg.Forbidden = forbidden(under, ocfg.UplinkNet)
	ccfg.Infra, err = infra(under, bind, uint16(o.port), o.allowEgress)
	if err != nil {
		return err
	}
	cl := core.GossipCluster{Node: node}
	c, err := core.New(ccfg, core.OverlayDatapath{DP: dp}, cl)
	if err != nil {
		return err
	}
	reg := registry.New(o.name, registry.GossipKV{Node: node}, registry.GossipCluster{Node: node})
	reg.CheckSubnet, reg.MaxMTU, reg.CanEncrypt = c.CheckSubnet, c.MaxMTUFor, c.CryptSupport
	engine := driver.NewEngine(o.dockerSocket)
	syncer := &driver.Syncer{Registry: reg, Engine: engine, Logger: logger.With("component", "registry")}
	reg.CheckRealizable = syncer.CheckRealizable
	namer := &driver.Namer{Engine: engine, Core: c, Logger: logger.With("component", "names")}
	dcfg := driver.DefaultConfig()
	dcfg.Host, dcfg.RequestTimeout, dcfg.Logger, dcfg.ObserveCall = o.name, o.requestTimeout, logger, m.ObserveCall
	drv, err := driver.New(dcfg, c, addrs, reg)
	if err != nil {
		return err
	}
	var res *resolver.Resolver
	if o.dns {
		rcfg := resolver.DefaultConfig()
		rcfg.Host, rcfg.Datapath, rcfg.Local, rcfg.Cluster, rcfg.Logger = o.name, dp, c, cl, logger
		rcfg.Taps = resolver.OverlayTaps(dp)
		rcfg.DockerNames = func(ctx context.Context) (map[string]string, error) {
			nets, err := engine.Networks(ctx)
			names := map[string]string{}
			for _, n := range nets {
				names[n.ID] = n.Name
			}
			return names, err
		}
		if rcfg.Upstream, err = upstreams(o.dnsUpstream, o.resolvConf, "/run/systemd/resolve/resolv.conf"); err != nil {
			return err
		}
		if len(rcfg.Upstream) == 0 {
			logger.Warn("no upstream DNS server: containers resolve only their networks' names", "resolv_conf", o.resolvConf)
		}
		if res, err = resolver.New(rcfg); err != nil {
			return err
		}
	}
	gossipStats := func() metrics.GossipStats { return metrics.FromGossip(node) }
	if err := m.Watch(metrics.Sources{Local: c, Cluster: cl, Gossip: gossipStats, IPAM: addrs.Stats}); err != nil {
		return err
	}
	adm := &admin.Server{Host: o.name, VTEP: vtep.String(), HiddenGrace: ccfg.HiddenGrace, Core: c, Cluster: cl,
		Registry: reg, IPAM: addrs, KeyInUse: node.KeyInUse, Changed: syncer.Kick, RequestTimeout: o.requestTimeout,
		Gossip: gossipStats, Convergence: m.Convergence, MaxMTU: c.MaxMTUFor, Logger: logger.With("component", "admin")}
	health := healthChecks(c, node, o.socket, len(o.join) > 0)
	logger.Info("tenetd starting", "version", version, "vtep", vtep, "gossip", node.Addr(), "socket", o.socket)

	// Join the components: the first to fail stops the others.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	fns := []func(context.Context) error{
		node.Run,
		addrs.Run,
		c.Run,
		syncer.Run,
		func(ctx context.Context) error { return kickOnRegistryChanges(ctx, node, syncer) },
		func(ctx context.Context) error { return drv.Serve(ctx, o.socket) },
		func(ctx context.Context) error { return adm.Serve(ctx, o.adminSocket) },
		namer.Run,
		func(ctx context.Context) error {
			usable := func(ctx context.Context) error {
				select {
				case <-c.Started():
					return driver.Probe(ctx, o.socket)
				default:
					return errors.New("the saved state is not reconciled yet")
				}
			}
			notifySystemd(ctx, notify, watchdog, usable, health.LiveNow, logger)
			<-ctx.Done() // returning would stop the others
			return nil
		},
	}
	if res != nil {
		fns = append(fns, res.Run)
	}
	if o.metricsAddr != "" {
		fns = append(fns, func(ctx context.Context) error {
			return metrics.Serve(ctx, o.metricsAddr, m, health, logger.With("component", "metrics"))
		})
	}
	errs := make([]error, len(fns))
	for i, fn := range fns {
		wg.Go(func() {
			errs[i] = fn(ctx)
			cancel()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stuckAfter is how long one datapath pass may run before tenetd counts
// as not live (a kernel call that never returns): /healthz fails and
// systemd's watchdog is no longer fed.
const stuckAfter = 2 * time.Minute

// healthChecks: live while the datapath writer makes progress; ready once
// the plugin socket answers as Docker would see it, the saved state is
// reconciled, and (with --join) another host of the ring is reachable.
func healthChecks(c *core.Core, node *gossip.Node, socket string, joins bool) *metrics.Health {
	return &metrics.Health{
		Live: []metrics.Check{{Name: "datapath-writer", Fn: func(context.Context) error {
			if busy := c.Writer().Busy; busy > stuckAfter {
				return fmt.Errorf("one pass has run for %v", busy.Round(time.Second))
			}
			return nil
		}}},
		Ready: []metrics.Check{
			{Name: "plugin", Fn: func(ctx context.Context) error { return driver.Probe(ctx, socket) }},
			{Name: "core", Fn: func(context.Context) error {
				select {
				case <-c.Started():
					return nil
				default:
					return errors.New("the saved state is not reconciled yet")
				}
			}},
			{Name: "ring", Fn: func(context.Context) error {
				if n := len(node.Members()); joins && n < 2 {
					return errors.New("no other host of the ring is reachable")
				}
				return nil
			}},
		},
	}
}

// notifySystemd tells systemd (Type=notify) that tenetd is ready once
// Docker can use it (usable: the saved state is reconciled and the plugin
// socket answers; it does not wait for the ring: a host must start even
// when no other is up). Then it feeds the watchdog while live says so, and
// says STOPPING=1 when ctx ends.
func notifySystemd(ctx context.Context, n *sdnotify.Notifier, watchdog time.Duration, usable, live func(context.Context) error, log *slog.Logger) {
	if !n.Enabled() {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for usable(ctx) != nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	if err := n.Notify("READY=1", "STATUS=serving the docker plugin"); err != nil {
		log.Warn("tell systemd tenetd is ready", "err", err)
	}
	n.Watchdog(ctx, watchdog, live, log)
	<-ctx.Done()
	if err := n.Notify("STOPPING=1"); err != nil {
		log.Debug("tell systemd tenetd stops", "err", err)
	}
}

// kickOnRegistryChanges wakes the syncer whenever a definition changes
// anywhere in the cluster.
func kickOnRegistryChanges(ctx context.Context, node *gossip.Node, s *driver.Syncer) error {
	events, cancel := node.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if ev.Table == gossip.TableKV && registry.IsKey(ev.Key) {
				s.Kick()
			}
		}
	}
}

// underlay finds the network of the interface that holds the VTEP.
func underlay(vtep netip.Addr) rules.Forbidden {
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok || ip.Unmap() != vtep {
				continue
			}
			ones, _ := n.Mask.Size()
			p := netip.PrefixFrom(vtep, ones).Masked()
			return rules.Forbidden{Prefix: p, What: fmt.Sprintf("the underlay network %s (%s)", p, i.Name)}
		}
	}
	return rules.Forbidden{}
}

// infra is what tenants may not reach: the underlay network, this host's
// gossip address and gossip's port (the core adds every member's address),
// unless --allow-egress lists it.
func infra(under rules.Forbidden, bind netip.Addr, port uint16, allow []string) (overlay.Infra, error) {
	in := overlay.Infra{Ports: []overlay.L4Port{{Proto: overlay.TCP, Port: port}, {Proto: overlay.UDP, Port: port}}}
	if under.Prefix.IsValid() {
		in.Deny = append(in.Deny, under.Prefix)
	}
	if bind.IsValid() && !bind.IsUnspecified() {
		in.Deny = append(in.Deny, netip.PrefixFrom(bind, bind.BitLen()))
	}
	for _, a := range allow {
		p, err := netip.ParsePrefix(strings.TrimSpace(a))
		if err != nil {
			ip, aerr := netip.ParseAddr(strings.TrimSpace(a))
			if aerr != nil {
				return in, fmt.Errorf("--allow-egress %q: not an address or CIDR", a)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		if p != p.Masked() {
			return in, fmt.Errorf("--allow-egress %q: host bits set; did you mean %s?", a, p.Masked())
		}
		in.Allow = append(in.Allow, p)
	}
	return in, nil
}

// forbidden lists what tenant subnets may not overlap on this host: the
// underlay network the VTEP is on, and the uplink range.
func forbidden(under rules.Forbidden, uplink netip.Prefix) []rules.Forbidden {
	out := []rules.Forbidden{{Prefix: uplink, What: fmt.Sprintf("the range of tenant uplinks (%s)", uplink)}}
	if !uplink.Contains(overlay.ResolverAddr) {
		out = append(out, rules.Forbidden{Prefix: netip.PrefixFrom(overlay.ResolverAddr, 32), What: "the name resolver's address"})
	}
	if under.Prefix.IsValid() {
		out = append(out, under)
	}
	return out
}

// upstreams parses --dns-upstream, or reads the nameservers of resolvConf
// (a missing file: none), leaving out the resolver's own address. When
// resolvConf names only loopback servers (systemd-resolved's 127.0.0.53),
// the servers behind them (systemdConf's) come first, as Docker does: the
// engine's containers cannot reach a loopback server, so Docker's networks
// are sent to the first one of the list (overlay.RedirectHostResolver).
func upstreams(flagged []string, resolvConf, systemdConf string) ([]netip.AddrPort, error) {
	if len(flagged) > 0 {
		var out []netip.AddrPort
		for _, s := range flagged {
			ap, err := parseUpstream(s)
			if err != nil {
				return nil, fmt.Errorf("--dns-upstream %w", err)
			}
			if ap.Addr() != overlay.ResolverAddr {
				out = append(out, ap)
			}
		}
		return out, nil
	}
	out, err := nameservers(resolvConf)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 && !slices.ContainsFunc(out, func(a netip.AddrPort) bool { return !a.Addr().IsLoopback() }) {
		if behind, err := nameservers(systemdConf); err == nil {
			behind = slices.DeleteFunc(behind, func(a netip.AddrPort) bool { return a.Addr().IsLoopback() })
			out = append(behind, out...)
		}
	}
	return out, nil
}

// parseUpstream parses ADDR or ADDR:PORT (port 53 by default).
func parseUpstream(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, aerr := netip.ParseAddr(strings.Trim(s, "[]"))
		if aerr != nil {
			return ap, fmt.Errorf("%q: not an ADDR or ADDR:PORT", s)
		}
		ap = netip.AddrPortFrom(a.WithZone(""), 53)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// nameservers lists the nameservers of the resolv.conf at path but the
// resolver's own address; a missing file lists none.
func nameservers(path string) ([]netip.AddrPort, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("--resolv-conf: %w", err)
	}
	var out []netip.AddrPort
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ap, err := parseUpstream(f[1])
		if err != nil {
			return nil, fmt.Errorf("--resolv-conf %s: nameserver %w", path, err)
		}
		if ap.Addr() != overlay.ResolverAddr {
			out = append(out, ap)
		}
	}
	return out, nil
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w (make one with: tenetd genkey > %s)", err, path)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
		return nil, fmt.Errorf("--key-file %s: must hold a 16, 24 or 32-byte key in hex (tenetd genkey)", path)
	}
	return key, nil
}
