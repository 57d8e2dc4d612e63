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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/driver"
	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/admin"
	"github.com/tenet-net/tenet/internal/atomicfile"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/overlay"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type options struct {
	name, vtep, bind, keyFile, socket, adminSocket, dockerSocket, stateDir, netnsPrefix, logLevel string
	join, ipamSeeds, allowEgress                                                                  []string
	port, vxlanPort, wgPort                                                                       int
	requestTimeout                                                                                time.Duration
}

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "genkey" {
		return genkey(args[1:], stdout, stderr)
	}
	var o options
	host, _ := os.Hostname()
	var join, seeds, allow string
	fs := flag.NewFlagSet("tenetd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: tenetd --vtep ADDR --ipam-seeds H1,H2,... [flags]\n       tenetd genkey\n\nflags:\n")
		fs.PrintDefaults()
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.StringVar(&o.name, "name", host, "this host's unique name in the cluster")
	fs.StringVar(&o.vtep, "vtep", "", "this host's underlay address (required): VXLAN source and gossip address")
	fs.StringVar(&o.bind, "bind", "", "address the gossip ring listens on (default: the VTEP)")
	fs.IntVar(&o.port, "port", 7946, "gossip port (UDP and TCP)")
	fs.StringVar(&join, "join", "", "comma-separated HOST[:PORT] of hosts to join; rejoined while unreachable")
	fs.StringVar(&allow, "allow-egress", "", "comma-separated addresses or CIDRs on the underlay that tenants may reach anyway (by default they reach no member's address, no underlay network and no gossip or VXLAN port)")
	fs.StringVar(&seeds, "ipam-seeds", "", "comma-separated names of the hosts that first own each pool's address blocks (required; the same list on every host, never changed once pools exist)")
	fs.StringVar(&o.keyFile, "key-file", "/etc/tenet/key", "file holding the cluster key in hex (tenetd genkey)")
	fs.StringVar(&o.socket, "plugin-socket", "/run/docker/plugins/"+driver.PluginName+".sock", "Docker plugin socket")
	fs.StringVar(&o.adminSocket, "admin-socket", "/run/tenet/admin.sock", "root-only socket tenetctl talks to")
	fs.StringVar(&o.dockerSocket, "docker-socket", "/var/run/docker.sock", "the local Docker engine's API socket, where networks defined with tenetctl are created")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/tenet", "where local state is kept across restarts")
	fs.StringVar(&o.netnsPrefix, "netns-prefix", "tenet-", "prefix of tenant namespace names")
	fs.IntVar(&o.vxlanPort, "vxlan-port", overlay.DefaultPort, "VXLAN UDP port")
	fs.IntVar(&o.wgPort, "wireguard-port", overlay.DefaultWireGuardPort, "UDP port, on the underlay, of encrypted networks' traffic (WireGuard)")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 10*time.Second, "the longest a Docker plugin call may take")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
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
		fmt.Fprintf(stderr, "tenetd: unexpected argument %q (flags only, or genkey)\n", fs.Arg(0))
		return 2
	}
	if join != "" {
		o.join = strings.Split(join, ",")
	}
	if seeds != "" {
		o.ipamSeeds = strings.Split(seeds, ",")
	}
	if allow != "" {
		o.allowEgress = strings.Split(allow, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(stderr, "tenetd:", err)
		return 1
	}
	return 0
}

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
	if len(o.ipamSeeds) == 0 {
		return errors.New("--ipam-seeds: name the hosts that first own address blocks, e.g. --ipam-seeds h0,h1,h2 (the same on every host)")
	}

	gcfg := gossip.DefaultConfig()
	gcfg.NodeName, gcfg.BindAddr, gcfg.BindPort, gcfg.VTEP = o.name, bind, o.port, vtep
	gcfg.Seeds, gcfg.Keys, gcfg.Logger = o.join, [][]byte{key}, logger
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
	ccfg.Host, ccfg.VTEP, ccfg.StateDir, ccfg.Logger = o.name, vtep, o.stateDir, logger
	under := underlay(vtep)
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
	syncer := &driver.Syncer{Registry: reg, Engine: driver.NewEngine(o.dockerSocket), Logger: logger.With("component", "registry")}
	reg.CheckRealizable = syncer.CheckRealizable
	dcfg := driver.DefaultConfig()
	dcfg.Host, dcfg.RequestTimeout, dcfg.Logger = o.name, o.requestTimeout, logger
	drv, err := driver.New(dcfg, c, addrs, reg)
	if err != nil {
		return err
	}
	adm := &admin.Server{Host: o.name, VTEP: vtep.String(), HiddenGrace: ccfg.HiddenGrace, Core: c, Cluster: cl,
		Registry: reg, IPAM: addrs, KeyInUse: node.KeyInUse, Changed: syncer.Kick, RequestTimeout: o.requestTimeout,
		Logger: logger.With("component", "admin")}
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
	if under.Prefix.IsValid() {
		out = append(out, under)
	}
	return out
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
