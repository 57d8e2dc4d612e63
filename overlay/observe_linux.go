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

// observeLocked reads the Tenet objects in v: with the whole view, every
// tenant namespace (by name prefix), the links in them named as Tenet names
// them, the static FDB and permanent neighbour entries on their VXLAN
// devices, their rules, and Tenet's links left in the host namespace; with
// a scoped view, only the objects of the scope, each by its name or key.
// hostAddrs are the host namespace's addresses (hostAddrsLocked).
func (d *Datapath) observeLocked(v *view, hostAddrs []hostAddr) (Snapshot, error) {
	snap := newSnapshot()
	if err := d.observeHostLinks(v, nil, snap.HostLinks); err != nil {
		return snap, err
	}
	if v.hasCrypt() {
		c, err := d.observeCryptLocked()
		if err != nil {
			return snap, err
		}
		snap.Crypt = c
	}
	if v.hasHostRules() {
		if err := d.observeHostRules(v, &snap); err != nil {
			return snap, err
		}
	}
	for _, a := range hostAddrs {
		// Any address at a host end's place in the uplink net takes its
		// /30, whatever its prefix length.
		if i, ok := uplinkIndexOf(d.cfg.UplinkNet, netip.PrefixFrom(a.ip, 30), true); ok {
			snap.UplinksUsed[i] = true
			if name := d.hostLinkNameLocked(a.link); tnuPattern.MatchString(name) {
				snap.HostUplinks[name] = i
			}
		}
	}
	if v.hasReserved() {
		for r := range d.held {
			snap.Reserved[r] = true
		}
	}
	if v.all && d.ipt != "" {
		snap.HostFilter = observeFilter(d.host.ns, d.ipt)
	}
	var tenants []string
	if v.all {
		entries, err := os.ReadDir(netnsDir)
		if err != nil && !os.IsNotExist(err) {
			return snap, fmt.Errorf("overlay: list namespaces: %w", err)
		}
		for _, e := range entries {
			if t, ok := strings.CutPrefix(e.Name(), d.cfg.NetnsPrefix); ok && validTenant(t) {
				tenants = append(tenants, t)
			}
		}
	} else {
		for t := range v.ns {
			if _, err := os.Stat(netnsDir + "/" + d.netnsName(t)); err == nil {
				tenants = append(tenants, t)
			} else if !errors.Is(err, os.ErrNotExist) {
				return snap, fmt.Errorf("overlay: namespace of tenant %s: %w", t, err)
			}
		}
	}
	present := map[string]bool{}
	tags := map[string]bool{} // endpoint tags of ports in whole tenants
	for _, tenant := range tenants {
		present[tenant] = true
		d.dropStaleLocked(tenant)
		t, err := d.tenantLocked(tenant)
		if err != nil {
			return snap, fmt.Errorf("overlay: open namespace %s: %w", d.netnsName(tenant), err)
		}
		o, err := d.observeTenant(tenant, t, v, snap.HostLinks)
		if err != nil {
			return snap, fmt.Errorf("overlay: observe namespace %s: %w", d.netnsName(tenant), err)
		}
		if v.whole[tenant] {
			for name := range o.Links {
				if tag, ok := strings.CutPrefix(name, "tv"); ok {
					tags[tag] = true
				}
			}
		}
		snap.Tenants[tenant] = o
	}
	if !v.all && len(tags) > 0 {
		if err := d.observeHostLinks(v, tags, snap.HostLinks); err != nil {
			return snap, err
		}
	}
	for tenant, n := range d.tenants {
		if !present[tenant] && (v.all || v.ns[tenant]) {
			d.forgetLocked(tenant, n) // its namespace was deleted behind our back
		}
	}
	return snap, nil
}

