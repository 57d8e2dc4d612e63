package unixhttp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, cfg Config) string {
	t.Helper()
	cfg.Path = filepath.Join(t.TempDir(), "s.sock")
	cfg.Name = "test"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	go func() { done <- Serve(ctx, cfg, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("unix", cfg.Path)
		if err == nil {
			c.Close()
			return cfg.Path
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // the socket is being created
	}
}

// waitClosed reads from c until the server closes it, or fails after d.
func waitClosed(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
}

func TestSilentAndSlowClientsAreDropped(t *testing.T) {
	path := serve(t, Config{HeaderTimeout: 200 * time.Millisecond, ReadTimeout: 400 * time.Millisecond})
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitClosed(t, silent, 5*time.Second)

	// Headers, then a body that never ends.
	slow, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, slow, 5*time.Second)
}

func TestConnectionsAreBoundedAndServedInTurn(t *testing.T) {
	path := serve(t, Config{MaxConns: 2, HeaderTimeout: 300 * time.Millisecond})
	// Two idle connections hold both slots until the header timeout drops
	// them; a real request then still gets through.
	for range 2 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	resp, err := client.Post("http://x/echo", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello" {
		t.Fatalf("echo = %q", b)
	}
}

func TestRateLogBoundsTheLog(t *testing.T) {
	var buf bytes.Buffer
	r := &RateLog{Logger: slog.New(slog.NewTextHandler(&buf, nil)), Level: slog.LevelWarn, Burst: 5}
	for range 10000 {
		r.Log(context.Background(), "bad request")
	}
	lines := strings.Count(buf.String(), "\n")
	if lines < 5 || lines > 15 {
		t.Fatalf("%d lines logged for 10,000 bad requests; want about 5 a second", lines)
	}
	if r.Suppressed() == 0 {
		t.Fatal("nothing counted as suppressed")
	}
}

func TestManyUnfinishedRequestsAreAllDropped(t *testing.T) {
	path := serve(t, Config{HeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond, MaxConns: 64})
	const n = 300
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		// Half send nothing, half start a body they never finish.
		if i%2 == 1 {
			io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\npartial")
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		waitClosed(t, c, 30*time.Second)
	}
}
