// Command fakepeer joins a Tenet ring as a host with no kernel objects and
// publishes many endpoints on one network, for benchmarks that need a host
// to already have thousands of remote endpoints programmed. It runs on a
// testbed host (its own network namespace), never in the root namespace.
//
//	fakepeer --name fake --bind 198.51.100.13 --key-file KEY --join 198.51.100.10 \
//	    --network acme/web --subnet 10.1.0.0/16 --first 1024 --count 10000
//
// It prints "published N" once the endpoints are written and stays until
// SIGTERM, then deletes them and leaves.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/gossip"
)

func main() {
	name := flag.String("name", "fake", "node name")
	bind := flag.String("bind", "", "address to bind and advertise (this host's underlay address)")
	keyFile := flag.String("key-file", "", "cluster key (hex)")
	join := flag.String("join", "", "comma-separated addresses to join")
	network := flag.String("network", "", "network key tenant/name")
	subnet := flag.String("subnet", "", "the network's subnet")
	first := flag.Int("first", 1024, "offset in the subnet of the first address used")
	count := flag.Int("count", 10000, "endpoints to publish")
	flag.Parse()
	if err := run(*name, *bind, *keyFile, *join, *network, *subnet, *first, *count); err != nil {
		fmt.Fprintln(os.Stderr, "fakepeer:", err)
		os.Exit(1)
	}
}

func run(name, bind, keyFile, join, network, subnet string, first, count int) error {
	addr, err := netip.ParseAddr(bind)
	if err != nil {
		return fmt.Errorf("--bind: %w", err)
	}
	pfx, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("--subnet: %w", err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil {
		return fmt.Errorf("--key-file: %w", err)
	}
	cfg := gossip.DefaultConfig()
	cfg.NodeName, cfg.BindAddr, cfg.VTEP, cfg.Keys = name, addr, addr, [][]byte{key}
	cfg.Seeds = strings.Split(join, ",")
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	node, err := gossip.New(cfg)
	if err != nil {
		return err
	}
	sig, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	for deadline := time.Now().Add(30 * time.Second); len(node.Members()) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("joined no one after 30s")
		}
	}
	if err := node.Attachments().Attach(network); err != nil {
		return err
	}
	base := pfx.Masked().Addr().As4()
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	ids := make([]string, 0, count)
	for i := range count {
		v := b + uint32(first+i)
		ip := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if !pfx.Contains(ip) {
			return fmt.Errorf("endpoint %d: %s is outside %s", i, ip, pfx)
		}
		id := make([]byte, 32)
		rand.Read(id)
		mac := net.HardwareAddr{0x02, 0xfe, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		ep := gossip.Endpoint{ID: hex.EncodeToString(id), Network: network, MAC: mac, IP: ip}
		if err := node.Endpoints().Put(ep); err != nil {
			return err
		}
		ids = append(ids, ep.ID)
	}
	fmt.Printf("published %d\n", count)
	<-sig.Done()
	for _, id := range ids {
		node.Endpoints().Delete(id)
	}
	fmt.Printf("withdrew %d\n", count)
	// Stay in the ring a little so the tombstones reach everyone (the
	// periodic sync repairs what a lost packet missed).
	select {
	case <-time.After(3 * time.Second):
	case err := <-done:
		return err
	}
	cancel()
	return <-done
}
