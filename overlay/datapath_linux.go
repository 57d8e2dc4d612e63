package overlay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

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

	tags tagMemo // endpoints' interface tags, for validateScope

	mu      sync.Mutex // guards the fields below
	host    *nsNet
	tenants map[string]*nsNet    // open namespaces, by tenant
	held    map[Reservation]int  // published ports' sockets
	warned  map[Reservation]bool // reservations whose failure was logged
	ipt     string               // the iptables command; "": none
	crypt   *cryptNS             // the crypt namespace, once open
	// placed is the tenant of each local endpoint, by port, as the last
	// reconcile that covered it left it: where a scope finds an endpoint
	// whose port went with its container's namespace, and with it the
	// objects it left (its published ports).
	placed map[string]string
	// routes reads the host namespace's local routing table (a handle
	// with strict checking, so the kernel sends that table alone); nil if
	// the kernel cannot filter dumps, and the host's addresses are listed.
	routes *netlink.Handle
	// linkNames are the names of host links holding an address in the
	// uplink net, by index: looked up once, and renewed from the link
	// dump of each full observation (an index can come back, with a link
	// moved in or made with it, and a link can be renamed).
	linkNames map[int]string
	// listedAddrs: the host's addresses had to be listed instead of read
	// from its local routing table (said once in the log).
	listedAddrs bool
	closed      bool
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
	d := &Datapath{cfg: cfg, log: cfg.Logger.With("component", "overlay"), host: host, tenants: map[string]*nsNet{},
		held: map[Reservation]int{}, warned: map[Reservation]bool{}, placed: map[string]string{}, linkNames: map[int]string{}}
	if h, err := netlink.NewHandleAt(host.ns, unix.NETLINK_ROUTE); err == nil {
		if err := h.SetStrictCheck(true); err == nil {
			d.routes = h
		} else {
			h.Close()
		}
	}
	if p, err := exec.LookPath("iptables"); err == nil {
		d.ipt = p
	} else {
		d.log.Info("no iptables command: Tenet adds no accepts to the host's iptables FORWARD chain; a firewall that drops forwarded packets would drop tenants' traffic")
	}
	if err := d.probeVXLAN(); err != nil {
		d.closeHost()
		return nil, err
	}
	if err := probeGuards(); err != nil {
		d.closeHost()
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
		d.closeHost()
		return nil, err
	}
	return d, nil
}

// closeHost closes the host namespace and the handles on it.
func (d *Datapath) closeHost() {
	if d.routes != nil {
		d.routes.Close()
		d.routes = nil
	}
	d.host.Close()
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
	for r, fd := range d.held {
		unix.Close(fd)
		delete(d.held, r)
	}
	d.forgetCryptLocked()
	d.closeHost()
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
	nets, err := s.validateScope(sc, &d.tags)
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
	v := viewReconcile
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
	if err := d.applyLocked(ctx, Plan(desired, observed)); err != nil {
		return err
	}
	d.placeLocked(s, nets, sc)
	return nil
}

