package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var (
	bridgePattern = regexp.MustCompile(`^br[0-9]{1,8}$`)
	vxlanPattern  = regexp.MustCompile(`^vx[0-9]{1,8}$`)
	tvPattern     = regexp.MustCompile(`^tv[0-9a-f]{12}$`)
	tcPattern     = regexp.MustCompile(`^tc[0-9a-f]{12}$`)
	tnuPattern    = regexp.MustCompile(`^tnu[0-9a-f]{12}$`)
)

// observeLocked reads every Tenet object: tenant namespaces (by name prefix),
// the links in them named as Tenet names them, the static FDB and permanent
// neighbour entries on their VXLAN devices, and Tenet's links left in the
// host namespace.
func (d *Datapath) observeLocked() (Snapshot, error) {
	snap := newSnapshot()
	hostLinks, err := dump(d.host.h.LinkList)
	if err != nil {
		return snap, fmt.Errorf("overlay: list host links: %w", err)
	}
	for _, l := range hostLinks {
		name := l.Attrs().Name
		if l.Attrs().Alias != ownerAlias {
			continue // not ours, whatever its name
		}
		if tcPattern.MatchString(name) || tnuPattern.MatchString(name) || (vxlanPattern.MatchString(name) && l.Type() == "vxlan") {
			snap.HostLinks[name] = Link{Name: name, Kind: l.Type(), MTU: l.Attrs().MTU, Up: l.Attrs().Flags&net.FlagUp != 0}
		}
	}
	rules, err := observeRules(d.host.ns)
	if err != nil {
		return snap, fmt.Errorf("overlay: list host rules: %w", err)
	}
	if fwd, err := readSysctl(d.host.ns, "net/ipv4/ip_forward"); err != nil {
		return snap, err
	} else if rules != "" {
		snap.HostRules = rules
		if fwd != "1" {
			snap.HostRules += "-noforward" // matches no wanted digest: re-applied, or removed
		}
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		return snap, fmt.Errorf("overlay: list namespaces: %w", err)
	}
	present := map[string]bool{}
	for _, e := range entries {
		tenant, ok := strings.CutPrefix(e.Name(), d.cfg.NetnsPrefix)
		if !ok || !tenantPattern.MatchString(tenant) {
			continue
		}
		present[tenant] = true
		d.dropStaleLocked(tenant)
		t, err := d.tenantLocked(tenant)
		if err != nil {
			return snap, fmt.Errorf("overlay: open namespace %s: %w", e.Name(), err)
		}
		o, err := observeTenant(t)
		if err != nil {
			return snap, fmt.Errorf("overlay: observe namespace %s: %w", e.Name(), err)
		}
		if o.Spoof, err = observeFamily(t.ns, nftables.TableFamilyBridge, "pre-"); err != nil {
			return snap, fmt.Errorf("overlay: observe anti-spoofing rules of %s: %w", e.Name(), err)
		}
		if o.Uplink, err = d.observeUplink(tenant, t, snap.HostLinks); err != nil {
			return snap, fmt.Errorf("overlay: observe egress of %s: %w", e.Name(), err)
		}
		snap.Tenants[tenant] = o
	}
	for tenant, n := range d.tenants {
		if !present[tenant] {
			d.forgetLocked(tenant, n) // its namespace was deleted behind our back
		}
	}
	return snap, nil
}

// dropStaleLocked forgets the cached handle of tenant's namespace if the
// name now pins another namespace (someone deleted and re-created it).
func (d *Datapath) dropStaleLocked(tenant string) {
	n := d.tenants[tenant]
	if n == nil {
		return
	}
	cur, err := netns.GetFromPath(netnsDir + "/" + d.netnsName(tenant))
	if err == nil {
		defer cur.Close()
	}
	if err != nil || !cur.Equal(n.ns) {
		d.forgetLocked(tenant, n)
	}
}

// forgetLocked drops the handle of a namespace that is no longer pinned,
// first deleting its VXLAN devices through it: the kernel tears an
// unpinned namespace down asynchronously, and until then the devices hold
// their VNIs on the host's socket.
func (d *Datapath) forgetLocked(tenant string, n *nsNet) {
	if links, err := dump(n.h.LinkList); err == nil {
		for _, l := range links {
			if l.Type() == "vxlan" && vxlanPattern.MatchString(l.Attrs().Name) {
				_ = n.h.LinkDel(l)
			}
		}
	}
	n.Close()
	delete(d.tenants, tenant)
}

