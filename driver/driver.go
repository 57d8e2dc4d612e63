package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// Driver is Tenet's Docker network driver on one host. Safe for concurrent
// use: every call and every cluster change is applied under one mutex, and
// each leaves the kernel reconciled with the result.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	dp   Datapath
	cl   Cluster
	ipam Addresses // nil: no IPAM

	// The registry of admin-defined tenants and networks (nil: none).
	kv      KV
	engine  *engine
	regKick chan struct{}

	mu       sync.Mutex           // guards the fields below
	nets     map[string]*netDef   // by Docker network ID
	eps      map[string]*localEP  // by endpoint ID
	remotes  map[string]*remoteEP // other hosts' endpoints, by ID
	attached map[string]map[string]time.Time
	// attached: network key -> host -> when it was hidden (zero: visible)
	vteps     map[string]netip.Addr // last known VTEP of each host
	dirty     bool                  // the view of other hosts changed since it was saved
	retry     bool                  // the last reconcile failed: try again
	lastRetry time.Time             // when it was last retried
}

// remoteEP is another host's endpoint as gossip last showed it.
type remoteEP struct {
	ep          gossip.Endpoint
	version     uint64
	hiddenSince time.Time // zero while its host is up
}

// New loads the local state saved by an earlier run; Run then reconciles
// the kernel with it and with the cluster.
func New(cfg Config, dp Datapath, cl Cluster, am Addresses) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	saved, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: cfg.Logger.With("component", "driver"), dp: dp, cl: cl, ipam: am,
		nets: map[string]*netDef{}, eps: map[string]*localEP{}, remotes: map[string]*remoteEP{},
		attached: map[string]map[string]time.Time{}, vteps: map[string]netip.Addr{}}
	for _, n := range saved.Networks {
		d.nets[n.DockerID] = n
	}
	// Other hosts' endpoints as last seen: kept programmed, as if their hosts
	// were just reported down, until gossip confirms them or the grace ends.
	now := time.Now()
	for _, r := range saved.Remotes {
		d.remotes[r.ID] = &remoteEP{ep: gossip.Endpoint{ID: r.ID, Network: r.Network, MAC: r.MAC, IP: r.IP, VTEP: r.VTEP, Host: r.Host},
			version: r.Version, hiddenSince: now}
	}
	for key, hosts := range saved.Attached {
		d.attached[key] = map[string]time.Time{}
		for _, h := range hosts {
			d.attached[key][h] = now
		}
	}
	for h, v := range saved.VTEPs {
		d.vteps[h] = v
	}
	for _, e := range saved.Endpoints {
		if d.nets[e.Network] == nil {
			d.log.Warn("dropping saved endpoint of an unknown network", "endpoint", e.ID, "network", e.Network)
			continue
		}
		d.eps[e.ID] = e
	}
	return d, nil
}

// retryEvery spaces the retries of a reconcile that keeps failing.
const retryEvery = 10 * time.Second

// EnableRegistry makes the driver keep admin-defined tenants and networks
// in kv and create every defined network in the Docker engine at
// dockerSocket. Call before Run.
func (d *Driver) EnableRegistry(kv KV, dockerSocket string) {
	d.kv, d.engine, d.regKick = kv, newEngine(dockerSocket), make(chan struct{}, 1)
}

func (d *Driver) kickRegistry() {
	if d.regKick == nil {
		return
	}
	select {
	case d.regKick <- struct{}{}:
	default:
	}
}

// runRegistry syncs the registry into the engine on every change and every
// few seconds (retrying what failed). It never holds d.mu while it talks to
// the engine, which calls back into this driver.
func (d *Driver) runRegistry(ctx context.Context) {
	if d.regKick == nil {
		return
	}
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		d.syncRegistry(ctx)
		select {
		case <-ctx.Done():
			return
		case <-d.regKick:
		case <-tick.C:
		}
	}
}

