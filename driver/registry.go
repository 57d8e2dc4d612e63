package driver

// The cluster's registry of tenants and networks defined by admins
// (tenetctl tenant create, tenetctl network create), kept in gossip's
// key-value table, and its reconciliation into the local Docker engine:
// every host creates the Docker network of every defined network, so that
// docker run --network <tenant>-<name> works everywhere.
//
// Each definition is a last-writer-wins register over owner-writes-only
// entries: a write carries a generation (the KV version of the write that
// made it) and its origin host; the entry with the highest (generation,
// origin) among all hosts' entries under a key wins, and a removal is a
// winning entry marked removed. Every host copies the winner into its own
// entry, so a definition outlives the host that made it.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

const (
	kvTenant  = "tenant/"
	kvNetwork = "network/"
)

// Definition is a tenant ("tenant/<name>") or a network
// ("network/<tenant>/<name>") as an admin defined it.
type Definition struct {
	Tenant   string `json:"tenant"`
	Name     string `json:"name,omitempty"` // empty for a tenant
	Subnet   string `json:"subnet,omitempty"`
	VNI      uint32 `json:"vni,omitempty"`
	Internal bool   `json:"internal,omitempty"`
	MTU      int    `json:"mtu,omitempty"`

	Removed bool   `json:"removed,omitempty"`
	Gen     uint64 `json:"gen"`    // generation of the write that made it
	Origin  string `json:"origin"` // host that made it
}

func (d Definition) key() string {
	if d.Name == "" {
		return kvTenant + d.Tenant
	}
	return kvNetwork + d.Tenant + "/" + d.Name
}

// valid applies the admin API's rules to a definition read from the
// cluster, so that a bad entry from a peer is ignored, not acted on.
func (d Definition) valid() bool {
	if !tenantPattern.MatchString(d.Tenant) {
		return false
	}
	if d.Name == "" || d.Removed {
		return d.Name == "" || networkPattern.MatchString(d.Name)
	}
	p, err := netip.ParsePrefix(d.Subnet)
	return networkPattern.MatchString(d.Name) && err == nil && p.Addr().Is4() && p == p.Masked() &&
		d.VNI >= overlay.MinVNI && d.VNI <= overlay.MaxVNI && (d.MTU == 0 || d.MTU >= overlay.MinMTU && d.MTU <= overlay.MaxMTU)
}

// DockerName is the name of the network in every engine.
func (d Definition) DockerName() string { return d.Tenant + "-" + d.Name }

// KV is what the registry needs of gossip's key-value table.
type KV interface {
	Put(key string, value []byte) error
	List(prefix string) []gossip.KVEntry
}

// GossipKV adapts a gossip node to KV.
type GossipKV struct{ Node *gossip.Node }

func (g GossipKV) Put(key string, value []byte) error  { return g.Node.KV().Put(key, value) }
func (g GossipKV) List(prefix string) []gossip.KVEntry { return g.Node.KV().List(prefix) }

// winners returns the winning definition of every key under prefix.
func winners(kv KV, prefix string) map[string]Definition {
	out := map[string]Definition{}
	for _, e := range kv.List(prefix) {
		var d Definition
		if json.Unmarshal(e.Value, &d) != nil || d.key() != e.Key || !d.valid() {
			continue // malformed, mislabelled or invalid: ignored
		}
		if w, ok := out[e.Key]; !ok || cmp.Or(cmp.Compare(d.Gen, w.Gen), cmp.Compare(d.Origin, w.Origin)) > 0 {
			out[e.Key] = d
		}
	}
	return out
}

// writeDefinition publishes d as the newest write of its key.
func (d *Driver) writeDefinition(def Definition) error {
	var gen uint64
	for _, e := range d.kv.List(def.key()) {
		if e.Key == def.key() {
			var o Definition
			if json.Unmarshal(e.Value, &o) == nil {
				gen = max(gen, o.Gen)
			}
			gen = max(gen, e.Version)
		}
	}
	def.Gen, def.Origin = gen+1, d.cfg.Host
	b, err := json.Marshal(def)
	if err != nil {
		return err
	}
	return d.kv.Put(def.key(), b)
}