// observeHostLinks reads Tenet's links in the host namespace that are in v:
// all of them (one dump), or each by name; tags adds the container ends of
// those endpoints.
func (d *Datapath) observeHostLinks(v *view, tags map[string]bool, into map[string]Link) error {
	keep := func(l netlink.Link) {
		name := l.Attrs().Name
		if l.Attrs().Alias != ownerAlias {
			return // not ours, whatever its name
		}
		if tcPattern.MatchString(name) || tnuPattern.MatchString(name) || (vxlanPattern.MatchString(name) && l.Type() == "vxlan") ||
			(name == wgName && l.Type() == "wireguard") {
			into[name] = Link{Name: name, Kind: l.Type(), MTU: l.Attrs().MTU, Up: l.Attrs().Flags&net.FlagUp != 0}
		}
	}
	if v.all {
		links, err := dump(d.host.h.LinkList)
		if err != nil {
			return fmt.Errorf("overlay: list host links: %w", err)
		}
		clear(d.linkNames)
		for _, l := range links {
			keep(l)
			d.linkNames[l.Attrs().Index] = l.Attrs().Name
		}
		return nil
	}
	names := v.hostLinks
	if tags != nil {
		names = map[string]bool{}
		for tag := range tags {
			names["tc"+tag] = true
		}
	}
	for name := range names {
		l, err := linkByName(d.host, name)
		if err != nil {
			return fmt.Errorf("overlay: host link %s: %w", name, err)
		}
		if l != nil {
			keep(l)
		}
	}
	return nil
}

// observeHostRules reads the host rule set's layout (with forwarding) and,
// if v has them and the layout is the current one, its elements.
func (d *Datapath) observeHostRules(v *view, snap *Snapshot) error {
	rules, err := observeLayout(d.host, nftables.TableFamilyIPv4, "raw-pre-")
	if err != nil {
		return fmt.Errorf("overlay: list host rules: %w", err)
	}
	fwd, err := readSysctl(d.host.ns, "net/ipv4/ip_forward")
	if err != nil {
		return err
	}
	if rules == "" {
		return nil
	}
	snap.HostRules = rules
	egress := rules == hostRulesDigest(d.cfg.UplinkNet, d.cfg.Port, true)
	if egress && fwd != "1" {
		snap.HostRules += "-noforward" // matches no wanted digest: made anew, or removed
	}
	if !egress {
		return nil
	}
	sets := []string{setPubAny, setPubIP} // published ports: few, read whole
	if v.hasHostElems() {
		sets = append(sets, setDeny, setAllow, setPorts)
	}
	for _, set := range sets {
		if err := observeSet(d.host, false, set, snap.HostElems); err != nil {
			return fmt.Errorf("overlay: host rules: %w", err)
		}
	}
	return nil
}

// observeTenant reads the objects of a tenant's namespace that are in v.
func (d *Datapath) observeTenant(tenant string, t *nsNet, v *view, hostLinks map[string]Link) (*TenantObjects, error) {
	o := newTenantObjects()
	whole := v.all || v.whole[tenant]
	enc, err := d.cryptSocketCheck(t)
	if err != nil {
		return nil, err
	}
	if whole {
		if err := observeLinks(t, o, enc); err != nil {
			return nil, err
		}
		if err := observeGuards(t, "", v.migrate, o.Guards); err != nil {
			return nil, fmt.Errorf("port guards: %w", err)
		}
		legacy, err := observeLegacy(t)
		if err != nil {
			return nil, err
		}
		o.Legacy = legacy
	} else {
		if err := d.observeScoped(tenant, t, v, o, enc); err != nil {
			return nil, err
		}
	}
	if v.hasUplink(tenant) {
		u, err := d.observeUplink(tenant, t, hostLinks)
		if err != nil {
			return nil, fmt.Errorf("egress: %w", err)
		}
		o.Uplink = u
		if u != nil && u.Rules == tenantRulesDigest() {
			if err := observeSet(t, true, setPub, o.Elems); err != nil {
				return nil, fmt.Errorf("published ports: %w", err)
			}
			if whole {
				if err := observeSet(t, true, setPairs, o.Elems); err != nil {
					return nil, fmt.Errorf("egress: %w", err)
				}
			} else {
				for e := range v.elems[tenant] {
					ok, err := hasElem(t, true, e)
					if err != nil {
						return nil, fmt.Errorf("egress: %w", err)
					}
					if ok {
						o.Elems[e] = true
					}
				}
			}
		}
	}
	return o, nil
}

