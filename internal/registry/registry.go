// Package registry keeps the cluster's tenants and the networks admins
// define once for every host (tenetctl tenant create, tenetctl network
// create), in gossip's key-value table. It knows nothing of Docker: a front
// end (package driver) realises each defined network in its local engine.
//
// Each definition is a last-writer-wins register over owner-writes-only
// entries: a write carries a generation (above every version seen for the
// key) and its origin host; the entry with the highest (generation, origin)
// among all hosts' entries under a key wins, and a removal is a winning
// entry marked removed. Every host copies the winner into its own entry
// (Sync), so a definition outlives the host that made it.
//
// Safe for concurrent use; it holds no lock of its own (gossip's table is
// the state).
package registry

import (
	"cmp"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/internal/errkind"
	"github.com/tenet-net/tenet/internal/rules"
)

const (
	prefixTenant  = "tenant/"
	prefixNetwork = "network/"
)

// IsKey says whether a key-value table key is the registry's.
func IsKey(key string) bool {
	return strings.HasPrefix(key, prefixTenant) || strings.HasPrefix(key, prefixNetwork)
}

// Errors, for front ends that map them; branch with errors.Is.
var (
	ErrInvalid  = errkind.Invalid
	ErrConflict = errkind.Conflict
	ErrNotFound = errkind.NotFound
)

var errorf = errkind.Errorf