// placeLocked records, after a reconcile of sc succeeded, the tenant of
// each local endpoint it covered, by port, and forgets those it removed.
func (d *Datapath) placeLocked(s State, nets map[uint32]*Network, sc *Scope) {
	tenantOf := func(e *Endpoint) string {
		if n := nets[e.VNI]; n != nil {
			return n.Tenant
		}
		return ""
	}
	if sc == nil {
		d.placed = map[string]string{}
		for i := range s.Endpoints {
			if t := tenantOf(&s.Endpoints[i]); t != "" {
				d.placed[BridgeVeth(s.Endpoints[i].ID)] = t
			}
		}
		return
	}
	wanted := map[string]string{}
	for i := range s.Endpoints {
		if t := tenantOf(&s.Endpoints[i]); t != "" {
			wanted[s.Endpoints[i].ID] = t
		}
	}
	for _, id := range sc.Endpoints {
		if t := wanted[id]; t != "" {
			d.placed[BridgeVeth(id)] = t
		} else {
			delete(d.placed, BridgeVeth(id))
		}
	}
	// A whole tenant's reconcile leaves it only the ports s wants.
	for _, t := range sc.Tenants {
		for port, pt := range d.placed {
			if pt == t {
				delete(d.placed, port)
			}
		}
		for id, wt := range wanted {
			if wt == t {
				d.placed[BridgeVeth(id)] = t
			}
		}
	}
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
	var guards []string // ports whose guards to look for
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
			guards = append(guards, BridgeVeth(id))
		}
	}
	locNets := map[uint32]string{}
	locEps := map[string]string{}
	if len(gone) > 0 {
		found, err := d.locateLocked(gone, guards)
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

// locateLocked finds which tenant namespaces hold links with these names
// (one lookup per name and tenant on the host), and, for the ports in
// guards whose link is in none (a container's namespace took the veth pair
// with it when it went), the tenant d.placed remembers.
func (d *Datapath) locateLocked(names, guards []string) (map[string]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("overlay: list namespaces: %w", err)
	}
	type ns struct {
		tenant, name string
		t            *nsNet
	}
	var tenants []ns
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
		tenants = append(tenants, ns{tenant, e.Name(), t})
	}
	found := map[string]string{}
	for _, n := range tenants {
		for _, name := range names {
			if found[name] != "" {
				continue
			}
			l, err := linkByName(n.t, name)
			if err != nil {
				return nil, fmt.Errorf("overlay: find %s in namespace %s: %w", name, n.name, err)
			}
			if l != nil {
				found[name] = n.tenant
			}
		}
	}
	// A port no namespace has went with its container's namespace: its
	// tenant is where the last reconcile of its endpoint put it.
	for _, port := range guards {
		if found[port] != "" {
			continue
		}
		if t := d.placed[port]; t != "" && slices.ContainsFunc(tenants, func(n ns) bool { return n.tenant == t }) {
			found[port] = t
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

// hostAddr is a local address of the host namespace and the index of the
// link that holds it.
type hostAddr struct {
	ip   netip.Addr
	link int
}

// hostAddrsLocked lists the host namespace's local IPv4 addresses (the
// uplink net is IPv4) and, with an IPv6 VTEP, its IPv6 ones.
func (d *Datapath) hostAddrsLocked() ([]hostAddr, error) {
	out, err := d.hostAddrs4Locked()
	if err != nil {
		return nil, err
	}
	if d.cfg.VTEP.Is6() {
		v6, err := d.listHostAddrsLocked(netlink.FAMILY_V6)
		if err != nil {
			return nil, err
		}
		out = append(out, v6...)
	}
	return out, nil
}

// hostAddrs4Locked reads the host's IPv4 addresses from the local routing
// table, which holds a route for each (on a down link too), so that the
// cost follows the addresses: an address dump walks every link of the
// namespace, and with 1,000 containers of Docker's bridge (a veth end
// each, no IPv4 address) it took 0.56 ms instead of 0.05
// (BenchmarkCrowdedHostNamespace). It lists the addresses instead without
// strict dump checking (Linux before 4.20), if the table cannot be read,
// or if an IPv4 VTEP is not in it (on a link enslaved to a VRF its local
// route is in the VRF's table).
func (d *Datapath) hostAddrs4Locked() ([]hostAddr, error) {
	if d.routes != nil {
		filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL}
		routes, err := dump(func() ([]netlink.Route, error) {
			return d.routes.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_TYPE)
		})
		var out []hostAddr
		vtep := d.cfg.VTEP.Is6()
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ip, ok := netipFrom(r.Dst.IP); ok {
				out = append(out, hostAddr{ip: ip, link: r.LinkIndex})
				vtep = vtep || ip == d.cfg.VTEP
			}
		}
		if err == nil && vtep {
			return out, nil
		}
		if !d.listedAddrs {
			d.listedAddrs = true
			d.log.Info("listing the host's addresses instead of reading its local routing table", "vtep_in_table", vtep, "err", err)
		}
	}
	return d.listHostAddrsLocked(netlink.FAMILY_V4)
}

// listHostAddrsLocked lists the host namespace's addresses of family.
func (d *Datapath) listHostAddrsLocked(family int) ([]hostAddr, error) {
	addrs, err := dump(func() ([]netlink.Addr, error) { return d.host.h.AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("overlay: list host addresses: %w", err)
	}
	var out []hostAddr
	for _, a := range addrs {
		if ip, ok := netipFrom(a.IP); ok {
			out = append(out, hostAddr{ip: ip, link: a.LinkIndex})
		}
	}
	return out, nil
}

// hostLinkNameLocked is the name of host link idx ("" if it is gone),
// remembered in d.linkNames.
func (d *Datapath) hostLinkNameLocked(idx int) string {
	if name, ok := d.linkNames[idx]; ok {
		return name
	}
	l, err := d.host.h.LinkByIndex(idx)
	if err != nil {
		return ""
	}
	d.linkNames[idx] = l.Attrs().Name
	return l.Attrs().Name
}

// hostLocked describes this host for Desire, finding the MTU of the
// interface that holds the VTEP address among addrs.
func (d *Datapath) hostLocked(addrs []hostAddr) (Host, error) {
	for _, a := range addrs {
		if a.ip == d.cfg.VTEP {
			l, err := d.host.h.LinkByIndex(a.link)
			if err != nil {
				return Host{}, fmt.Errorf("overlay: underlay link of vtep %s: %w", d.cfg.VTEP, err)
			}
			return Host{VTEP: d.cfg.VTEP, Port: d.cfg.Port, UnderlayMTU: l.Attrs().MTU, UplinkNet: d.cfg.UplinkNet,
				Filter: d.ipt != "", WireGuardPort: d.cfg.WireGuardPort}, nil
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
