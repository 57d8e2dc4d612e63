package overlay

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestLinkAddrs4ReadsOneLinksAddresses: the kernel-filtered listing gives
// one link's IPv4 addresses, in the kernel's order, none of the other
// links' (and none of its IPv6 ones), the same as the library's listing,
// and leaves the socket's strict checking off.
func TestLinkAddrs4ReadsOneLinksAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("root test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "tenet-t-addrs-" + hex.EncodeToString(b)
	if err := CreateNamedNetns(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	n, err := openNS(netnsDir + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	links := map[string][]string{
		"a0": {"10.9.0.1/24", "10.9.1.1/16", "fd00::1/64"},
		"a1": {"10.8.0.1/24"},
		"a2": nil,
	}
	index := map[string]int{}
	for _, ln := range []string{"a0", "a1", "a2"} {
		if err := n.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: ln}}); err != nil {
			t.Fatal(err)
		}
		l, err := n.h.LinkByName(ln)
		if err != nil {
			t.Fatal(err)
		}
		index[ln] = l.Attrs().Index
		for _, a := range links[ln] {
			p := netip.MustParsePrefix(a)
			ipn := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
			if err := n.h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Many links without addresses, as a tenant's endpoints are.
	for i := range 50 {
		if err := n.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "d" + string(rune('a'+i/26)) + string(rune('a'+i%26))}}); err != nil {
			t.Fatal(err)
		}
	}
	for ln, idx := range index {
		got, err := linkAddrs4(n, idx)
		if err != nil {
			t.Fatalf("%s: %v", ln, err)
		}
		l, _ := n.h.LinkByIndex(idx)
		lib, err := n.h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var want []netip.Prefix
		for _, a := range lib {
			p, _ := prefixFrom(a.IPNet)
			want = append(want, p)
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Errorf("%s (-library +filtered):\n%s", ln, diff)
		}
		if v4 := len(links[ln]) - map[string]int{"a0": 1}[ln]; len(got) != v4 {
			t.Errorf("%s: %d addresses, want %d", ln, len(got), v4)
		}
	}
	c, err := n.raw(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var strict int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		strict, serr = unix.GetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if strict != 0 {
		t.Error("strict checking left on")
	}
}
