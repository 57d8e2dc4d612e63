package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/sdnotify"

	"github.com/tenet-net/tenet/internal/rules"
)

func TestGenkeyHelpPrintsHelpNotAKey(t *testing.T) {
	for _, args := range [][]string{{"genkey", "--help"}, {"genkey", "-h"}} {
		var out, errb bytes.Buffer
		if code := cli(args, &out, &errb); code != 0 || out.Len() != 0 || !strings.Contains(errb.String(), "usage: tenetd genkey") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := cli([]string{"genkey"}, &out, &errb); code != 0 {
		t.Fatalf("genkey: exit %d %s", code, errb.String())
	}
	if k, err := hex.DecodeString(strings.TrimSpace(out.String())); err != nil || len(k) != 32 {
		t.Fatalf("genkey printed %q", out.String())
	}
	if code := cli([]string{"genkey", "extra"}, &out, &errb); code != 2 {
		t.Errorf("genkey with an argument: exit %d", code)
	}
}

func TestFlagErrorsExitTwoAndHelpZero(t *testing.T) {
	var out, errb bytes.Buffer
	if code := cli([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "--vtep") {
		t.Errorf("--help: %d %q", code, errb.String())
	}
	if code := cli([]string{"--bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown flag: %d", code)
	}
	if code := cli([]string{"stray"}, &out, &errb); code != 2 {
		t.Errorf("stray argument: %d", code)
	}
}

func TestInfraDeniesTheUnderlayAndAllowsWhatIsListed(t *testing.T) {
	under := rules.Forbidden{Prefix: netip.MustParsePrefix("198.51.100.0/24")}
	in, err := infra(under, netip.MustParseAddr("198.51.100.10"), 7946, []string{"198.51.100.53", "203.0.113.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Deny) != 2 || in.Deny[0] != under.Prefix || in.Deny[1] != netip.MustParsePrefix("198.51.100.10/32") {
		t.Errorf("deny %v", in.Deny)
	}
	if len(in.Ports) != 2 || in.Ports[0].Port != 7946 || in.Ports[0].Proto == in.Ports[1].Proto {
		t.Errorf("ports %v", in.Ports)
	}
	if len(in.Allow) != 2 || in.Allow[0] != netip.MustParsePrefix("198.51.100.53/32") {
		t.Errorf("allow %v", in.Allow)
	}
	for _, bad := range []string{"nope", "198.51.100.1/24"} {
		if _, err := infra(under, netip.Addr{}, 7946, []string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("--allow-egress %s: %v", bad, err)
		}
	}
}

func TestSystemdHearsReadyOnceUsableThenTheWatchdogThenStopping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sd, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	read := func() string {
		t.Helper()
		buf := make([]byte, 512)
		_ = sd.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := sd.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	var asked atomic.Int32
	usable := func(context.Context) error {
		if asked.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		notifySystemd(ctx, sdnotify.New(path), 10*time.Millisecond, usable, func(context.Context) error { return nil }, slog.New(slog.DiscardHandler))
		close(done)
	}()
	if got := read(); got != "READY=1\nSTATUS=serving the docker plugin" || asked.Load() < 3 {
		t.Errorf("first notification %q after %d checks; want READY=1 once usable", got, asked.Load())
	}
	if got := read(); got != "WATCHDOG=1" {
		t.Errorf("then %q, want WATCHDOG=1", got)
	}
	cancel()
	<-done
	for {
		got := read()
		if got == "STOPPING=1" {
			break
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("at the end %q, want STOPPING=1", got)
		}
	}
}

func TestUpstreamsFromFlagOrResolvConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver 169.254.53.53\nnameserver 2001:db8::1\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(dir, "none")
	got, err := upstreams(nil, conf, none)
	if err != nil || fmt.Sprint(got) != "[127.0.0.53:53 [2001:db8::1]:53]" {
		t.Errorf("from %s: %v %v", conf, got, err)
	}
	got, err = upstreams([]string{"203.0.113.1", "198.51.100.2:5353"}, conf, none)
	if err != nil || fmt.Sprint(got) != "[203.0.113.1:53 198.51.100.2:5353]" {
		t.Errorf("from the flag: %v %v", got, err)
	}
	if _, err := upstreams([]string{"dns.example"}, conf, none); err == nil || !strings.Contains(err.Error(), `"dns.example"`) {
		t.Errorf("a host name: %v", err)
	}
	if got, err := upstreams(nil, none, none); err != nil || len(got) != 0 {
		t.Errorf("no resolv.conf: %v %v", got, err)
	}
	// systemd-resolved: the servers behind 127.0.0.53 come first.
	stub, behind := filepath.Join(dir, "stub.conf"), filepath.Join(dir, "behind.conf")
	_ = os.WriteFile(stub, []byte("nameserver 127.0.0.53\noptions edns0\n"), 0o644)
	_ = os.WriteFile(behind, []byte("nameserver 203.0.113.9\nnameserver 127.0.0.1\n"), 0o644)
	if got, err := upstreams(nil, stub, behind); err != nil || fmt.Sprint(got) != "[203.0.113.9:53 127.0.0.53:53]" {
		t.Errorf("behind systemd-resolved: %v %v", got, err)
	}
}

// TestWireGuardRotateRefusesAShortOrNegativeInterval: checked before
// tenetd touches anything, naming the flag.
func TestWireGuardRotateRefusesAShortOrNegativeInterval(t *testing.T) {
	var key bytes.Buffer
	if code := cli([]string{"genkey"}, &key, io.Discard); code != 0 {
		t.Fatal("genkey failed")
	}
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, key.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"5s", "-1m"} {
		var errb bytes.Buffer
		code := cli([]string{"--vtep", "198.51.100.11", "--key-file", keyFile, "--ipam-seeds", "h0", "--wireguard-rotate", v}, io.Discard, &errb)
		if code != 1 || !strings.Contains(errb.String(), "--wireguard-rotate ") ||
			!strings.Contains(errb.String(), "must be 0 (only at start) or at least 10s") {
			t.Errorf("--wireguard-rotate %s: exit %d, %q", v, code, errb.String())
		}
	}
}
