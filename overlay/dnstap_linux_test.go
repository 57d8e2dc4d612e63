package overlay_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay"
	"github.com/tenet-net/tenet/overlay/nstest"
)

// dockerLikeDNS makes a namespace where 127.0.0.11:53 is translated to a
// socket of ours at 127.0.0.11:5353, as Docker makes its embedded DNS's
// rules, and a second server at 127.0.0.12:53 (not Docker's address). Each
// answers with its tag and the query. It returns the namespace's path.
func dockerLikeDNS(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	name := nstest.NewNetNS(t)
	path := "/run/netns/" + name
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	rules := `table ip docker-like {
	chain out { type nat hook output priority -100; ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:5353; }
}`
	cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	for _, srv := range []struct{ at, tag string }{{"127.0.0.11:5353", "docker"}, {"127.0.0.12:53", "other"}} {
		c, err := e2e.ListenUDPIn(path, netip.MustParseAddrPort(srv.at))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go func(tag string) {
			buf := make([]byte, 512)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = c.WriteToUDPAddrPort(append([]byte(tag+":"), buf[:n]...), from)
			}
		}(srv.tag)
	}
	return path
}

// ask sends msg to addr from inside ns and returns the answer.
func ask(t *testing.T, ns, addr, msg string) string {
	t.Helper()
	c, err := e2e.DialUDPIn(ns, netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("answer to %q from %s: %v", msg, addr, err)
	}
	return string(buf[:n])
}

// TestDNSTapRewritesDockersAnswers: with a tap, the answers of the
// embedded DNS (after Docker's NAT is undone) reach tenetd, which lets
// them through unchanged or replaced, longer or shorter, with lengths and
// checksums the receiving socket accepts; answers from any other address
// are not queued; with no tap (never made, closed, or the table removed)
// every answer passes untouched.
func TestDNSTapRewritesDockersAnswers(t *testing.T) {
	ns := dockerLikeDNS(t)
	dp := &overlay.Datapath{}
	if got := ask(t, ns, "127.0.0.11:53", "q0"); got != "docker:q0" {
		t.Fatalf("before any tap: %q", got)
	}
	tap, err := dp.TapDockerDNS(ns)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.TapDockerDNS(ns); err == nil {
		t.Error("a second tap on the same namespace was made")
	}
	seen := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			as, err := tap.Read()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			for _, a := range as {
				seen <- string(a.DNS)
				switch {
				case bytes.HasSuffix(a.DNS, []byte("keep")):
					_ = tap.Pass(a)
				case bytes.HasSuffix(a.DNS, []byte("short")):
					_ = tap.Replace(a, []byte("s"))
				default:
					_ = tap.Replace(a, append(bytes.Repeat([]byte("x"), 900), a.DNS...))
				}
			}
		}
	}()
	if got := ask(t, ns, "127.0.0.11:53", "q1"); got != strings.Repeat("x", 900)+"docker:q1" {
		t.Errorf("replaced by a longer answer: %q", got)
	}
	if got := ask(t, ns, "127.0.0.11:53", "q2 short"); got != "s" {
		t.Errorf("replaced by a shorter answer: %q", got)
	}
	if got := ask(t, ns, "127.0.0.11:53", "q3 keep"); got != "docker:q3 keep" {
		t.Errorf("let through: %q", got)
	}
	if got := ask(t, ns, "127.0.0.12:53", "q4"); got != "other:q4" {
		t.Errorf("another server's answer: %q", got)
	}
	var queued []string
	for len(seen) > 0 {
		queued = append(queued, <-seen)
	}
	if want := []string{"docker:q1", "docker:q2 short", "docker:q3 keep"}; strings.Join(queued, "|") != strings.Join(want, "|") {
		t.Errorf("queued %q, want %q", queued, want)
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := ask(t, ns, "127.0.0.11:53", "q5"); got != "docker:q5" {
		t.Errorf("tap closed, table in place: %q", got)
	}
	again, err := dp.TapDockerDNS(ns) // as after a restart
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if err := dp.UntapDockerDNS(ns); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), "tenet") {
		t.Errorf("after untap: %v: %s", err, out)
	}
	if err := dp.UntapDockerDNS(ns); err != nil {
		t.Errorf("untap twice: %v", err)
	}
	if err := dp.UntapDockerDNS(ns + "-gone"); err != nil {
		t.Errorf("untap a namespace that is gone: %v", err)
	}
	if got := ask(t, ns, "127.0.0.11:53", "q6"); got != "docker:q6" {
		t.Errorf("untapped: %q", got)
	}
}
