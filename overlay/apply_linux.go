package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// applier runs ops and remembers how to undo the creations among them.
type applier struct {
	d       *Datapath
	undo    []func()
	index   map[string]int  // "tenant/link" -> ifindex, cached for entry ops
	created map[string]bool // "tenant/link" made by this call
}

// applyLocked applies ops tenant by tenant: a failure undoes what this call
// created for that tenant and is reported, but does not keep the other
// tenants (or the host's own ops) from being programmed.
func (d *Datapath) applyLocked(ctx context.Context, ops []Op) error {
	// Reservations first: a published port another program holds gets
	// no rule leading to it.
	var errs []error
	failed := map[L4Port]bool{}
	rest := ops
	binds := false
	for i := range ops {
		binds = binds || ops[i].Kind == OpPortBind
	}
	if binds {
		rest = ops[:0:0]
		for _, op := range ops {
			if op.Kind != OpPortBind {
				rest = append(rest, op)
				continue
			}
			if err := d.bindLocked(op); err != nil {
				errs = append(errs, err)
				failed[L4Port{op.Res.Proto, op.Res.Port}] = true
			}
		}
	}
	if len(failed) > 0 {
		rest = withoutPorts(rest, failed)
	}
	// Grouped by index: an op is half a KiB, and a host joining a busy
	// network applies tens of thousands.
	var order []string
	groups := map[string][]int32{}
	for i := range rest {
		key := rest[i].Tenant
		switch rest[i].Kind {
		case OpHostDel, OpHostRules, OpHostFilter, OpPortFree:
			key = "" // the host's own ops (so are elements without a tenant)
		case OpCryptSet, OpPeerSet, OpPeerDel:
			key = "\x00crypt" // first in the plan: encrypted devices are made in it
		case OpCryptDel:
			key = "\x00crypt-del" // last in the plan
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], int32(i))
	}
	for _, key := range order {
		if err := d.applyGroupLocked(ctx, rest, groups[key]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyGroupLocked applies ops[i] for each i of group, in order.
func (d *Datapath) applyGroupLocked(ctx context.Context, ops []Op, group []int32) (err error) {
	a := &applier{d: d, index: map[string]int{}, created: map[string]bool{}}
	defer func() {
		if err != nil {
			for i := len(a.undo) - 1; i >= 0; i-- {
				a.undo[i]()
			}
		}
	}()
	debug := d.log.Enabled(ctx, slog.LevelDebug)
	for n, i := range group {
		if n%256 == 0 && ctx.Err() != nil {
			return fmt.Errorf("overlay: %d of %d ops applied: %w", n, len(group), ctx.Err())
		}
		op := &ops[i]
		if err := a.apply(*op); err != nil {
			return err
		}
		if op.Kind != OpFDBAdd && op.Kind != OpNeighSet && op.Kind != OpFDBDel && op.Kind != OpNeighDel {
			d.log.Info(op.String())
		} else if debug {
			d.log.Debug(op.String())
		}
	}
	return nil
}

func (a *applier) apply(op Op) error {
	d := a.d
	switch op.Kind {
	case OpNetnsAdd:
		return a.netnsAdd(op.Tenant)
	case OpNetnsDel:
		// Its VXLAN devices first: a namespace's devices go away
		// asynchronously once it is unpinned, and until then they hold
		// their VNIs on the host's socket, so that a quick re-create would
		// fail with "file exists".
		if n, err := d.tenantLocked(op.Tenant); err == nil {
			if err := deleteVXLANs(n); err != nil {
				return fmt.Errorf("delete the vxlan devices of tenant %s: %w", op.Tenant, err)
			}
			n.Close()
			delete(d.tenants, op.Tenant)
		}
		if err := deleteNamedNS(d.netnsName(op.Tenant)); err != nil {
			return fmt.Errorf("delete namespace of tenant %s: %w", op.Tenant, err)
		}
		return nil
	case OpHostDel:
		return a.linkDel(d.host, op.Link, "host")
	case OpHostRules:
		return a.hostRules(op.Rules, op.elems)
	case OpHostFilter:
		return wrap(setFilter(d.host.ns, d.ipt, op.Rules != ""), "host iptables accepts")
	case OpPortFree:
		if fd, ok := d.held[op.Res]; ok {
			unix.Close(fd)
			delete(d.held, op.Res)
		}
		delete(d.warned, op.Res)
		return nil
	case OpElemAdd, OpElemDel:
		if op.Tenant == "" {
			return wrap(setElem(d.host, false, op.Elem, op.Kind == OpElemDel), "%s", op)
		}
	case OpCryptSet:
		return a.cryptSet(op.Device)
	case OpPeerSet:
		return a.peerSet(op.Peer)
	case OpPeerDel:
		return a.peerDel(op.Peer)
	case OpCryptDel:
		return a.cryptDel()
	}
	t, err := d.tenantLocked(op.Tenant)
	if err != nil {
		return fmt.Errorf("open namespace of tenant %s: %w", op.Tenant, err)
	}
	switch op.Kind {
	case OpLinkAdd:
		a.created[op.Tenant+"/"+op.Link.Name] = true
		return a.linkAdd(op.Tenant, t, op.Link)
	case OpLinkSet:
		return a.linkSet(t, op.Link)
	case OpGuardSet:
		if err := setGuard(t, op.Guard); err != nil {
			return fmt.Errorf("set port guard of %s (tenant %s): %w", op.Guard.Port, op.Tenant, err)
		}
		if a.created[op.Tenant+"/"+op.Guard.Port] {
			a.undo = append(a.undo, func() { _ = delGuard(t, op.Guard.Port) })
		}
		return nil
	case OpGuardDel:
		return wrap(delGuard(t, op.Guard.Port), "delete port guard of %s (tenant %s)", op.Guard.Port, op.Tenant)
	case OpLegacyDel:
		return wrap(delTable(t, nftables.TableFamilyBridge), "delete the old rule table %s of tenant %s", op.Rules, op.Tenant)
	case OpElemAdd, OpElemDel:
		return wrap(setElem(t, true, op.Elem, op.Kind == OpElemDel), "%s", op)
	case OpUplinkSet:
		return wrap(a.uplinkSet(t, op.Uplink, op.Rebuild), "set up egress of tenant %s", op.Tenant)
	case OpUplinkDel:
		return wrap(a.uplinkDel(t), "remove egress of tenant %s", op.Tenant)
	case OpLinkDel:
		delete(a.index, op.Tenant+"/"+op.Link.Name)
		return a.linkDel(t, op.Link, "tenant "+op.Tenant)
	case OpFDBAdd, OpFDBDel:
		n, err := a.fdbNeigh(op.Tenant, t, op.FDB)
		if err != nil {
			return err
		}
		if op.Kind == OpFDBDel {
			err = ignoreNotFound(t.h.NeighDel(n))
			return wrap(err, "delete fdb entry %s dst %s on %s (tenant %s)", op.FDB.MAC, op.FDB.Dst, op.FDB.Dev, op.Tenant)
		}
		if op.FDB.MAC == floodMAC {
			err = t.h.NeighAppend(n) // one entry per destination
		} else {
			err = t.h.NeighSet(n) // replace, so a learned entry cannot block it
		}
		if errors.Is(err, unix.EEXIST) {
			err = nil
		}
		return wrap(err, "add fdb entry %s dst %s on %s (tenant %s)", op.FDB.MAC, op.FDB.Dst, op.FDB.Dev, op.Tenant)
	case OpNeighSet, OpNeighDel:
		idx, err := a.ifindex(op.Tenant, t, op.Neigh.Dev)
		if err != nil {
			return err
		}
		mac, _ := net.ParseMAC(op.Neigh.MAC)
		family := unix.AF_INET
		if op.Neigh.IP.Is6() {
			family = unix.AF_INET6
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT,
			IP: net.IP(op.Neigh.IP.AsSlice()), HardwareAddr: mac}
		if op.Kind == OpNeighDel {
			return wrap(ignoreNotFound(t.h.NeighDel(n)), "delete neighbour %s on %s (tenant %s)", op.Neigh.IP, op.Neigh.Dev, op.Tenant)
		}
		return wrap(t.h.NeighSet(n), "set neighbour %s lladdr %s on %s (tenant %s)", op.Neigh.IP, op.Neigh.MAC, op.Neigh.Dev, op.Tenant)
	}
	return fmt.Errorf("overlay: unknown op %v", op)
}

func (a *applier) netnsAdd(tenant string) error {
	name := a.d.netnsName(tenant)
	if n := a.d.tenants[tenant]; n != nil {
		n.Close() // a handle to a namespace that is gone
		delete(a.d.tenants, tenant)
	}
	if err := createNamedNS(name); err != nil {
		return fmt.Errorf("create namespace %s for tenant %s: %w", name, tenant, err)
	}
	a.undo = append(a.undo, func() {
		if n := a.d.tenants[tenant]; n != nil {
			n.Close()
			delete(a.d.tenants, tenant)
		}
		_ = deleteNamedNS(name)
	})
	t, err := a.d.tenantLocked(tenant)
	if err != nil {
		return fmt.Errorf("open namespace %s of tenant %s: %w", name, tenant, err)
	}
	// The tenant's router routes nothing between its networks, and keeps
	// quiet on them: its links get no IPv6 addresses (addr_gen_mode none,
	// no autoconf), so no DAD, MLD or router solicitations go from its
	// bridges into the tenant's networks. IPv6 itself stays on: the VXLAN
	// devices need it for their NDP proxy entries. Set before any link is
	// made or moved in, as links take the namespace defaults.
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "0"},
		{"net/ipv6/conf/all/forwarding", "0"},
		{"net/ipv6/conf/default/addr_gen_mode", "1"},
		{"net/ipv6/conf/default/autoconf", "0"},
		{"net/ipv6/conf/default/accept_ra", "0"},
		// Bridged frames are not the router's business (if br_netfilter
		// is loaded; absent keys are skipped).
		{"net/bridge/bridge-nf-call-iptables", "0"},
		{"net/bridge/bridge-nf-call-ip6tables", "0"},
		{"net/bridge/bridge-nf-call-arptables", "0"},
	} {
		if err := writeSysctl(t.ns, kv[0], kv[1]); err != nil {
			return fmt.Errorf("set %s=%s in namespace of tenant %s: %w", kv[0], kv[1], tenant, err)
		}
	}
	if err := nsDo(t.ns, func() error { return netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}) }); err != nil {
		return fmt.Errorf("set lo up in namespace of tenant %s: %w", tenant, err)
	}
	return nil
}

