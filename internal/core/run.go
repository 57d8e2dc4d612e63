package core

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/overlay"
)

// RemoteObserver is implemented by datapaths that can report the remote
// entries the kernel holds, so that a restarted core keeps them until gossip
// has caught up.
type RemoteObserver interface {
	// ObserveRemotes returns, by VNI, the remote entries and flood peers
	// the kernel holds.
	ObserveRemotes(ctx context.Context) (map[uint32][]overlay.Remote, map[uint32][]netip.Addr, error)
}

// Run brings the datapath in line with the saved state (keeping the remote
// entries the kernel already has until gossip has synced each network),
// publishes this host's networks and endpoints, and then follows the
// cluster's changes, repairs, retries and collects garbage until ctx is
// done.
func (c *Core) Run(ctx context.Context) error {
	events, cancel := c.cl.Subscribe(4096)
	defer cancel()
	c.mu.Lock()
	if c.bg != nil {
		c.mu.Unlock()
		return errors.New("core: Run called twice")
	}
	c.bg = ctx
	c.mu.Unlock()

	done := make(chan struct{}, 2)
	go func() { c.w.run(ctx); done <- struct{}{} }()
	go func() { c.saver.run(ctx); done <- struct{}{} }()
	defer func() { <-done; <-done }()

	c.adopt(ctx)
	c.adoptCrypt(ctx)
	members := fmt.Sprint(c.memberAddrs())
	c.mu.Lock()
	c.members = members
	c.mu.Unlock()
	if err := <-c.w.submit(Scope{All: true}); err != nil {
		// Not fatal: what could be programmed is; the rest is retried.
		c.log.Error("reconcile the saved state", "err", err)
		c.scheduleRetry()
	}
	nets, eps := c.snapshot()
	for _, n := range nets {
		c.publishNetwork(n)
	}
	for _, e := range eps {
		c.publishEndpoint(e)
	}
	c.log.Info("core ready", "networks", len(nets), "endpoints", len(eps))
	close(c.started)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	repair := time.NewTicker(c.cfg.RepairInterval)
	defer repair.Stop()
	gc := time.NewTicker(c.cfg.GCInterval)
	defer gc.Stop()
	var rotate <-chan time.Time // nil: never
	if c.cfg.PSKRotation > 0 {
		t := time.NewTicker(c.cfg.PSKRotation)
		defer t.Stop()
		rotate = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("core: cluster event stream closed")
			}
			scope, pub := c.onEvent(ev), c.published(nil, ev)
			// Take what else is queued, then ask once.
			for more := true; more; {
				select {
				case ev, ok := <-events:
					if !ok {
						more = false
						break
					}
					scope = scope.merge(c.onEvent(ev))
					pub = c.published(pub, ev)
				default:
					more = false
				}
			}
			c.submitAsync(scope, pub)
		case <-tick.C:
			c.submitAsync(c.onTick(time.Now()), nil)
		case <-repair.C:
			c.submitAsync(Scope{All: true}, nil)
		case <-gc.C:
			c.collectGarbage(ctx)
		case <-rotate:
			c.rotateShare()
		}
	}
}

// submitAsync queues a scope nobody waits for; a failure is retried. Once
// it is programmed, the remote changes published at published have
// converged here.
func (c *Core) submitAsync(s Scope, published []time.Time) {
	if s.Empty() {
		return
	}
	done := c.w.submit(s)
	go func() {
		if err := <-done; err != nil {
			// Nobody else will report it: the change came from the cluster.
			c.log.Error("reconcile after a cluster change", "err", err)
			c.scheduleRetry()
			return
		}
		if o := c.cfg.Observer; o != nil && len(published) > 0 {
			o.Converged(published, time.Now())
		}
	}()
}