// liveNetworks and liveTenants list definitions that are not removed.
func (d *Driver) liveDefinitions(prefix string) []Definition {
	out := []Definition{}
	for _, w := range winners(d.kv, prefix) {
		if !w.Removed {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b Definition) int { return cmp.Compare(a.key(), b.key()) })
	return out
}

// CreateTenant defines a tenant cluster-wide.
func (d *Driver) CreateTenant(name string) error {
	if !tenantPattern.MatchString(name) {
		return fmt.Errorf("create tenant %q: must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit", name)
	}
	if w, ok := winners(d.kv, kvTenant)[kvTenant+name]; ok && !w.Removed {
		return fmt.Errorf("create tenant %s: already exists", name)
	}
	return d.writeDefinition(Definition{Tenant: name})
}

// RemoveTenant removes a tenant that has no networks.
func (d *Driver) RemoveTenant(name string) error {
	if w, ok := winners(d.kv, kvTenant)[kvTenant+name]; !ok || w.Removed {
		return fmt.Errorf("remove tenant %s: no such tenant", name)
	}
	for _, n := range d.liveDefinitions(kvNetwork) {
		if n.Tenant == name {
			return fmt.Errorf("remove tenant %s: it still has network %s/%s; remove its networks first", name, n.Tenant, n.Name)
		}
	}
	return d.writeDefinition(Definition{Tenant: name, Removed: true})
}

// Tenants lists the defined tenants.
func (d *Driver) Tenants() []Definition { return d.liveDefinitions(kvTenant) }

// DefinedNetworks lists the networks admins defined.
func (d *Driver) DefinedNetworks() []Definition { return d.liveDefinitions(kvNetwork) }

// CreateDefinedNetwork defines a network cluster-wide, after checking it
// against the tenant and the other networks.
func (d *Driver) CreateDefinedNetwork(def Definition) error {
	what := fmt.Sprintf("create network %s/%s", def.Tenant, def.Name)
	if w, ok := winners(d.kv, kvTenant)[kvTenant+def.Tenant]; !ok || w.Removed {
		return fmt.Errorf("%s: no tenant %q (tenetctl tenant create %s)", what, def.Tenant, def.Tenant)
	}
	if !networkPattern.MatchString(def.Name) {
		return fmt.Errorf("%s: name must be 1-64 of a-z, 0-9, '_', '.' and '-'", what)
	}
	sub, err := netip.ParsePrefix(def.Subnet)
	if err != nil || !sub.Addr().Is4() || sub != sub.Masked() || sub.Bits() > 30 {
		return fmt.Errorf("%s: subnet %q: must be an IPv4 network in CIDR form, /30 or larger", what, def.Subnet)
	}
	if def.VNI == 0 {
		def.VNI = deriveVNI(def.Tenant + "/" + def.Name)
	}
	if def.VNI > overlay.MaxVNI {
		return fmt.Errorf("%s: vni %d: must be %d-%d", what, def.VNI, overlay.MinVNI, overlay.MaxVNI)
	}
	if def.MTU != 0 && (def.MTU < overlay.MinMTU || def.MTU > overlay.MaxMTU) {
		return fmt.Errorf("%s: mtu %d: must be %d-%d", what, def.MTU, overlay.MinMTU, overlay.MaxMTU)
	}
	for _, o := range d.DefinedNetworks() {
		if o.Tenant == def.Tenant && o.Name == def.Name {
			return fmt.Errorf("%s: already exists", what)
		}
		if o.VNI == def.VNI {
			return fmt.Errorf("%s: vni %d is already used by network %s/%s", what, def.VNI, o.Tenant, o.Name)
		}
		if os, err := netip.ParsePrefix(o.Subnet); err == nil && o.Tenant == def.Tenant && os.Overlaps(sub) {
			return fmt.Errorf("%s: subnet %s overlaps network %s/%s (%s) of the same tenant", what, sub, o.Tenant, o.Name, os)
		}
	}
	def.Subnet = sub.String()
	return d.writeDefinition(def)
}