func (a *applier) linkAdd(tenant string, t *nsNet, l Link) error {
	what := fmt.Sprintf("create %s %s for network %s", l.Kind, l.Name, l.Network)
	if l.Kind == "vxlan" {
		what += fmt.Sprintf(" (vni %d)", l.VNI)
	}
	var err error
	switch l.Kind {
	case "bridge":
		mac, perr := net.ParseMAC(l.MAC)
		if perr != nil {
			return fmt.Errorf("%s: mac %q: %w", what, l.MAC, perr)
		}
		err = t.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.Name, MTU: l.MTU, HardwareAddr: mac}})
		if err == nil {
			a.undo = append(a.undo, func() { _ = delByName(t, l.Name) })
		}
	case "vxlan":
		err = a.vxlanAdd(t, l)
	case "veth":
		mac, perr := net.ParseMAC(l.PeerMAC)
		if perr != nil {
			return fmt.Errorf("%s: peer mac %q: %w", what, l.PeerMAC, perr)
		}
		// Made in the tenant namespace with its peer placed straight into
		// the host namespace, where Docker expects the container's end.
		err = t.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.Name, MTU: l.MTU},
			PeerName: l.Peer, PeerHardwareAddr: mac, PeerMTU: uint32(l.MTU), PeerNamespace: netlink.NsFd(a.d.host.ns)})
		if err == nil {
			a.undo = append(a.undo, func() { _ = delByName(t, l.Name) })
			err = markOwned(a.d.host, l.Peer)
		}
	default:
		return fmt.Errorf("%s: unknown kind", what)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return wrap(a.linkSet(t, l), "%s", what)
}

