package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/netutil"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// Datapath opens the resolver's sockets: *overlay.Datapath.
type Datapath interface {
	TenantNSID(tenant string) (overlay.NSID, bool)
	ListenResolver(ctx context.Context, tenant string) (overlay.ResolverSockets, error)
	ListenResolverOn(ctx context.Context, tenant string, vni uint32) (net.Listener, error)
	ListenHostResolver(ctx context.Context) (*net.UDPConn, error)
	RedirectHostResolver(upstream netip.AddrPort) error
}

// Local is this host's networks and endpoints: *core.Core.
type Local interface {
	Networks() []core.Network
	Endpoints() []core.Endpoint
}

// Cluster is other hosts' endpoints: core.GossipCluster.
type Cluster interface {
	Remotes(network string) []core.Remote
	// Subscribe streams gossip's changes (endpoint changes drop cached
	// names).
	Subscribe(buf int) (<-chan gossip.Event, func())
}

// Config configures a Resolver.
type Config struct {
	// Host is this host's name: its own endpoints come from Local, never
	// from Cluster.
	Host     string
	Datapath Datapath
	Local    Local
	Cluster  Cluster
	// DockerNames lists the local engine's networks, Docker network ID to
	// name (the suffix of N.<network> names). Nil, or failing: the
	// names of networks defined with tenetctl (tenant.name) only.
	DockerNames func(ctx context.Context) (map[string]string, error)
	// Upstream servers, asked in order, for names no network has.
	Upstream []netip.AddrPort
	// HostSocket also serves the host namespace: queries from Docker's
	// own networks and host processes to the resolver's address go
	// straight to the first upstream server (DNAT), or, if it cannot be
	// (a loopback server), to a forwarding socket there.
	HostSocket bool
	// Taps, if set, widen the answers of Docker's embedded DNS in each
	// container with an endpoint here for the names it shares with other
	// hosts' containers (tap.go).
	Taps Taps
	// Rate and Burst per source address (queries a second); per container
	// for the answers its taps widen.
	Rate, Burst int
	// Timeout of one upstream exchange; MaxInflight bounds the forwarded
	// queries in flight.
	Timeout     time.Duration
	MaxInflight int
	// Interval between looks at which tenants need a socket.
	Interval time.Duration
	Logger   *slog.Logger
}

// DefaultConfig leaves Datapath, Local, Cluster, Upstream and Logger to
// the caller.
func DefaultConfig() Config {
	return Config{Rate: 1000, Burst: 2000, Timeout: 2 * time.Second, MaxInflight: 256, Interval: 200 * time.Millisecond, HostSocket: true}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Host == "" || c.Datapath == nil || c.Local == nil || c.Cluster == nil || c.Logger == nil:
		return errors.New("resolver: Host, Datapath, Local, Cluster and Logger are required")
	case c.Rate < 1 || c.Burst < 1:
		return fmt.Errorf("resolver: Rate %d, Burst %d: must be at least 1", c.Rate, c.Burst)
	case c.Timeout <= 0 || c.MaxInflight < 1 || c.Interval <= 0:
		return fmt.Errorf("resolver: Timeout %v, MaxInflight %d, Interval %v: must be positive", c.Timeout, c.MaxInflight, c.Interval)
	}
	for _, s := range c.Upstream {
		if !s.IsValid() || s.Addr() == overlay.ResolverAddr {
			return fmt.Errorf("resolver: upstream %v: must be an address and port other than the resolver's own (%s)", s, overlay.ResolverAddr)
		}
	}
	return nil
}

// Resolver serves names to the tenants of this host.
type Resolver struct {
	cfg   Config
	log   *slog.Logger
	lim   *limiter
	cache *remoteCache

	mu          sync.Mutex        // guards the fields below
	dockerNames map[string]string // Docker network ID -> name
}

// New checks cfg.
func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Resolver{cfg: cfg, log: cfg.Logger.With("component", "resolver"), lim: newLimiter(cfg.Rate, cfg.Burst),
		cache: newRemoteCache()}, nil
}

type listener struct {
	conn *net.UDPConn
	ns   overlay.NSID
	done chan struct{}
	tcp  *dns.Server // nil: none
	h    *handler
	// bridges: a TCP server on the bridge of each network without egress
	// that has a container here, by network key (syncBridges).
	bridges map[string]*bridgeTCP
}

// bridgeTCP is the TCP server on one network's bridge, and the network it
// was opened for.
type bridgeTCP struct {
	vni uint32
	ref string
	srv *dns.Server
}