// RemoveDefinedNetwork removes a network cluster-wide; refused while any
// host has a container on it.
func (d *Driver) RemoveDefinedNetwork(tenant, name string) error {
	key := kvNetwork + tenant + "/" + name
	w, ok := winners(d.kv, kvNetwork)[key]
	if !ok || w.Removed {
		return fmt.Errorf("remove network %s/%s: no such network", tenant, name)
	}
	for _, e := range d.Endpoints() {
		if e.Network == tenant+"/"+name {
			return fmt.Errorf("remove network %s/%s: container endpoint %.12s on host %s is still attached; stop it first", tenant, name, e.ID, e.Host)
		}
	}
	w.Removed = true
	return d.writeDefinition(w)
}

// syncRegistry copies winning definitions into this host's own entries and
// makes the local engine hold exactly the defined networks' Docker
// networks. Errors are logged; the next round retries.
func (d *Driver) syncRegistry(ctx context.Context) {
	if d.kv == nil || d.engine == nil {
		return
	}
	for _, prefix := range []string{kvTenant, kvNetwork} {
		for key, w := range winners(d.kv, prefix) {
			mine := false
			for _, e := range d.kv.List(key) {
				if e.Key == key && e.Host == d.cfg.Host {
					var o Definition
					mine = json.Unmarshal(e.Value, &o) == nil && o == w
				}
			}
			if !mine {
				if b, err := json.Marshal(w); err == nil {
					_ = d.kv.Put(key, b)
				}
			}
		}
	}
	for key, w := range winners(d.kv, kvNetwork) {
		exists, err := d.engine.exists(ctx, w.DockerName())
		if err != nil {
			d.log.Warn("ask the engine about a defined network", "network", key, "err", err)
			continue
		}
		switch {
		case !w.Removed && !exists:
			if err := d.engine.create(ctx, w); err != nil {
				d.log.Warn("create a defined network in the engine", "network", key, "err", err)
			} else {
				d.log.Info("created defined network in the engine", "network", key, "docker_name", w.DockerName())
			}
		case w.Removed && exists:
			if err := d.engine.remove(ctx, w.DockerName()); err != nil {
				d.log.Warn("remove a defined network from the engine", "network", key, "err", err)
			} else {
				d.log.Info("removed defined network from the engine", "network", key)
			}
		}
	}
}

// engine talks to the local Docker engine's API over its unix socket.
type engine struct {
	client *http.Client
}

func newEngine(socket string) *engine {
	return &engine{client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		}}}}
}

func (e *engine) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v1.41"+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (e *engine) exists(ctx context.Context, name string) (bool, error) {
	status, body, err := e.do(ctx, http.MethodGet, "/networks/"+url.PathEscape(name), nil)
	switch {
	case err != nil:
		return false, err
	case status == http.StatusOK:
		return true, nil
	case status == http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("inspect network %s: %d %s", name, status, strings.TrimSpace(string(body)))
}

func (e *engine) create(ctx context.Context, def Definition) error {
	opts := map[string]string{OptTenant: def.Tenant, OptNetwork: def.Name, OptVNI: fmt.Sprint(def.VNI)}
	if def.MTU != 0 {
		opts[OptMTU] = fmt.Sprint(def.MTU)
	}
	req := map[string]any{
		"Name": def.DockerName(), "Driver": PluginName, "CheckDuplicate": true, "Internal": def.Internal,
		"Options": opts,
		"IPAM": map[string]any{"Driver": PluginName, "Options": map[string]string{"tenant": def.Tenant},
			"Config": []map[string]string{{"Subnet": def.Subnet}}},
	}
	status, body, err := e.do(ctx, http.MethodPost, "/networks/create", req)
	if err != nil {
		return err
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return fmt.Errorf("create network %s: %d %s", def.DockerName(), status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (e *engine) remove(ctx context.Context, name string) error {
	status, body, err := e.do(ctx, http.MethodDelete, "/networks/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	if status != http.StatusNoContent && status != http.StatusOK && status != http.StatusNotFound {
		return fmt.Errorf("remove network %s: %d %s", name, status, strings.TrimSpace(string(body)))
	}
	return nil
}

var errNoRegistry = errors.New("this tenetd has no registry (no key-value table or engine socket)")
