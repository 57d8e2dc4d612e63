package sdnotify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/sdnotify"
)

// listen stands in for systemd: a datagram socket at addr.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyReachesAPathAndAnAbstractSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	n := sdnotify.New(path)
	if err := n.Notify("READY=1", "STATUS=serving"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "READY=1\nSTATUS=serving" {
		t.Errorf("got %q", got)
	}
	name := fmt.Sprintf("tenet-sdnotify-test-%d", os.Getpid())
	ac := listen(t, "\x00"+name)
	if err := sdnotify.New("@" + name).Notify("STOPPING=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, ac); got != "STOPPING=1" {
		t.Errorf("abstract: got %q", got)
	}
}

func TestWithoutSystemdNothingIsSent(t *testing.T) {
	n := sdnotify.New("")
	if n.Enabled() {
		t.Error("enabled without a socket")
	}
	if err := n.Notify("READY=1"); err != nil {
		t.Error(err)
	}
	if err := sdnotify.New(filepath.Join(t.TempDir(), "absent")).Notify("READY=1"); err == nil {
		t.Error("a socket nobody listens on: no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		bad       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 15 * time.Second, false},
		{"30000000", "42", 15 * time.Second, false},
		{"30000000", "43", 0, false},
		{"0", "", 0, true},
		{"x", "", 0, true},
		{"30000000", "y", 0, true},
	} {
		got, err := sdnotify.WatchdogInterval(tc.usec, tc.pid, 42)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("WatchdogInterval(%q, %q) = %v, %v; want %v, error %t", tc.usec, tc.pid, got, err, tc.want, tc.bad)
		}
	}
}

func TestWatchdogIsFedOnlyWhileHealthy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	var sick atomic.Bool
	checks := make(chan struct{}) // each check waits for the test
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		sdnotify.New(path).Watchdog(ctx, time.Millisecond, func(ctx context.Context) error {
			select {
			case checks <- struct{}{}:
			case <-ctx.Done():
			}
			if sick.Load() {
				return errors.New("writer stuck")
			}
			return nil
		}, slog.New(slog.DiscardHandler))
		close(done)
	}()
	<-checks
	if got := read(t, c); got != "WATCHDOG=1" {
		t.Errorf("got %q", got)
	}
	sick.Store(true)
	// Checks run one after another: once the third has begun, the second
	// (unhealthy) has sent whatever it would.
	<-checks
	<-checks
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); err == nil {
		t.Errorf("fed while unhealthy (%d bytes)", n)
	}
	cancel()
	<-done
}