// Run reconciles the kernel with the saved state, publishes this host's
// networks and endpoints, and then follows the cluster's changes until ctx
// is done.
func (d *Driver) Run(ctx context.Context) error {
	events, cancel := d.cl.Subscribe(1024)
	defer cancel()
	d.mu.Lock()
	if err := d.reconcileLocked(ctx); err != nil {
		// Not fatal: what could be programmed is; the rest is retried.
		d.log.Error("adopt saved state", "err", err)
		d.retry = true
	}
	d.publishAllLocked()
	d.mu.Unlock()
	regDone := make(chan struct{})
	go func() { defer close(regDone); d.runRegistry(ctx) }()
	defer func() { <-regDone }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	gc := time.NewTicker(d.cfg.GCInterval)
	defer gc.Stop()
	defer func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.dirty {
			if err := d.saveLocked(); err != nil {
				d.log.Warn("save the view of other hosts", "err", err)
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("driver: cluster event stream closed")
			}
			d.mu.Lock()
			changed := d.applyEventLocked(ev)
			// Drain what else is queued, then reconcile once.
			for more := true; more; {
				select {
				case ev, ok := <-events:
					if !ok {
						more = false
						break
					}
					changed = d.applyEventLocked(ev) || changed
				default:
					more = false
				}
			}
			if changed {
				d.dirty = true
				d.reconcileAndLogLocked(ctx)
			}
			d.mu.Unlock()
		case <-gc.C:
			d.collectGarbage(ctx)
		case <-tick.C:
			d.mu.Lock()
			retryNow := d.retry && time.Since(d.lastRetry) >= retryEvery
			if d.expireHiddenLocked(time.Now()) || retryNow {
				d.dirty, d.retry = true, false
				if retryNow {
					d.lastRetry = time.Now()
				}
				d.reconcileAndLogLocked(ctx)
			}
			if d.dirty {
				if err := d.saveLocked(); err != nil {
					d.log.Warn("save the view of other hosts", "err", err)
				}
			}
			d.mu.Unlock()
		}
	}
}

func (d *Driver) reconcileAndLogLocked(ctx context.Context) {
	if err := d.reconcileLocked(ctx); err != nil {
		// Nobody else will report it: the change came from the cluster.
		d.log.Error("reconcile after cluster change", "err", err)
		d.retry = true
	}
}

// applyEventLocked folds one cluster change into the view of other hosts'
// endpoints and attachments, and says whether the datapath may need work.
func (d *Driver) applyEventLocked(ev gossip.Event) bool {
	if ev.Table == gossip.TableKV && (strings.HasPrefix(ev.Key, kvTenant) || strings.HasPrefix(ev.Key, kvNetwork)) {
		d.kickRegistry()
		return false
	}
	if ev.Host == d.cfg.Host {
		d.dropStaleOwnLocked(ev)
		return false
	}
	switch ev.Table {
	case gossip.TableEndpoints:
		if ev.Endpoint == nil {
			return false
		}
		switch {
		case ev.Kind == gossip.EventPut:
			d.remotes[ev.Key] = &remoteEP{ep: *ev.Endpoint, version: ev.Version}
		case ev.Hidden:
			if r := d.remotes[ev.Key]; r != nil && r.hiddenSince.IsZero() {
				r.hiddenSince = time.Now()
			}
			return false // nothing changes until the grace runs out
		default:
			delete(d.remotes, ev.Key)
		}
		return true
	case gossip.TableAttachments:
		hosts := d.attached[ev.Key]
		if hosts == nil {
			hosts = map[string]time.Time{}
			d.attached[ev.Key] = hosts
		}
		switch {
		case ev.Kind == gossip.EventPut:
			hosts[ev.Host] = time.Time{}
		case ev.Hidden:
			if _, ok := hosts[ev.Host]; ok {
				hosts[ev.Host] = time.Now()
			}
			return false
		default:
			delete(hosts, ev.Host)
		}
		return true
	}
	return false
}