// observeScoped reads the links, entries and guards of a tenant that a
// scoped v names, each by its name or key.
func (d *Datapath) observeScoped(tenant string, t *nsNet, v *view, o *TenantObjects, enc func(int) bool) error {
	index := map[string]int{}
	for name := range v.links[tenant] {
		l, err := linkByName(t, name)
		if err != nil {
			return err
		}
		if l == nil {
			continue
		}
		link, ok, err := linkOf(t, l, nil, enc)
		if err != nil {
			return err
		}
		if ok {
			o.Links[name] = link
			index[name] = l.Attrs().Index
		}
	}
	for port := range v.guards[tenant] {
		if err := observeGuards(t, port, false, o.Guards); err != nil {
			return fmt.Errorf("port guard %s: %w", port, err)
		}
	}
	devIndex := func(dev string) (int, error) {
		if i, ok := index[dev]; ok {
			return i, nil
		}
		l, err := linkByName(t, dev)
		if err != nil || l == nil || l.Type() != "vxlan" {
			return 0, err
		}
		index[dev] = l.Attrs().Index
		return index[dev], nil
	}
	for dev := range v.vxAll[tenant] {
		if i, ok := index[dev]; ok && o.Links[dev].Kind == "vxlan" {
			if err := observeEntries(t, i, dev, o); err != nil {
				return err
			}
		}
	}
	rt, err := t.raw(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	for dev, macs := range v.fdbMACs[tenant] {
		i, err := devIndex(dev)
		if err != nil {
			return err
		}
		if i == 0 {
			continue // no such device: no entries
		}
		if len(macs) > getLimit {
			// Many remotes at once (a host joining a busy network): one
			// dump costs less than a lookup each.
			all := newTenantObjects()
			if err := observeEntries(t, i, dev, all); err != nil {
				return err
			}
			for e := range all.FDB {
				if v.hasFDB(tenant, e) {
					o.FDB[e] = true
					v.programmed(tenant, e)
				}
			}
			continue
		}
		for mac := range macs {
			m, _ := net.ParseMAC(mac)
			dst, ok, err := fdbGet(rt, i, m)
			if err != nil {
				t.dropRaw(unix.NETLINK_ROUTE)
				return fmt.Errorf("get fdb entry %s on %s: %w", mac, dev, err)
			}
			if ok {
				e := FDBEntry{Dev: dev, MAC: mac, Dst: dst}
				o.FDB[e] = true
				v.programmed(tenant, e)
			}
		}
	}
	devs := map[string]bool{}
	for dev := range v.neighIPs[tenant] {
		devs[dev] = true
	}
	for dev := range v.neighMACs[tenant] {
		devs[dev] = true
	}
	for dev := range devs {
		i, err := devIndex(dev)
		if err != nil {
			return err
		}
		if i == 0 {
			continue
		}
		ips := v.neighIPs[tenant][dev]
		if len(v.neighMACs[tenant][dev]) > 0 || len(ips) > getLimit {
			// Addresses by MAC (a remote removed or changed), or many:
			// the device's neighbours in one dump.
			all := newTenantObjects()
			if err := observeNeighs(t, i, dev, all); err != nil {
				return err
			}
			for e := range all.Neigh {
				if v.hasNeigh(tenant, e) {
					o.Neigh[e] = true
				}
			}
			continue
		}
		for ip := range ips {
			n, ok, err := neighIPGet(rt, i, ip)
			if err != nil {
				t.dropRaw(unix.NETLINK_ROUTE)
				return fmt.Errorf("get neighbour %s on %s: %w", ip, dev, err)
			}
			if ok && n.State&netlink.NUD_PERMANENT != 0 {
				o.Neigh[NeighEntry{Dev: dev, IP: ip, MAC: n.HardwareAddr.String()}] = true
			}
		}
	}
	return nil
}

// getLimit is how many entries of one device a scoped reconcile reads one
// by one; above it, a dump of the device is cheaper.
const getLimit = 64

// linkByName returns the link, or nil if there is none.
func linkByName(n *nsNet, name string) (netlink.Link, error) {
	l, err := n.h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	return l, err
}

// linkOf describes a tenant namespace's link as Tenet sees it; ok is false
// for a link that is not Tenet's. names maps ifindex to name (nil: looked
// up); enc says whether a VXLAN device's socket namespace (by netns ID) is
// the crypt namespace.
func linkOf(t *nsNet, l netlink.Link, names map[int]string, enc func(int) bool) (Link, bool, error) {
	a := l.Attrs()
	kind := l.Type()
	ours := (bridgePattern.MatchString(a.Name) && kind == "bridge") ||
		(vxlanPattern.MatchString(a.Name) && kind == "vxlan") ||
		(tvPattern.MatchString(a.Name) && kind == "veth")
	if !ours {
		return Link{}, false, nil
	}
	link := Link{Name: a.Name, Kind: kind, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if a.MasterIndex != 0 {
		if names != nil {
			link.Master = names[a.MasterIndex]
		} else {
			m, err := t.h.LinkByIndex(a.MasterIndex)
			if err != nil {
				return Link{}, false, fmt.Errorf("master of %s: %w", a.Name, err)
			}
			link.Master = m.Attrs().Name
		}
	}
	if kind == "bridge" {
		link.MAC = a.HardwareAddr.String()
		addrs, err := linkAddrs4(t, a.Index)
		if err != nil {
			return Link{}, false, err
		}
		if len(addrs) > 0 {
			link.Addr = addrs[0]
		}
	}
	if vx, ok := l.(*netlink.Vxlan); ok {
		link.VNI, link.Port = uint32(vx.VxlanId), uint16(vx.Port)
		link.Local, _ = netipFrom(vx.SrcAddr)
		link.Learning, link.Proxy = vx.Learning, vx.Proxy
		link.Encrypted = enc(a.NetNsID)
	}
	return link, true, nil
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
	_ = deleteVXLANs(n)
	n.Close()
	delete(d.tenants, tenant)
}

// observeLinks reads every Tenet link of a tenant namespace, with the
// entries on its VXLAN devices.
func observeLinks(t *nsNet, o *TenantObjects, enc func(int) bool) error {
	links, err := dump(t.h.LinkList)
	if err != nil {
		return err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		link, ok, err := linkOf(t, l, names, enc)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if link.Kind == "vxlan" {
			if err := observeEntries(t, l.Attrs().Index, link.Name, o); err != nil {
				return err
			}
		}
		o.Links[link.Name] = link
	}
	return nil
}

// observeUplink reads a tenant's egress: nil if it has neither an uplink
// nor rules.
func (d *Datapath) observeUplink(tenant string, t *nsNet, hostLinks map[string]Link) (*Uplink, error) {
	rules, err := observeLayout(t, nftables.TableFamilyIPv4, "fwd-")
	if err != nil {
		return nil, err
	}
	up, err := linkByName(t, uplinkName)
	if err != nil {
		return nil, err
	}
	if up == nil {
		if rules == "" {
			return nil, nil
		}
		return &Uplink{Rules: rules}, nil
	}
	u := &Uplink{Rules: rules}
	hostUp := false
	if l, ok := hostLinks[hostUplinkName(tenant)]; ok {
		u.HostLink, hostUp = hostUplinkName(tenant), l.Up
	}
	// Both ends up, or the tenant is cut off while its route stays: a
	// host end set down by hand (or by a network manager) is repaired
	// like a missing route.
	bothUp := hostUp && up.Attrs().Flags&net.FlagUp != 0
	addrs, err := linkAddrs4(t, up.Attrs().Index)
	if err != nil {
		return nil, err
	}
	var hostEnd netip.Addr
	for _, p := range addrs {
		if i, ok := uplinkIndexOf(d.cfg.UplinkNet, p, false); ok {
			u.Index = i
			h, _ := uplinkAddrs(d.cfg.UplinkNet, i)
			hostEnd = h.Addr()
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
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && gw == hostEnd && hostEnd.IsValid() && fwd == "1" && bothUp {
			u.Ready = true
		}
	}
	return u, nil
}

// observeEntries reads the static FDB and permanent neighbour entries of
// the VXLAN device index.
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
	return observeNeighs(t, index, dev, o)
}

func observeNeighs(t *nsNet, index int, dev string, o *TenantObjects) error {
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
