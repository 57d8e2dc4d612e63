package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Datapath programs Tenet's kernel objects on one host. Safe for concurrent
// use: Reconcile calls are serialized.
type Datapath struct {
	cfg Config
	log *slog.Logger

	// cryptErr is nil if this kernel has WireGuard, else why not
	// (probed once, by New).
	cryptErr error

	mu      sync.Mutex // guards the fields below
	host    *nsNet
	tenants map[string]*nsNet // open namespaces, by tenant
	crypt   *cryptNS          // the crypt namespace, once open
	closed  bool
}

// New opens the host namespace and checks that this kernel can make VXLAN
// devices; whether it has WireGuard for encrypted networks is probed too
// (CryptSupport).
func New(cfg Config) (*Datapath, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, err := openNS(cfg.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("overlay: open host namespace %q: %w", cfg.HostNetns, err)
	}
	d := &Datapath{cfg: cfg, log: cfg.Logger.With("component", "overlay"), host: host, tenants: map[string]*nsNet{}}
	if err := d.probeVXLAN(); err != nil {
		host.Close()
		return nil, err
	}
	d.cryptErr = d.probeWireGuard()
	if d.cryptErr != nil {
		d.log.Info("encrypted networks unavailable", "err", d.cryptErr)
	}
	// A VTEP that is no address of this host is a configuration error, not
	// something to discover at the first reconcile.
	addrs, err := d.hostAddrsLocked()
	if err == nil {
		_, err = d.hostLocked(addrs)
	}
	if err != nil {
		host.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the namespaces the Datapath holds open. Kernel objects stay:
// the datapath lives in the kernel, not in this process.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	for t, n := range d.tenants {
		n.Close()
		delete(d.tenants, t)
	}
	d.forgetCryptLocked()
	d.host.Close()
	return nil
}

// Reconcile makes the kernel hold exactly what s describes: it validates s,
// observes the kernel, and applies the difference. Objects that already match
// are not touched, so traffic through them is not interrupted; running it
// twice changes nothing the second time. If an op fails, what this call
// created is removed again and the error names what was being done. It is
// for start-up (adopting what a previous run left) and periodic repair;
// changes go through ReconcileScope.
func (d *Datapath) Reconcile(ctx context.Context, s State) error {
	if err := s.Validate(); err != nil {
		return err
	}
	return d.reconcile(ctx, s, netIndex(s), nil)
}

// ReconcileScope makes the kernel objects of sc match s, the whole desired
// state: it validates what sc needs of s, reads only the kernel objects of
// sc, and applies the difference, as Reconcile does for everything. Objects
// outside sc are neither read nor touched, even if s says they should
// change, so its cost does not grow with the rest of the host (adding an
// endpoint costs the same with 0 or 10,000 remote endpoints programmed).
// Concurrent calls are serialized; each may pass the State it saw, since
// only its scope is applied.
func (d *Datapath) ReconcileScope(ctx context.Context, s State, sc Scope) error {
	nets, err := s.validateScope(sc)
	if err != nil {
		return err
	}
	if sc.Empty() {
		return nil
	}
	return d.reconcile(ctx, s, nets, &sc)
}

func (d *Datapath) reconcile(ctx context.Context, s State, nets map[uint32]*Network, sc *Scope) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("overlay: datapath is closed")
	}
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return err
	}
	h, err := d.hostLocked(addrs)
	if err != nil {
		return err
	}
	v := viewAll
	if sc != nil {
		if v, err = d.viewLocked(s, nets, *sc); err != nil {
			return err
		}
	}
	if err := checkMTUs(s, nets, v, h.MaxMTU(), h.VTEP); err != nil {
		return err
	}
	observed, err := d.observeLocked(v, addrs)
	if err != nil {
		return err
	}
	desired, ok := desire(s, nets, h, v, observed)
	if !ok {
		return fmt.Errorf("overlay: uplink net %s is full: no /30 left for another tenant's egress", d.cfg.UplinkNet)
	}
	return d.applyLocked(ctx, Plan(desired, observed))
}

// checkMTUs refuses a network in v whose MTU the underlay cannot carry
// without fragmenting.
func checkMTUs(s State, nets map[uint32]*Network, v *view, max int, vtep netip.Addr) error {
	if v.all {
		return s.validateMTU(max, vtep)
	}
	for vni := range v.nets {
		if n := nets[vni]; n != nil {
			if err := n.checkMTU(max, vtep); err != nil {
				return err
			}
		}
	}
	for i := range s.Endpoints {
		if _, ok := v.eps[s.Endpoints[i].ID]; ok {
			if err := nets[s.Endpoints[i].VNI].checkMTU(max, vtep); err != nil {
				return err
			}
		}
	}
	return nil
}