// vxlanAdd creates the device in the host namespace, so that its UDP socket
// is bound there, on the underlay, and then moves it into the tenant's. An
// encrypted network's is made in the crypt namespace instead, whose only
// way out is WireGuard.
func (a *applier) vxlanAdd(t *nsNet, l Link) error {
	host := a.d.host
	if l.Encrypted {
		c, err := a.d.cryptLocked()
		if err == nil && c == nil {
			err = errors.New("no crypt namespace to make it in")
		}
		if err != nil {
			return err
		}
		host = c.nsNet
		// Devices only pass through the crypt namespace: one found there
		// was left by a tenetd that died between making and moving it,
		// and would hold the VNI on the namespace's socket.
		if err := delByName(host, l.Name); err != nil {
			return fmt.Errorf("delete a leftover %s in the crypt namespace: %w", l.Name, err)
		}
	}
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: l.Name, MTU: l.MTU, Alias: ownerAlias, Group: vxlanGroup}, VxlanId: int(l.VNI),
		Port: int(l.Port), SrcAddr: net.IP(l.Local.AsSlice()), Learning: l.Learning, Proxy: l.Proxy}
	if err := host.h.LinkAdd(vx); err != nil {
		return err
	}
	link, err := host.h.LinkByName(l.Name)
	if err != nil {
		_ = delByName(host, l.Name)
		return err
	}
	if err := host.h.LinkSetNsFd(link, int(t.ns)); err != nil {
		_ = delByName(host, l.Name)
		return fmt.Errorf("move into tenant namespace: %w", err)
	}
	a.undo = append(a.undo, func() { _ = delByName(t, l.Name) })
	return nil
}