// Run keeps a socket open in each tenant namespace of this host (and the
// host's) and serves them until ctx ends.
func (r *Resolver) Run(ctx context.Context) error {
	st := &runState{fwd: newForwarder(ctx, r.cfg.Upstream, r.cfg.Timeout, r.cfg.MaxInflight, r.log),
		tenants: map[string]*listener{}, warned: map[string]bool{}, redirected: !r.cfg.HostSocket,
		taps: map[string]*tapped{}, warnedTaps: map[string]bool{}}
	following := make(chan struct{})
	go func() { r.cache.follow(ctx, r.cfg.Cluster.Subscribe); close(following) }()
	defer func() { <-following }()
	defer st.closeAll()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	var namesAt, tapsAt time.Time
	for {
		if time.Since(namesAt) > 5*time.Second {
			r.refreshDockerNames(ctx)
			namesAt = time.Now()
		}
		r.syncHost(ctx, st)
		r.syncTenants(ctx, st)
		r.syncTaps(st)
		tapsAt = time.Now()
		for kicked := true; kicked; {
			kicked = false
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			case <-r.cache.changed:
				// Another host's endpoint changed: a name may now be
				// shared (a tap needed) or no longer. At most every
				// tapsGap; a round comes at the tick anyway.
				kicked = true
				if time.Since(tapsAt) >= tapsGap {
					r.syncTaps(st)
					tapsAt = time.Now()
				}
			}
		}
	}
}

// runState is what Run keeps between its rounds.
type runState struct {
	fwd        *forwarder
	tenants    map[string]*listener
	host       *listener
	redirected bool
	// warned: tenants whose socket failed (logged once until it works),
	// and the host's redirect and socket.
	warned                     map[string]bool
	warnedRedirect, warnedHost bool
	// taps: by sandbox key; their tables stay when Run ends (answers
	// then pass untouched).
	taps       map[string]*tapped
	warnedTaps map[string]bool
	tapsSwept  bool // an earlier run's tables no longer needed are gone
}

func (st *runState) closeAll() {
	for _, l := range st.tenants {
		l.close()
	}
	if st.host != nil {
		st.host.close()
	}
	for _, t := range st.taps {
		t.close()
	}
}

// syncHost sends the host namespace's queries to the resolver's address
// straight to the first upstream server, and opens the host's socket
// (the fallback where that cannot be), until both are done.
func (r *Resolver) syncHost(ctx context.Context, st *runState) {
	if !r.cfg.HostSocket {
		return
	}
	if !st.redirected {
		var up netip.AddrPort
		if len(r.cfg.Upstream) > 0 {
			up = r.cfg.Upstream[0]
		}
		if err := r.cfg.Datapath.RedirectHostResolver(up); err == nil {
			st.redirected = true
		} else if !st.warnedRedirect {
			r.log.Warn("cannot send Docker's networks' queries straight upstream; tenetd forwards them", "err", err)
			st.warnedRedirect = true
		}
	}
	if st.host == nil {
		c, err := r.cfg.Datapath.ListenHostResolver(ctx)
		if err == nil {
			st.host = r.serve(ctx, c, 0, &handler{fwd: st.fwd, lim: r.lim, maxIn: maxQuery})
			r.log.Info("resolver listening in the host namespace", "ip", overlay.ResolverAddr)
		} else if !st.warnedHost {
			r.log.Warn("cannot listen in the host namespace; Docker's networks depend on the redirect", "err", err)
			st.warnedHost = true
		}
	}
}

// syncTenants keeps one socket per tenant with a network here, opened
// anew when the tenant's namespace is.
func (r *Resolver) syncTenants(ctx context.Context, st *runState) {
	want := map[string]bool{}
	for _, n := range r.cfg.Local.Networks() {
		want[n.Tenant] = true
	}
	for t, l := range st.tenants {
		if ns, ok := r.cfg.Datapath.TenantNSID(t); !want[t] || !ok || ns != l.ns {
			l.close()
			delete(st.tenants, t)
		}
	}
	for t := range st.warned {
		if !want[t] {
			delete(st.warned, t)
		}
	}
	for t := range want {
		if st.tenants[t] != nil {
			continue
		}
		if _, ok := r.cfg.Datapath.TenantNSID(t); !ok {
			continue // not made yet
		}
		socks, err := r.cfg.Datapath.ListenResolver(ctx, t)
		if err != nil {
			if !st.warned[t] {
				r.log.Warn("cannot listen in the tenant's namespace; retrying", "tenant", t, "err", err)
				st.warned[t] = true
			}
			continue
		}
		delete(st.warned, t)
		h := &handler{lookup: r.lookupFor(t), fwd: st.fwd, lim: r.lim, maxIn: maxQuery}
		l := r.serve(ctx, socks.UDP, socks.NS, h)
		l.h = h
		if socks.TCP != nil {
			l.tcp = r.serveTCP(socks.TCP, h)
		}
		st.tenants[t] = l
		r.log.Info("resolver listening", "tenant", t, "ip", overlay.ResolverAddr)
	}
	r.syncBridges(ctx, st)
}

