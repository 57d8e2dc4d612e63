package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// ServeUpstreamDNS answers, at Outside:53 in the underlay namespace (the
// outside world every engine and tenetd of the testbed names as its
// upstream server), A queries for the names of zone (name: address) and
// NXDOMAIN for the rest, until t ends.
func ServeUpstreamDNS(t testing.TB, tb *Testbed, zone map[string]string) *UpstreamDNS {
	t.Helper()
	conn, err := ListenUDPIn(filepath.Join("/run/netns", tb.underlayNetns()), netip.AddrPortFrom(Outside, 53))
	if err != nil {
		t.Fatalf("upstream DNS: %v", err)
	}
	u := &UpstreamDNS{zone: map[string]netip.Addr{}}
	for name, a := range zone {
		u.zone[dns.Fqdn(strings.ToLower(name))] = netip.MustParseAddr(a)
	}
	srv := &dns.Server{PacketConn: conn, Handler: u}
	done := make(chan struct{})
	go func() { _ = srv.ActivateAndServe(); close(done) }()
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return u
}

// UpstreamDNS is the outside world's DNS server.
type UpstreamDNS struct {
	zone map[string]netip.Addr
}

// ServeDNS answers from the zone.
func (u *UpstreamDNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) == 1 {
		a, ok := u.zone[strings.ToLower(q.Question[0].Name)]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IP(a.AsSlice())})
		}
	}
	_ = w.WriteMsg(m)
}

// ListenUDPIn opens a UDP socket bound to addr in the network namespace
// at nsPath; it stays there whichever thread uses it.
func ListenUDPIn(nsPath string, addr netip.AddrPort) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := inNetns(nsPath, func() (err error) {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	return conn, err
}

// DialUDPIn opens a UDP socket connected to addr in the network namespace
// at nsPath (a container's: /proc/PID/ns/net).
func DialUDPIn(nsPath string, addr netip.AddrPort) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := inNetns(nsPath, func() (err error) {
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(addr))
		return err
	})
	return conn, err
}

// InNetns runs fn on a thread in the network namespace at nsPath; the
// sockets it opens stay there.
func InNetns(nsPath string, fn func() error) error { return inNetns(nsPath, fn) }

func inNetns(nsPath string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", nsPath, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ContainerNetns is the path of a running container's network namespace.
func (e *Engine) ContainerNetns(ctx context.Context, container string) (string, error) {
	out, err := e.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", container)
	if err != nil {
		return "", err
	}
	return "/proc/" + strings.TrimSpace(out) + "/ns/net", nil
}

// Query asks server one question over conn (DialUDPIn) and returns the
// answer and how long it took.
func Query(conn *net.UDPConn, name string, qtype uint16) (*dns.Msg, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 3 * time.Second}
	start := time.Now()
	r, _, err := c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
	return r, time.Since(start), err
}