// adopt records the remote entries the kernel holds, per network, so that
// they stay until gossip has synced the network.
func (c *Core) adopt(ctx context.Context) {
	ro, ok := c.dp.(RemoteObserver)
	if !ok {
		return
	}
	remotes, peers, err := ro.ObserveRemotes(ctx)
	if err != nil {
		c.log.Warn("read the remote entries the kernel holds; they may be withdrawn until gossip catches up", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nets {
		if len(remotes[n.VNI]) > 0 || len(peers[n.VNI]) > 0 {
			c.adopted[n.VNI] = adoptedRemotes{remotes: remotes[n.VNI], peers: peers[n.VNI]}
		}
	}
	if len(c.adopted) > 0 {
		c.log.Info("keeping remote entries found in the kernel until gossip has synced their networks", "networks", len(c.adopted))
	}
}

// onTick does what is due: drop adopted entries of networks gossip has
// synced (or after SyncWait), re-plan networks whose hidden entries' grace
// ran out, retry a failed reconcile.
func (c *Core) onTick(now time.Time) Scope {
	var scope Scope
	c.mu.Lock()
	keys := map[uint32]string{}
	for _, n := range c.nets {
		keys[n.VNI] = n.Key()
	}
	pending := make([]uint32, 0, len(c.adopted))
	for vni := range c.adopted {
		pending = append(pending, vni)
	}
	expired := !c.next.IsZero() && !now.Before(c.next)
	if expired {
		c.next = time.Time{}
	}
	retry := !c.retryAt.IsZero() && !now.Before(c.retryAt)
	if retry {
		c.retryAt = time.Time{}
	}
	c.mu.Unlock()
	waited := now.Sub(c.start) >= c.cfg.SyncWait
	if waited {
		c.mu.Lock()
		if len(c.adoptedPeers) > 0 {
			// Gossip has had its time to deliver the peers' keys.
			c.adoptedPeers = nil
			scope.Crypt = true
		}
		c.mu.Unlock()
	}
	var synced []uint32
	for _, vni := range pending {
		if key, ok := keys[vni]; !ok || waited || c.cl.Synced(key) {
			synced = append(synced, vni)
		}
	}
	if len(synced) > 0 {
		c.mu.Lock()
		for _, vni := range synced {
			delete(c.adopted, vni)
		}
		c.mu.Unlock()
		scope.Networks = union(scope.Networks, synced)
		scope.RemoteNets = union(scope.RemoteNets, synced)
	}
	if expired {
		for vni := range keys {
			scope.Networks = union(scope.Networks, []uint32{vni})
			scope.RemoteNets = union(scope.RemoteNets, []uint32{vni})
		}
	}
	if retry {
		scope.All = true
	}
	members := fmt.Sprint(c.memberAddrs())
	c.mu.Lock()
	if members != c.members {
		c.members = members
		scope.Infra = true
	}
	c.mu.Unlock()
	return scope
}

// onEvent turns a cluster change into the scope it affects here.
func (c *Core) onEvent(ev gossip.Event) Scope {
	if ev.Host == c.cfg.Host {
		c.dropStaleOwn(ev)
		return Scope{}
	}
	switch ev.Table {
	case gossip.TableEndpoints:
		if ev.Endpoint == nil {
			return Scope{}
		}
		vni, ok := c.vniOf(ev.Endpoint.Network)
		if !ok {
			return Scope{}
		}
		switch {
		case ev.Hidden && ev.Kind == gossip.EventDelete:
			c.hiddenNow()
			return Scope{}
		case len(ev.Endpoint.MAC) == 6:
			// A put, or a delete carrying the entry's last value.
			return Scope{Remotes: []RemoteKey{remoteKey(vni, ev.Endpoint.MAC)}}
		}
		// A delete without the last value: look at the network's remotes.
		return Scope{RemoteNets: []uint32{vni}}
	case gossip.TableAttachments:
		vni, ok := c.vniOf(ev.Key)
		if !ok {
			return Scope{}
		}
		if ev.Kind == gossip.EventDelete && ev.Hidden {
			c.hiddenNow()
			return Scope{}
		}
		return Scope{Networks: []uint32{vni}}
	case gossip.TableKV:
		if ev.Key != crypt.HostKey {
			return Scope{}
		}
		// Another host's WireGuard key: a peer's, if it shares an
		// encrypted network with this one.
		c.mu.Lock()
		encrypted := c.hasEncryptedLocked()
		c.mu.Unlock()
		return Scope{Crypt: encrypted}
	}
	return Scope{}
}

// hiddenNow notes that an entry was just hidden: its grace ends at the
// latest HiddenGrace from now.
func (c *Core) hiddenNow() {
	end := time.Now().Add(c.cfg.HiddenGrace)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next.IsZero() || end.Before(c.next) {
		c.next = end
	}
}

// dropStaleOwn withdraws an entry of this host that the ring still holds
// but this host no longer has: gossip hands a restarted host its old
// entries back, including those of endpoints and networks removed while it
// was down.
func (c *Core) dropStaleOwn(ev gossip.Event) {
	if ev.Kind != gossip.EventPut {
		return
	}
	c.mu.Lock()
	_, haveEP := c.eps[ev.Key]
	_, haveNet := c.nets[ev.Key]
	c.mu.Unlock()
	switch ev.Table {
	case gossip.TableEndpoints:
		if !haveEP {
			c.log.Info("withdrawing a stale endpoint of this host", "endpoint", ev.Key)
			c.cl.DeleteEndpoint(ev.Key)
		}
	case gossip.TableNetworks:
		if !haveNet {
			c.log.Info("withdrawing a stale network of this host", "network", ev.Key)
			c.cl.DeleteNetwork(ev.Key)
		}
	case gossip.TableAttachments:
		if !haveNet {
			c.log.Info("withdrawing a stale attachment of this host", "network", ev.Key)
			c.cl.Detach(ev.Key)
		}
	case gossip.TableKV:
		if network, ok := crypt.IsNetworkKey(ev.Key); ok {
			c.mu.Lock()
			n := c.nets[network]
			stale := n == nil
			c.mu.Unlock()
			if stale {
				c.cl.DeleteKV(ev.Key)
			}
		}
	}
}

// collectGarbage deletes endpoints whose network namespace no longer
// exists: after its own restart Docker may drop endpoints without telling
// the driver, which would leave their veths and other hosts' entries. A
// namespace counts as gone only once it has been seen: Docker names it at
// Join, before the container's process (and so the namespace) exists. An
// endpoint never attached, or whose namespace never appeared, is collected
// after UnjoinedGrace.
func (c *Core) collectGarbage(ctx context.Context) {
	var gone, seen []Endpoint
	for _, e := range c.Endpoints() {
		old := !e.Created.IsZero() && time.Since(e.Created) > c.cfg.UnjoinedGrace
		if e.Netns == "" {
			if old {
				gone = append(gone, e)
			}
			continue
		}
		// Only when this process can see where namespaces live (it may run
		// in another mount namespace than the engine) is a missing one gone.
		if _, err := os.Stat(filepath.Dir(e.Netns)); err != nil {
			continue
		}
		_, err := os.Stat(e.Netns)
		switch {
		case err == nil && !e.NetnsSeen:
			seen = append(seen, e)
		case errors.Is(err, fs.ErrNotExist) && (e.NetnsSeen || old):
			gone = append(gone, e)
		}
	}
	if len(seen) > 0 {
		c.mu.Lock()
		for _, s := range seen {
			if e := c.eps[s.ID]; e != nil && e.Netns == s.Netns {
				e.NetnsSeen = true
				c.touchLocked(s.ID)
			}
		}
		c.mu.Unlock()
		if err := c.saver.save(ctx); err != nil {
			c.log.Warn("save state", "err", err)
		}
	}
	for _, e := range gone {
		c.log.Warn("endpoint's network namespace is gone; removing it", "endpoint", e.ID, "ip", e.IP, "netns", e.Netns)
		if err := c.DeleteEndpoint(ctx, e.ID); err != nil {
			c.log.Error("collect endpoint", "endpoint", e.ID, "err", err)
		}
	}
}