func (a *applier) linkSet(t *nsNet, l Link) error {
	link, err := t.h.LinkByName(l.Name)
	if err != nil {
		return fmt.Errorf("set %s: %w", l.Name, err)
	}
	if link.Attrs().MTU != l.MTU {
		if err := t.h.LinkSetMTU(link, l.MTU); err != nil {
			return fmt.Errorf("set %s mtu %d: %w", l.Name, l.MTU, err)
		}
	}
	if l.Master != "" {
		br, err := t.h.LinkByName(l.Master)
		if err != nil {
			return fmt.Errorf("set %s master %s: %w", l.Name, l.Master, err)
		}
		if link.Attrs().MasterIndex != br.Attrs().Index {
			if err := t.h.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
				return fmt.Errorf("set %s master %s: %w", l.Name, l.Master, err)
			}
		}
	}
	if l.Up && link.Attrs().Flags&net.FlagUp == 0 {
		if err := t.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", l.Name, err)
		}
	}
	if l.Kind == "bridge" {
		if mac, err := net.ParseMAC(l.MAC); err == nil && link.Attrs().HardwareAddr.String() != l.MAC {
			if err := t.h.LinkSetHardwareAddr(link, mac); err != nil {
				return fmt.Errorf("set %s address %s: %w", l.Name, l.MAC, err)
			}
		}
		if err := setOnlyAddr(t, link, l.Addr); err != nil {
			return fmt.Errorf("set %s address %v: %w", l.Name, l.Addr, err)
		}
	}
	return nil
}

// setOnlyAddr makes want (if valid) the link's only IPv4 address.
func setOnlyAddr(n *nsNet, link netlink.Link, want netip.Prefix) error {
	addrs, err := n.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		p, ok := prefixFrom(a.IPNet)
		if ok && p == want {
			found = true
			continue
		}
		if err := n.h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
	}
	if want.IsValid() && !found {
		return n.h.AddrReplace(link, &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}})
	}
	return nil
}