// syncBridges keeps a TCP server on the bridge of each network without
// egress that has a container on this host: the namespace has no route
// back to those containers, so the tenant's own TCP socket cannot answer
// them (overlay.ListenResolverOn). A server goes when its network does or
// changes (another Docker network, VNI, or egress).
func (r *Resolver) syncBridges(ctx context.Context, st *runState) {
	used := map[string]bool{}
	for _, e := range r.cfg.Local.Endpoints() {
		used[e.Network] = true
	}
	want := map[string]map[string]core.Network{} // tenant -> key -> network
	for _, n := range r.cfg.Local.Networks() {
		if n.Egress() || !used[n.Key()] {
			continue
		}
		if want[n.Tenant] == nil {
			want[n.Tenant] = map[string]core.Network{}
		}
		want[n.Tenant][n.Key()] = n
	}
	for t, l := range st.tenants {
		for k, b := range l.bridges {
			if n, ok := want[t][k]; !ok || n.VNI != b.vni || n.Ref != b.ref {
				stopTCP(b.srv)
				delete(l.bridges, k)
			}
		}
		for k, n := range want[t] {
			if l.bridges[k] != nil || l.h == nil {
				continue
			}
			ln, err := r.cfg.Datapath.ListenResolverOn(ctx, t, n.VNI)
			if err != nil {
				// Expected for a moment: the datapath makes the bridge
				// after the core knows the container. Tried again next
				// round.
				r.log.Debug("no TCP socket on the network's bridge yet", "network", k, "err", err)
				continue
			}
			if l.bridges == nil {
				l.bridges = map[string]*bridgeTCP{}
			}
			l.bridges[k] = &bridgeTCP{vni: n.VNI, ref: n.Ref, srv: r.serveTCP(ln, l.h)}
		}
	}
}

// maxQuery is the largest query datagram read: a query is one question
// with an OPT record, far below it.
const maxQuery = 4096

func (l *listener) close() {
	_ = l.conn.Close()
	<-l.done
	if l.tcp != nil {
		stopTCP(l.tcp)
	}
	for _, b := range l.bridges {
		stopTCP(b.srv)
	}
}

// stopTCP shuts srv down, and closes its listener in case it has not
// started serving yet (Shutdown then does nothing, and the server would
// serve from it later).
func stopTCP(srv *dns.Server) {
	_ = srv.Shutdown()
	_ = srv.Listener.Close()
}

// serve reads queries from c until it is closed; replies leave by the
// interface their query came in on, from the address it was sent to.
func (r *Resolver) serve(ctx context.Context, c *net.UDPConn, ns overlay.NSID, h *handler) *listener {
	l := &listener{conn: c, ns: ns, done: make(chan struct{})}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		r.log.Warn("resolver socket without packet info: replies follow the routes", "err", err)
	}
	go func() {
		defer close(l.done)
		buf := make([]byte, maxQuery+1)
		for ctx.Err() == nil {
			n, cm, from, err := pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			ua, ok := from.(*net.UDPAddr)
			if !ok {
				continue
			}
			src, _ := netip.AddrFromSlice(ua.IP)
			var out *ipv4.ControlMessage
			if cm != nil {
				out = &ipv4.ControlMessage{Src: cm.Dst, IfIndex: cm.IfIndex}
			}
			h.serve(buf[:n], src.Unmap(), func(b []byte) {
				if b != nil {
					_, _ = pc.WriteTo(b, out, from)
				}
			})
		}
	}()
	return l
}

// maxTCPConns bounds the TCP connections at once of a tenant's socket,
// and of each of its bridges' (syncBridges); maxTCPQueries those of one
// connection.
const (
	maxTCPConns   = 64
	maxTCPQueries = 128
)