// viewLocked makes the view of sc, first finding in the kernel the tenant
// of each network and endpoint sc names that s no longer has.
func (d *Datapath) viewLocked(s State, nets map[uint32]*Network, sc Scope) (*view, error) {
	var gone []string // link names to look for
	for _, vni := range sc.Networks {
		if nets[vni] == nil {
			gone = append(gone, bridgeName(vni), vxlanName(vni))
		}
	}
	for _, k := range sc.Remotes {
		if nets[k.VNI] == nil {
			gone = append(gone, bridgeName(k.VNI), vxlanName(k.VNI))
		}
	}
	if len(sc.Endpoints) > 0 {
		want := map[string]bool{}
		for _, id := range sc.Endpoints {
			want[id] = true
		}
		for _, e := range s.Endpoints {
			delete(want, e.ID)
		}
		for id := range want {
			gone = append(gone, BridgeVeth(id))
		}
	}
	locNets := map[uint32]string{}
	locEps := map[string]string{}
	if len(gone) > 0 {
		found, err := d.locateLocked(gone)
		if err != nil {
			return nil, err
		}
		for _, vni := range append(slices.Clone(sc.Networks), remoteVNIs(sc.Remotes)...) {
			if t := cmp.Or(found[bridgeName(vni)], found[vxlanName(vni)]); t != "" {
				locNets[vni] = t
			}
		}
		for _, id := range sc.Endpoints {
			if t := found[BridgeVeth(id)]; t != "" {
				locEps[id] = t
			}
		}
	}
	return newView(s, nets, sc, locNets, locEps), nil
}

func remoteVNIs(ks []RemoteKey) []uint32 {
	var out []uint32
	for _, k := range ks {
		out = append(out, k.VNI)
	}
	return out
}

// locateLocked finds which tenant namespaces hold links with these names:
// one lookup per name and tenant on the host.
func (d *Datapath) locateLocked(names []string) (map[string]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("overlay: list namespaces: %w", err)
	}
	found := map[string]string{}
	for _, e := range entries {
		tenant, ok := strings.CutPrefix(e.Name(), d.cfg.NetnsPrefix)
		if !ok || !validTenant(tenant) {
			continue
		}
		d.dropStaleLocked(tenant)
		t, err := d.tenantLocked(tenant)
		if err != nil {
			return nil, fmt.Errorf("overlay: open namespace %s: %w", e.Name(), err)
		}
		for _, name := range names {
			if found[name] != "" {
				continue
			}
			l, err := linkByName(t, name)
			if err != nil {
				return nil, fmt.Errorf("overlay: find %s in namespace %s: %w", name, e.Name(), err)
			}
			if l != nil {
				found[name] = tenant
			}
		}
	}
	return found, nil
}

// MaxMTU is the largest network MTU this host's underlay carries without
// fragmenting: the underlay interface's MTU less the VXLAN overhead.
// Reconcile refuses a network with a larger one.
func (d *Datapath) MaxMTU() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, errors.New("overlay: datapath is closed")
	}
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return 0, err
	}
	h, err := d.hostLocked(addrs)
	if err != nil {
		return 0, err
	}
	return h.MaxMTU(), nil
}

// Observe reads Tenet's objects from the kernel.
func (d *Datapath) Observe(ctx context.Context) (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return Snapshot{}, errors.New("overlay: datapath is closed")
	}
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return Snapshot{}, err
	}
	return d.observeLocked(viewAll, addrs)
}

// Apply runs ops as Reconcile would; for tests and benchmarks that need to
// see or time the ops.
func (d *Datapath) Apply(ctx context.Context, ops []Op) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applyLocked(ctx, ops)
}