func prefixFrom(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netipFrom(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// uplinkSet makes the tenant's uplink as u says: the veth pair (made in
// the tenant namespace, host end placed in the host namespace), their
// addresses, the default route, forwarding, and the rules.
func (a *applier) uplinkSet(t *nsNet, u *Uplink, rules bool) error {
	host := a.d.host
	hostEnd, tenantEnd := uplinkAddrs(a.d.cfg.UplinkNet, u.Index)
	up, err := t.h.LinkByName(uplinkName)
	if err != nil {
		err = t.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: uplinkName, MTU: UplinkMTU},
			PeerName: u.HostLink, PeerMTU: UplinkMTU, PeerNamespace: netlink.NsFd(host.ns)})
		if err != nil {
			return fmt.Errorf("create uplink %s/%s: %w", uplinkName, u.HostLink, err)
		}
		a.undo = append(a.undo, func() { _ = delByName(t, uplinkName) })
		if up, err = t.h.LinkByName(uplinkName); err != nil {
			return err
		}
		if err := markOwned(host, u.HostLink); err != nil {
			return err
		}
	}
	hl, err := host.h.LinkByName(u.HostLink)
	if err != nil {
		return fmt.Errorf("host end %s: %w", u.HostLink, err)
	}
	if err := setOnlyAddr(host, hl, hostEnd); err != nil {
		return fmt.Errorf("address %s on %s: %w", hostEnd, u.HostLink, err)
	}
	if err := setOnlyAddr(t, up, tenantEnd); err != nil {
		return fmt.Errorf("address %s on %s: %w", tenantEnd, uplinkName, err)
	}
	for _, x := range []struct {
		n *nsNet
		l netlink.Link
	}{{host, hl}, {t, up}} {
		if err := x.n.h.LinkSetUp(x.l); err != nil {
			return fmt.Errorf("set %s up: %w", x.l.Attrs().Name, err)
		}
	}
	if err := t.h.RouteReplace(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: hostEnd.Addr().AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s: %w", hostEnd.Addr(), err)
	}
	// The host's own connections to a published port from 127.0.0.0/8
	// leave through the uplink (and are masqueraded to its address).
	if err := writeSysctl(host.ns, "net/ipv4/conf/"+u.HostLink+"/route_localnet", "1"); err != nil {
		return err
	}
	if err := writeSysctl(t.ns, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if !rules {
		return nil
	}
	return rebuild(t, nftables.TableFamilyIPv4, tenantRules(u.elems))
}

func (a *applier) uplinkDel(t *nsNet) error {
	if err := writeSysctl(t.ns, "net/ipv4/ip_forward", "0"); err != nil {
		return err
	}
	if err := delTable(t, nftables.TableFamilyIPv4); err != nil {
		return err
	}
	return delByName(t, uplinkName)
}

// hostRules makes the host's rule set anew (with egress, forwarding on), or
// removes it when digest is "". Forwarding is left on: the host may need
// it for others (Docker turns it on too).
func (a *applier) hostRules(digest string, els []Elem) error {
	host := a.d.host
	egress := digest == hostRulesDigest(a.d.cfg.UplinkNet, a.d.cfg.Port, true)
	if digest == "" {
		if err := delTable(host, nftables.TableFamilyIPv4); err != nil {
			return wrap(err, "remove host rules")
		}
	} else {
		if egress {
			if err := writeSysctl(host.ns, "net/ipv4/ip_forward", "1"); err != nil {
				return fmt.Errorf("host forwarding: %w", err)
			}
		}
		if err := rebuild(host, nftables.TableFamilyIPv4, hostRules(a.d.cfg.UplinkNet, a.d.cfg.Port, egress, els)); err != nil {
			return wrap(err, "set host rules")
		}
	}
	// The iptables accepts go with egress (the only forwarded traffic).
	if a.d.ipt != "" {
		return wrap(setFilter(host.ns, a.d.ipt, egress), "host iptables accepts")
	}
	return nil
}