// Definition is a tenant ("tenant/<name>") or a network
// ("network/<tenant>/<name>") as an admin defined it.
type Definition struct {
	Tenant   string `json:"tenant"`
	Name     string `json:"name,omitempty"` // empty for a tenant
	Subnet   string `json:"subnet,omitempty"`
	VNI      uint32 `json:"vni,omitempty"`
	Internal bool   `json:"internal,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	// Encrypted: the network's traffic between hosts goes through
	// WireGuard only, on every host.
	Encrypted bool `json:"encrypted,omitempty"`

	Removed bool   `json:"removed,omitempty"`
	Gen     uint64 `json:"gen"`    // generation of the write that made it
	Origin  string `json:"origin"` // host that made it
}

// Key is the definition's key in the table.
func (d Definition) Key() string {
	if d.Name == "" {
		return prefixTenant + d.Tenant
	}
	return prefixNetwork + d.Tenant + "/" + d.Name
}

// NetworkKey is a network definition's cluster-wide identity, tenant/name.
func (d Definition) NetworkKey() string { return rules.Key(d.Tenant, d.Name) }

// DockerName is the network's name in every engine.
func (d Definition) DockerName() string { return rules.DockerName(d.Tenant, d.Name) }

// SubnetPrefix is the parsed subnet (zero for a tenant).
func (d Definition) SubnetPrefix() netip.Prefix {
	p, _ := netip.ParsePrefix(d.Subnet)
	return p
}

// valid applies the admin API's rules to a definition read from the
// cluster, so that a bad entry from a peer is ignored, not acted on.
func (d Definition) valid() bool {
	if rules.Tenant(d.Tenant) != nil {
		return false
	}
	if d.Name == "" {
		return true
	}
	if rules.Network(d.Name) != nil {
		return false
	}
	if d.Removed {
		return true
	}
	return rules.Subnet(d.SubnetPrefix(), nil) == nil && rules.VNI(uint64(d.VNI)) == nil &&
		(d.MTU == 0 || d.MTU >= 1280 && d.MTU <= 9000)
}

// KV is what the registry needs of gossip's key-value table.
type KV interface {
	Put(key string, value []byte) error
	List(prefix string) []gossip.KVEntry
}

// Cluster is what the registry needs to know of what exists: every host's
// networks (hand-made ones included) and the endpoints this host knows of.
type Cluster interface {
	Networks() []gossip.Network
	// Endpoints lists endpoints on network (tenant/name) this host knows of:
	// its own and those of the hosts that have the network.
	Endpoints(network string) []gossip.Endpoint
}

// Registry reads and writes definitions.
type Registry struct {
	host string
	kv   KV
	cl   Cluster
	// CheckSubnet applies the host's subnet rules (the underlay, the
	// uplink range) beyond those package rules always applies; nil: none.
	CheckSubnet func(netip.Prefix) error
	// MaxMTU is the largest MTU the underlay carries for a network,
	// encrypted or not; nil or 0: unchecked.
	MaxMTU func(encrypted bool) (int, error)
	// CanEncrypt says whether this host can carry encrypted networks (nil)
	// or why not; a definition this host could not realise is refused.
	// Nil: unchecked.
	CanEncrypt func() error
	// CheckRealizable, if set, is asked before a network is defined, so a
	// definition this host could not realise (its Docker name taken by
	// another network, say) is refused rather than reported done.
	CheckRealizable func(Definition) error
}

// New returns the registry of host over kv.
func New(host string, kv KV, cl Cluster) *Registry {
	return &Registry{host: host, kv: kv, cl: cl}
}

// winners returns the winning definition of every key under prefix.
func (r *Registry) winners(prefix string) map[string]Definition {
	out := map[string]Definition{}
	for _, e := range r.kv.List(prefix) {
		var d Definition
		if json.Unmarshal(e.Value, &d) != nil || d.Key() != e.Key || !d.valid() {
			continue // malformed, mislabelled or invalid: ignored
		}
		if w, ok := out[e.Key]; !ok || cmp.Or(cmp.Compare(d.Gen, w.Gen), cmp.Compare(d.Origin, w.Origin)) > 0 {
			out[e.Key] = d
		}
	}
	return out
}

// Winners returns every definition's winning write, removed ones included.
func (r *Registry) Winners() []Definition {
	var out []Definition
	for _, p := range []string{prefixTenant, prefixNetwork} {
		for _, w := range r.winners(p) {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b Definition) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

func (r *Registry) live(prefix string) []Definition {
	out := []Definition{}
	for _, w := range r.winners(prefix) {
		if !w.Removed {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b Definition) int { return cmp.Compare(a.Key(), b.Key()) })
	return out
}

// Tenants lists the defined tenants.
func (r *Registry) Tenants() []Definition { return r.live(prefixTenant) }

// Networks lists the defined networks.
func (r *Registry) Networks() []Definition { return r.live(prefixNetwork) }

// Network returns a defined network.
func (r *Registry) Network(tenant, name string) (Definition, bool) {
	w, ok := r.winners(prefixNetwork)[prefixNetwork+tenant+"/"+name]
	return w, ok && !w.Removed
}

// TenantDefined says whether tenant is defined, and whether any tenant is:
// where admins define tenants, a network of an undefined one is refused.
func (r *Registry) TenantDefined(tenant string) (defined, any bool) {
	ts := r.Tenants()
	for _, t := range ts {
		if t.Tenant == tenant {
			return true, true
		}
	}
	return false, len(ts) > 0
}

// write publishes d as the newest write of its key.
func (r *Registry) write(d Definition) error {
	var gen uint64
	for _, e := range r.kv.List(d.Key()) {
		if e.Key != d.Key() {
			continue
		}
		var o Definition
		if json.Unmarshal(e.Value, &o) == nil {
			gen = max(gen, o.Gen)
		}
		gen = max(gen, e.Version)
	}
	d.Gen, d.Origin = gen+1, r.host
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return r.kv.Put(d.Key(), b)
}

// CreateTenant defines a tenant cluster-wide.
func (r *Registry) CreateTenant(name string) error {
	if err := rules.Tenant(name); err != nil {
		return errorf(ErrInvalid, "create tenant: %v", err)
	}
	if w, ok := r.winners(prefixTenant)[prefixTenant+name]; ok && !w.Removed {
		return errorf(ErrConflict, "create tenant %s: already exists", name)
	}
	return r.write(Definition{Tenant: name})
}

// RemoveTenant removes a tenant that has no networks, defined or hand-made
// (on any host, also one still removing a network whose definition is gone).
func (r *Registry) RemoveTenant(name string) error {
	if w, ok := r.winners(prefixTenant)[prefixTenant+name]; !ok || w.Removed {
		return errorf(ErrNotFound, "remove tenant %s: no such tenant", name)
	}
	for _, n := range r.Networks() {
		if n.Tenant == name {
			return errorf(ErrConflict, "remove tenant %s: it still has network %s; remove its networks first", name, n.NetworkKey())
		}
	}
	// A host's network whose definition was just removed is on its way
	// out (each host's engine sync removes it within seconds), but it may
	// as well be a hand-made one of the same name: gossip cannot tell, so
	// it counts, and the refusal says both.
	defs := r.winners(prefixNetwork)
	for _, n := range r.cl.Networks() {
		if n.Tenant != name {
			continue
		}
		if w, ok := defs[prefixNetwork+rules.Key(n.Tenant, n.Name)]; ok && w.Removed {
			return errorf(ErrConflict, "remove tenant %s: host %s still has network %s: it is still removing it after network rm (try again in a few seconds), or it was made there with docker network create", name, n.Host, rules.Key(n.Tenant, n.Name))
		}
		return errorf(ErrConflict, "remove tenant %s: host %s still has network %s (made with docker network create); remove it there first", name, n.Host, n.ID)
	}
	return r.write(Definition{Tenant: name, Removed: true})
}

// CreateNetwork defines a network cluster-wide, after checking it against
// the rules, its tenant, the defined networks and every host's networks.
func (r *Registry) CreateNetwork(d Definition) error {
	what := "create network " + rules.Key(d.Tenant, d.Name)
	d.Removed, d.Gen, d.Origin = false, 0, ""
	if err := rules.Tenant(d.Tenant); err != nil {
		return errorf(ErrInvalid, "%s: %v", what, err)
	}
	if err := rules.Network(d.Name); err != nil {
		return errorf(ErrInvalid, "%s: %v", what, err)
	}
	if w, ok := r.winners(prefixTenant)[prefixTenant+d.Tenant]; !ok || w.Removed {
		return errorf(ErrNotFound, "%s: no tenant %q (tenetctl tenant create %s)", what, d.Tenant, d.Tenant)
	}
	sub, err := netip.ParsePrefix(d.Subnet)
	if err != nil {
		return errorf(ErrInvalid, "%s: subnet %q: must be an IPv4 network in CIDR form", what, d.Subnet)
	}
	if err := rules.Subnet(sub, nil); err != nil {
		return errorf(ErrInvalid, "%s: %v", what, err)
	}
	if r.CheckSubnet != nil {
		if err := r.CheckSubnet(sub); err != nil {
			return errorf(ErrInvalid, "%s: %v", what, err)
		}
	}
	d.Subnet = sub.String()
	if d.VNI == 0 {
		d.VNI = rules.DeriveVNI(d.NetworkKey())
	} else if err := rules.VNI(uint64(d.VNI)); err != nil {
		return errorf(ErrInvalid, "%s: %v", what, err)
	}
	if d.Encrypted && r.CanEncrypt != nil {
		if err := r.CanEncrypt(); err != nil {
			return errkind.Wrap(ErrInvalid, err, "%s: encrypted networks need WireGuard in the kernel of every host, this one's included", what)
		}
	}
	if d.MTU != 0 {
		max := 9000
		if r.MaxMTU != nil {
			if m, err := r.MaxMTU(d.Encrypted); err == nil && m > 0 {
				max = m
			}
		}
		if d.MTU < 1280 || d.MTU > max {
			overhead := "VXLAN overhead"
			if d.Encrypted {
				overhead = "VXLAN and WireGuard overhead"
			}
			return errorf(ErrInvalid, "%s: mtu %d: must be 1280-%d (the underlay's MTU minus the %s)", what, d.MTU, max, overhead)
		}
	}
	existing := []rules.Net{}
	for _, o := range r.Networks() {
		if o.Tenant == d.Tenant && o.Name == d.Name {
			return errorf(ErrConflict, "%s: already exists", what)
		}
		existing = append(existing, rules.Net{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI, Subnet: o.SubnetPrefix()})
	}
	if host, theirs := crypt.Conflict(r.kv, d.NetworkKey(), "", d.Encrypted); host != "" {
		return errorf(ErrConflict, "%s: host %s already has it %s", what, host, crypt.Word(theirs))
	}
	for _, o := range r.cl.Networks() {
		if o.Tenant == d.Tenant && o.Name == d.Name && (o.Subnet != sub || o.VNI != d.VNI) {
			return errorf(ErrConflict, "%s: host %s already has it with subnet %s and vni %d", what, o.Host, o.Subnet, o.VNI)
		}
		existing = append(existing, rules.Net{Tenant: o.Tenant, Name: o.Name, VNI: o.VNI, Subnet: o.Subnet})
	}
	if err := rules.Conflict(rules.Net{Tenant: d.Tenant, Name: d.Name, VNI: d.VNI, Subnet: sub}, existing); err != nil {
		return errorf(ErrConflict, "%s: %v", what, err)
	}
	if r.CheckRealizable != nil {
		if err := r.CheckRealizable(d); err != nil {
			return errorf(ErrConflict, "%s: %v", what, err)
		}
	}
	return r.write(d)
}

// RemoveNetwork removes a defined network; refused while any host this
// host knows of has a container on it.
func (r *Registry) RemoveNetwork(tenant, name string) error {
	key := prefixNetwork + tenant + "/" + name
	w, ok := r.winners(prefixNetwork)[key]
	if !ok || w.Removed {
		return errorf(ErrNotFound, "remove network %s: no such network", rules.Key(tenant, name))
	}
	for _, e := range r.cl.Endpoints(rules.Key(tenant, name)) {
		return errorf(ErrConflict, "remove network %s: container endpoint %.12s on host %s is still attached; stop it first", rules.Key(tenant, name), e.ID, e.Host)
	}
	w.Removed = true
	return r.write(w)
}

// Sync copies every winning definition into this host's own entry, so the
// definition survives its origin host. Call it when the table changes.
func (r *Registry) Sync() {
	for _, prefix := range []string{prefixTenant, prefixNetwork} {
		for key, w := range r.winners(prefix) {
			mine := false
			for _, e := range r.kv.List(key) {
				if e.Key == key && e.Host == r.host {
					var o Definition
					mine = json.Unmarshal(e.Value, &o) == nil && o == w
				}
			}
			if !mine {
				if b, err := json.Marshal(w); err == nil {
					_ = r.kv.Put(key, b)
				}
			}
		}
	}
}

// GossipKV adapts a gossip node to KV.
type GossipKV struct{ Node *gossip.Node }

func (g GossipKV) Put(key string, value []byte) error  { return g.Node.KV().Put(key, value) }
func (g GossipKV) List(prefix string) []gossip.KVEntry { return g.Node.KV().List(prefix) }

// GossipCluster adapts a gossip node to Cluster.
type GossipCluster struct{ Node *gossip.Node }

func (g GossipCluster) Networks() []gossip.Network { return g.Node.Networks().List() }
func (g GossipCluster) Endpoints(network string) []gossip.Endpoint {
	return g.Node.Endpoints().List(network)
}
