// Command tenetd is Tenet's per-host daemon: it joins the cluster's gossip
// ring, programs the VXLAN datapath, and serves Docker's remote network
// driver protocol on /run/docker/plugins/tenet.sock.
//
//	tenetd --name h1 --vtep 198.51.100.11 --key-file /etc/tenet/key --join 198.51.100.10
//	tenetd genkey > /etc/tenet/key
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/tenet-net/tenet/driver"
	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/overlay"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type options struct {
	name, vtep, bind, keyFile, socket, adminSocket, dockerSocket, stateDir, netnsPrefix, logLevel string
	join, ipamSeeds                                                                               []string
	port, vxlanPort                                                                               int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "genkey" {
		k, err := gossip.GenerateKey()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tenetd:", err)
			os.Exit(1)
		}
		fmt.Println(hex.EncodeToString(k))
		return
	}
	var o options
	host, _ := os.Hostname()
	var join, seeds string
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.StringVar(&o.name, "name", host, "this host's unique name in the cluster")
	flag.StringVar(&o.vtep, "vtep", "", "this host's underlay address (required): VXLAN source and gossip address")
	flag.StringVar(&o.bind, "bind", "", "address the gossip ring listens on (default: the VTEP)")
	flag.IntVar(&o.port, "port", 7946, "gossip port (UDP and TCP)")
	flag.StringVar(&join, "join", "", "comma-separated HOST[:PORT] of hosts to join; rejoined while unreachable")
	flag.StringVar(&seeds, "ipam-seeds", "", "comma-separated names of the hosts that first own each pool's address blocks (required; the same list on every host, never changed once pools exist)")
	flag.StringVar(&o.keyFile, "key-file", "/etc/tenet/key", "file holding the cluster key in hex (tenetd genkey)")
	flag.StringVar(&o.socket, "plugin-socket", "/run/docker/plugins/"+driver.PluginName+".sock", "Docker plugin socket")
	flag.StringVar(&o.adminSocket, "admin-socket", "/run/tenet/admin.sock", "root-only socket tenetctl talks to")
	flag.StringVar(&o.dockerSocket, "docker-socket", "/var/run/docker.sock", "the local Docker engine's API socket, where networks defined with tenetctl are created")
	flag.StringVar(&o.stateDir, "state-dir", "/var/lib/tenet", "where local state is kept across restarts")
	flag.StringVar(&o.netnsPrefix, "netns-prefix", "tenet-", "prefix of tenant namespace names")
	flag.IntVar(&o.vxlanPort, "vxlan-port", overlay.DefaultPort, "VXLAN UDP port")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()
	if *showVersion {
		fmt.Println("tenetd", version)
		return
	}
	if join != "" {
		o.join = strings.Split(join, ",")
	}
	if seeds != "" {
		o.ipamSeeds = strings.Split(seeds, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "tenetd:", err)
		os.Exit(1)
	}
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
	if o.port < 1 || o.port > 65535 || o.vxlanPort < 1 || o.vxlanPort > 65535 {
		return fmt.Errorf("--port %d / --vxlan-port %d: must be 1-65535", o.port, o.vxlanPort)
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
	dp, err := overlay.New(ocfg)
	if err != nil {
		return err
	}
	defer dp.Close()
	icfg := ipam.DefaultConfig()
	icfg.Host, icfg.Seeds, icfg.Logger = o.name, o.ipamSeeds, logger
	icfg.Store = driver.FileStore{Path: filepath.Join(o.stateDir, "ipam.json")}
	if len(o.ipamSeeds) == 0 {
		return errors.New("--ipam-seeds: name the hosts that first own address blocks, e.g. --ipam-seeds h0,h1,h2 (the same on every host)")
	}
	addrs, err := ipam.New(icfg, driver.GossipReplica{Node: node})
	if err != nil {
		return err
	}
	dcfg := driver.DefaultConfig()
	dcfg.Host, dcfg.VTEP, dcfg.StateDir, dcfg.Logger = o.name, vtep, o.stateDir, logger
	drv, err := driver.New(dcfg, dp, driver.GossipCluster{Node: node}, addrs)
	if err != nil {
		return err
	}
	drv.EnableRegistry(driver.GossipKV{Node: node}, o.dockerSocket)
	logger.Info("tenetd starting", "version", version, "vtep", vtep, "gossip", node.Addr(), "socket", o.socket)

	// Join the components: the first to fail stops the others.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i, fn := range []func(context.Context) error{
		node.Run,
		addrs.Run,
		drv.Run,
		func(ctx context.Context) error { return drv.Serve(ctx, o.socket) },
		func(ctx context.Context) error { return drv.ServeAdmin(ctx, o.adminSocket) },
	} {
		wg.Go(func() {
			errs[i] = fn(ctx)
			cancel()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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