// dropStaleOwnLocked withdraws an entry of this host that the ring still
// holds but this host no longer has: gossip hands a restarted host its old
// entries back, including those of endpoints and networks removed while it
// was down.
func (d *Driver) dropStaleOwnLocked(ev gossip.Event) {
	if ev.Kind != gossip.EventPut {
		return
	}
	switch ev.Table {
	case gossip.TableEndpoints:
		if d.eps[ev.Key] == nil {
			d.log.Info("withdrawing a stale endpoint of this host", "endpoint", ev.Key)
			d.cl.DeleteEndpoint(ev.Key)
		}
	case gossip.TableNetworks, gossip.TableAttachments:
		for _, n := range d.nets {
			if n.key() == ev.Key {
				return
			}
		}
		d.log.Info("withdrawing a stale network of this host", "network", ev.Key)
		if ev.Table == gossip.TableNetworks {
			d.cl.DeleteNetwork(ev.Key)
		} else {
			d.cl.Detach(ev.Key)
		}
	}
}

// expireHiddenLocked forgets what hidden hosts had once the grace is over.
func (d *Driver) expireHiddenLocked(now time.Time) bool {
	changed := false
	for id, r := range d.remotes {
		if !r.hiddenSince.IsZero() && now.Sub(r.hiddenSince) > d.cfg.HiddenGrace {
			delete(d.remotes, id)
			changed = true
		}
	}
	for _, hosts := range d.attached {
		for h, since := range hosts {
			if !since.IsZero() && now.Sub(since) > d.cfg.HiddenGrace {
				delete(hosts, h)
				changed = true
			}
		}
	}
	return changed
}

// desiredLocked is the datapath state for this host's networks, local
// endpoints, and the other hosts' endpoints on those networks. A remote
// endpoint that claims an address or MAC already taken in its network
// (a stale record racing a new one) is left out, with a warning.
func (d *Driver) desiredLocked() overlay.State {
	var s overlay.State
	byKey := map[string]*netDef{}
	// Hosts gossip reports down keep their last VTEP until the grace of
	// their attachment runs out.
	for _, m := range d.cl.Members() {
		if m.VTEP.IsValid() {
			d.vteps[m.Name] = m.VTEP
		}
	}
	vteps := d.vteps
	for _, n := range sortedNets(d.nets) {
		byKey[n.key()] = n
		on := overlay.Network{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, MTU: n.MTU}
		if n.egress() {
			on.Gateway, on.Egress = netip.PrefixFrom(n.Gateway, n.Subnet.Bits()), true
		}
		for h := range d.attached[n.key()] {
			if v, ok := vteps[h]; ok && h != d.cfg.Host && v.IsValid() && v != d.cfg.VTEP {
				on.Peers = append(on.Peers, v)
			}
		}
		slices.SortFunc(on.Peers, netip.Addr.Compare)
		s.Networks = append(s.Networks, on)
	}
	taken := map[string]bool{} // "vni/ip" and "vni/mac"
	for _, e := range sortedEPs(d.eps) {
		n := d.nets[e.Network]
		s.Endpoints = append(s.Endpoints, overlay.Endpoint{ID: e.ID, VNI: n.VNI, MAC: e.MAC, IPs: []netip.Addr{e.IP.Addr()}})
		taken[fmt.Sprint(n.VNI, "/", e.IP.Addr())] = true
		taken[fmt.Sprint(n.VNI, "/", e.MAC)] = true
	}
	rs := make([]*remoteEP, 0, len(d.remotes))
	for _, r := range d.remotes {
		rs = append(rs, r)
	}
	// Newest first, so that of two records claiming one address the newer
	// wins, the same choice on every host.
	slices.SortFunc(rs, func(a, b *remoteEP) int {
		return cmp.Or(cmp.Compare(b.version, a.version), cmp.Compare(a.ep.ID, b.ep.ID))
	})
	for _, r := range rs {
		n := byKey[r.ep.Network]
		if n == nil || r.ep.VTEP == d.cfg.VTEP || !validRemote(r.ep) {
			continue
		}
		ipKey, macKey := fmt.Sprint(n.VNI, "/", r.ep.IP), fmt.Sprint(n.VNI, "/", r.ep.MAC)
		if taken[ipKey] || taken[macKey] {
			d.log.Warn("remote endpoint claims a taken address; ignored", "endpoint", r.ep.ID, "host", r.ep.Host,
				"ip", r.ep.IP, "mac", r.ep.MAC.String(), "network", n.key())
			continue
		}
		taken[ipKey], taken[macKey] = true, true
		rem := overlay.Remote{VNI: n.VNI, MAC: r.ep.MAC, VTEP: r.ep.VTEP}
		if r.ep.IP.IsValid() {
			rem.IPs = []netip.Addr{r.ep.IP}
		}
		s.Remotes = append(s.Remotes, rem)
	}
	return s
}