// bindLocked takes a published port's reservation. A soft one (its rules
// exist already, as after a restart) that fails is logged once, not
// returned: the port keeps working, and the next reconcile tries again.
func (d *Datapath) bindLocked(op Op) error {
	fd, err := reserve(d.host.ns, op.Res)
	if err == nil {
		d.held[op.Res] = fd
		d.log.Info(op.String())
		return nil
	}
	if op.Soft {
		if !d.warned[op.Res] {
			d.warned[op.Res] = true
			d.log.Warn("published port: cannot take its reservation back; it still reaches its container", "err", err)
		}
		return nil
	}
	return err
}

// withoutPorts drops from ops the elements publishing the given ports,
// also from rule sets made anew.
func withoutPorts(ops []Op, ports map[L4Port]bool) []Op {
	keep := func(e Elem) bool {
		proto, port, ok := elemPort(e)
		return !ok || !ports[L4Port{proto, port}]
	}
	var out []Op
	for _, op := range ops {
		switch op.Kind {
		case OpElemAdd:
			if !keep(op.Elem) {
				continue
			}
		case OpHostRules:
			op.elems = slices.DeleteFunc(slices.Clone(op.elems), func(e Elem) bool { return !keep(e) })
		case OpUplinkSet:
			u := *op.Uplink
			u.elems = slices.DeleteFunc(slices.Clone(u.elems), func(e Elem) bool { return !keep(e) })
			op.Uplink = &u
		}
		out = append(out, op)
	}
	return out
}

func (a *applier) linkDel(n *nsNet, l Link, where string) error {
	err := delByName(n, l.Name)
	return wrap(err, "delete %s %s (%s)", l.Kind, l.Name, where)
}

// vxlanGroup is the link group of Tenet's VXLAN devices, which lets a
// tenant's be deleted in one batch.
const vxlanGroup = 4789

// deleteVXLANs deletes Tenet's VXLAN devices in a tenant's namespace: its
// group in one batch, then any made before devices had a group.
func deleteVXLANs(n *nsNet) error {
	rt, err := n.raw(unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	if err := linkDelGroup(rt, vxlanGroup); err != nil {
		n.dropRaw(unix.NETLINK_ROUTE)
		return err
	}
	links, err := dump(n.h.LinkList)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Type() == "vxlan" && vxlanPattern.MatchString(l.Attrs().Name) {
			if err := ignoreNotFound(n.h.LinkDel(l)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ownerAlias marks the links Tenet makes in the host namespace, where other
// software's links live too: only links with this alias (ifalias) are ever
// treated as Tenet's there, whatever their name.
const ownerAlias = "tenet"

// markOwned sets ownerAlias on a link in n.
func markOwned(n *nsNet, name string) error {
	link, err := n.h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := n.h.LinkSetAlias(link, ownerAlias); err != nil {
		return fmt.Errorf("mark %s as Tenet's: %w", name, err)
	}
	return nil
}

// delByName deletes a link; no-op if it is not there.
func delByName(n *nsNet, name string) error {
	link, err := n.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return ignoreNotFound(n.h.LinkDel(link))
}

func (a *applier) ifindex(tenant string, t *nsNet, dev string) (int, error) {
	key := tenant + "/" + dev
	if i, ok := a.index[key]; ok {
		return i, nil
	}
	link, err := t.h.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("find %s in namespace of tenant %s: %w", dev, tenant, err)
	}
	a.index[key] = link.Attrs().Index
	return link.Attrs().Index, nil
}

func (a *applier) fdbNeigh(tenant string, t *nsNet, e FDBEntry) (*netlink.Neigh, error) {
	idx, err := a.ifindex(tenant, t, e.Dev)
	if err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(e.MAC)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, IP: net.IP(e.Dst.AsSlice()), HardwareAddr: mac}, nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

func wrap(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), err)
}