func observeTenant(t *nsNet) (*TenantObjects, error) {
	o := newTenantObjects()
	links, err := dump(t.h.LinkList)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		kind := l.Type()
		ours := (bridgePattern.MatchString(a.Name) && kind == "bridge") ||
			(vxlanPattern.MatchString(a.Name) && kind == "vxlan") ||
			(tvPattern.MatchString(a.Name) && kind == "veth")
		if !ours {
			continue
		}
		link := Link{Name: a.Name, Kind: kind, MTU: a.MTU, Master: names[a.MasterIndex], Up: a.Flags&net.FlagUp != 0}
		if kind == "bridge" {
			addrs, err := t.h.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return nil, err
			}
			if len(addrs) > 0 {
				link.Addr, _ = prefixFrom(addrs[0].IPNet)
			}
		}
		if vx, ok := l.(*netlink.Vxlan); ok {
			link.VNI, link.Port = uint32(vx.VxlanId), uint16(vx.Port)
			link.Local, _ = netipFrom(vx.SrcAddr)
			link.Learning, link.Proxy = vx.Learning, vx.Proxy
			if err := observeEntries(t, a.Index, a.Name, o); err != nil {
				return nil, err
			}
		}
		o.Links[a.Name] = link
	}
	return o, nil
}

// observeUplink reads a tenant's egress: nil if it has neither an uplink
// nor rules.
func (d *Datapath) observeUplink(tenant string, t *nsNet, hostLinks map[string]Link) (*Uplink, error) {
	rules, err := observeRules(t.ns)
	if err != nil {
		return nil, err
	}
	up, err := t.h.LinkByName(uplinkName)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		if rules == "" {
			return nil, nil
		}
		return &Uplink{Rules: rules}, nil
	}
	if err != nil {
		return nil, err
	}
	u := &Uplink{Rules: rules}
	if _, ok := hostLinks[hostUplinkName(tenant)]; ok {
		u.HostLink = hostUplinkName(tenant)
	}
	addrs, err := t.h.AddrList(up, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var hostEnd netip.Addr
	for _, a := range addrs {
		if p, ok := prefixFrom(a.IPNet); ok {
			if i, ok := uplinkIndex(d.cfg.UplinkNet, p); ok {
				u.Index = i
				h, _ := uplinkAddrs(d.cfg.UplinkNet, i)
				hostEnd = h.Addr()
			}
		}
	}
	fwd, err := readSysctl(t.ns, "net/ipv4/ip_forward")
	if err != nil {
		return nil, err
	}
	routes, err := t.h.RouteList(up, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		gw, _ := netipFrom(r.Gw)
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && gw == hostEnd && hostEnd.IsValid() && fwd == "1" {
			u.Ready = true
		}
	}
	return u, nil
}

func observeEntries(t *nsNet, index int, dev string, o *TenantObjects) error {
	fdb, err := dump(func() ([]netlink.Neigh, error) { return t.h.NeighList(index, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("list fdb of %s: %w", dev, err)
	}
	for _, n := range fdb {
		dst, ok := netipFrom(n.IP)
		if n.Flags&netlink.NTF_SELF == 0 || !ok || n.LinkIndex != index {
			continue
		}
		o.FDB[FDBEntry{Dev: dev, MAC: n.HardwareAddr.String(), Dst: dst}] = true
	}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := dump(func() ([]netlink.Neigh, error) { return t.h.NeighList(index, family) })
		if err != nil {
			return fmt.Errorf("list neighbours of %s: %w", dev, err)
		}
		for _, n := range ns {
			ip, ok := netipFrom(n.IP)
			if n.State&netlink.NUD_PERMANENT == 0 || !ok || n.LinkIndex != index {
				continue
			}
			o.Neigh[NeighEntry{Dev: dev, IP: ip, MAC: n.HardwareAddr.String()}] = true
		}
	}
	return nil
}

// netipFrom converts a netlink IP, unmapping IPv4-in-IPv6.
func netipFrom(ip net.IP) (netip.Addr, bool) {
	if len(ip) == 0 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