func (d *Driver) reconcileLocked(ctx context.Context) error {
	return d.dp.Reconcile(ctx, d.desiredLocked())
}

func (d *Driver) saveLocked() error {
	var s savedState
	s.Networks = sortedNets(d.nets)
	s.Endpoints = sortedEPs(d.eps)
	for _, r := range d.remotes {
		s.Remotes = append(s.Remotes, savedRemote{ID: r.ep.ID, Network: r.ep.Network, MAC: r.ep.MAC, IP: r.ep.IP,
			VTEP: r.ep.VTEP, Host: r.ep.Host, Version: r.version})
	}
	slices.SortFunc(s.Remotes, func(a, b savedRemote) int { return cmp.Compare(a.ID, b.ID) })
	s.Attached = map[string][]string{}
	for key, hosts := range d.attached {
		for h := range hosts {
			s.Attached[key] = append(s.Attached[key], h)
		}
		slices.Sort(s.Attached[key])
	}
	s.VTEPs = d.vteps
	d.dirty = false
	return saveState(d.cfg.StateDir, s)
}

// publishAllLocked (re)announces this host's networks, attachments and
// endpoints, as after a restart.
func (d *Driver) publishAllLocked() {
	for _, n := range sortedNets(d.nets) {
		d.publishNetworkLocked(n)
	}
	for _, e := range sortedEPs(d.eps) {
		d.publishEndpointLocked(e)
	}
}

func (d *Driver) publishNetworkLocked(n *netDef) {
	if err := d.cl.PutNetwork(gossipNetwork(n)); err != nil {
		d.log.Warn("publish network", "network", n.key(), "err", err)
	}
	if err := d.cl.Attach(n.key()); err != nil {
		d.log.Warn("publish attachment", "network", n.key(), "err", err)
	}
}

func (d *Driver) publishEndpointLocked(e *localEP) {
	n := d.nets[e.Network]
	if err := d.cl.PutEndpoint(gossip.Endpoint{ID: e.ID, Network: n.key(), MAC: e.MAC, IP: e.IP.Addr()}); err != nil {
		d.log.Warn("publish endpoint", "endpoint", e.ID, "err", err)
	}
}

func sortedNets(m map[string]*netDef) []*netDef {
	out := make([]*netDef, 0, len(m))
	for _, n := range m {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *netDef) int { return cmp.Compare(a.DockerID, b.DockerID) })
	return out
}

func sortedEPs(m map[string]*localEP) []*localEP {
	out := make([]*localEP, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *localEP) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// validRemote applies the datapath's input rules to a gossip record, so
// that one bad record from a peer cannot fail every reconcile.
func validRemote(e gossip.Endpoint) bool {
	unicast := func(a netip.Addr) bool {
		return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && a.Zone() == ""
	}
	if !unicast(e.VTEP) || len(e.MAC) != 6 || e.MAC[0]&1 != 0 || slices.Equal([]byte(e.MAC), make([]byte, 6)) {
		return false
	}
	return !e.IP.IsValid() || unicast(e.IP)
}