// serveTCP answers queries over TCP on l (clients retry there after a
// truncated answer), one at a time per connection, until it is shut down.
func (r *Resolver) serveTCP(l net.Listener, h *handler) *dns.Server {
	srv := &dns.Server{Listener: netutil.LimitListener(l, maxTCPConns), ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		IdleTimeout: func() time.Duration { return 5 * time.Second }, MaxTCPQueries: maxTCPQueries,
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			ta, ok := w.RemoteAddr().(*net.TCPAddr)
			if !ok || q.Response {
				return
			}
			src, _ := netip.AddrFromSlice(ta.IP)
			if !h.lim.allow(src.Unmap()) {
				return
			}
			done := make(chan struct{})
			h.respond(q, src.Unmap(), dns.MaxMsgSize, func(b []byte) {
				if b != nil {
					_, _ = w.Write(b)
				}
				close(done)
			})
			<-done // a forwarded answer comes from another goroutine
		})}
	go func() {
		if err := srv.ActivateAndServe(); err != nil {
			r.log.Debug("resolver over TCP", "err", err)
		}
	}()
	return srv
}

func (r *Resolver) refreshDockerNames(ctx context.Context) {
	if r.cfg.DockerNames == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names, err := r.cfg.DockerNames(ctx)
	if err != nil {
		r.log.Debug("list the engine's networks for their names", "err", err)
		return
	}
	r.mu.Lock()
	r.dockerNames = names
	r.mu.Unlock()
}

// lookupFor finds the container a query from src comes from: the local
// endpoint of one of tenant's networks with that address (port guards pin
// a container's source address, and a tenant's subnets never overlap).
// The query is answered from every network of the tenant the container is
// on here, as Docker answers a container on several networks; it is
// forwarded if any of them has egress. A source that is no endpoint of
// the tenant here is refused.
func (r *Resolver) lookupFor(tenant string) Lookup {
	return func(src netip.Addr) (NetView, bool, bool) {
		nets := map[string]core.Network{}
		for _, n := range r.cfg.Local.Networks() {
			if n.Tenant == tenant {
				nets[n.Key()] = n
			}
		}
		eps := r.cfg.Local.Endpoints()
		var self *core.Endpoint
		for i, e := range eps {
			if _, ok := nets[e.Network]; ok && e.IP.Addr() == src {
				self = &eps[i]
				break
			}
		}
		if self == nil {
			return NetView{}, false, false
		}
		mine := map[string]bool{self.Network: true}
		if self.Netns != "" {
			for _, e := range eps {
				if _, ok := nets[e.Network]; ok && e.Netns == self.Netns {
					mine[e.Network] = true
				}
			}
		}
		var v NetView
		egress := false
		for key := range mine {
			n := nets[key]
			egress = egress || n.Egress()
			r.addNetwork(&v, n, eps)
		}
		return v, egress, true
	}
}

// addNetwork adds network n's names to v: this host's endpoints (of eps)
// and other hosts' (indexed once per change of the network).
func (r *Resolver) addNetwork(v *NetView, n core.Network, eps []core.Endpoint) {
	key := n.Key()
	r.mu.Lock()
	dn := r.dockerNames[n.Ref]
	r.mu.Unlock()
	var suffixes []string
	for _, s := range []string{dn, rules.DockerName(n.Tenant, n.Name)} {
		s = strings.ToLower(strings.Trim(s, "."))
		if s != "" && (len(suffixes) == 0 || suffixes[0] != s) {
			suffixes = append(suffixes, s)
		}
	}
	var local []Record
	for _, e := range eps {
		if e.Network == key && len(e.Names) > 0 {
			local = append(local, Record{Names: e.Names, IP: e.IP.Addr()})
		}
	}
	v.Groups = append(v.Groups, Group{Suffixes: suffixes, Index: NewIndex(local)}, Group{Suffixes: suffixes, Index: r.remoteIndex(key)})
}

// remoteIndex is the names of other hosts' endpoints on network key.
func (r *Resolver) remoteIndex(key string) *Index {
	return r.cache.get(key, func() *Index {
		var recs []Record
		// Newest first, as the datapath chooses between two claims of
		// one address: a reverse lookup names the one it reaches.
		remotes := slices.Clone(r.cfg.Cluster.Remotes(key))
		slices.SortFunc(remotes, func(a, b core.Remote) int { return core.NewerClaimFirst(&a, &b) })
		for _, e := range remotes {
			if len(e.Names) > 0 && e.Host != r.cfg.Host {
				recs = append(recs, Record{Names: e.Names, IP: e.IP})
			}
		}
		return NewIndex(recs)
	})
}