// Desired is what Reconcile would aim for, given s and the current kernel.
func (d *Datapath) Desired(s State) (Snapshot, error) {
	if err := s.Validate(); err != nil {
		return Snapshot{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return Snapshot{}, err
	}
	h, err := d.hostLocked(addrs)
	if err != nil {
		return Snapshot{}, err
	}
	observed, err := d.observeLocked(viewAll, addrs)
	if err != nil {
		return Snapshot{}, err
	}
	desired, ok := desire(s, netIndex(s), h, viewAll, observed)
	if !ok {
		return Snapshot{}, fmt.Errorf("overlay: uplink net %s is full", d.cfg.UplinkNet)
	}
	return desired, nil
}

func (d *Datapath) netnsName(tenant string) string { return d.cfg.NetnsPrefix + tenant }

// hostAddrsLocked lists the host namespace's addresses of the VTEP's
// family.
func (d *Datapath) hostAddrsLocked() ([]netlink.Addr, error) {
	family := netlink.FAMILY_V4
	if d.cfg.VTEP.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return d.host.h.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("overlay: list host addresses: %w", err)
	}
	return addrs, nil
}

// hostLocked describes this host for Desire, finding the MTU of the
// interface that holds the VTEP address among addrs.
func (d *Datapath) hostLocked(addrs []netlink.Addr) (Host, error) {
	for _, a := range addrs {
		if ip, ok := netipFrom(a.IP); ok && ip == d.cfg.VTEP {
			l, err := d.host.h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return Host{}, fmt.Errorf("overlay: underlay link of vtep %s: %w", d.cfg.VTEP, err)
			}
			return Host{VTEP: d.cfg.VTEP, Port: d.cfg.Port, UnderlayMTU: l.Attrs().MTU, UplinkNet: d.cfg.UplinkNet,
				WireGuardPort: d.cfg.WireGuardPort}, nil
		}
	}
	return Host{}, fmt.Errorf("overlay: vtep %s: not an address of any interface in the host namespace", d.cfg.VTEP)
}

// tenantLocked opens (once) the namespace of tenant.
func (d *Datapath) tenantLocked(tenant string) (*nsNet, error) {
	if n := d.tenants[tenant]; n != nil {
		return n, nil
	}
	n, err := openNS(netnsDir + "/" + d.netnsName(tenant))
	if err != nil {
		return nil, err
	}
	d.tenants[tenant] = n
	return n, nil
}

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
	var order []string
	groups := map[string][]Op{}
	for _, op := range ops {
		key := op.Tenant
		switch op.Kind {
		case OpHostDel, OpHostRules:
			key = "" // the host's own ops (so are elements without a tenant)
		case OpCryptSet, OpPeerSet, OpPeerDel:
			key = "\x00crypt" // first in the plan: encrypted devices are made in it
		case OpCryptDel:
			key = "\x00crypt-del" // last in the plan
		}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], op)
	}
	var errs []error
	for _, key := range order {
		if err := d.applyGroupLocked(ctx, groups[key]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Datapath) applyGroupLocked(ctx context.Context, ops []Op) (err error) {
	a := &applier{d: d, index: map[string]int{}, created: map[string]bool{}}
	defer func() {
		if err != nil {
			for i := len(a.undo) - 1; i >= 0; i-- {
				a.undo[i]()
			}
		}
	}()
	for i, op := range ops {
		if i%256 == 0 && ctx.Err() != nil {
			return fmt.Errorf("overlay: %d of %d ops applied: %w", i, len(ops), ctx.Err())
		}
		if err := a.apply(op); err != nil {
			return err
		}
		if op.Kind != OpFDBAdd && op.Kind != OpNeighSet && op.Kind != OpFDBDel && op.Kind != OpNeighDel {
			d.log.Info(op.String())
		} else {
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

// hostRules puts the host's egress rules (and forwarding) in place, or
// removes the rules when digest is "". Forwarding is left on: the host may
// need it for others (Docker turns it on too).
func (a *applier) hostRules(digest string, els []Elem) error {
	host := a.d.host
	if digest == "" {
		return wrap(delTable(host, nftables.TableFamilyIPv4), "remove host egress rules")
	}
	if err := writeSysctl(host.ns, "net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("host forwarding: %w", err)
	}
	return wrap(rebuild(host, nftables.TableFamilyIPv4, hostRules(a.d.cfg.UplinkNet, a.d.cfg.Port, els)), "set host egress rules")
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

// probeVXLAN creates and deletes a VXLAN device (never brought up) in the host
// namespace to learn whether this kernel has VXLAN at all.
func (d *Datapath) probeVXLAN() error {
	name := fmt.Sprintf("tnprobe%d", rand.Uint32()%100000000)
	err := d.host.h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: MaxVNI, Port: int(d.cfg.Port)})
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("vxlan: %w", ErrNotSupported)
		}
		return fmt.Errorf("overlay: probe vxlan: %w", err)
	}
	return delByName(d.host, name)
}
