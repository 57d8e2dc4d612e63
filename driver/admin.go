package driver

// The admin view: what tenetctl shows. Read-only for now.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// HostInfo is a host of the cluster as this host sees it.
type HostInfo struct {
	Name     string `json:"name"`
	VTEP     string `json:"vtep"`
	State    string `json:"state"` // "up" or "down"
	Self     bool   `json:"self,omitempty"`
	LastSeen string `json:"last_seen"` // "now" while up, else when it went down (RFC 3339)
}

// NetworkInfo is a Tenet network known to this host.
type NetworkInfo struct {
	Tenant   string   `json:"tenant"`
	Name     string   `json:"name"`
	VNI      uint32   `json:"vni"`
	Subnet   string   `json:"subnet"`
	Gateway  string   `json:"gateway,omitempty"`
	Internal bool     `json:"internal,omitempty"`
	Local    bool     `json:"local"` // created in this host's engine
	DockerID string   `json:"docker_id,omitempty"`
	Hosts    []string `json:"hosts"` // hosts that have it
}

// EndpointInfo is a container endpoint somewhere in the cluster.
type EndpointInfo struct {
	ID      string `json:"id"`
	Network string `json:"network"` // tenant/name
	IP      string `json:"ip"`
	MAC     string `json:"mac"`
	Host    string `json:"host"`
	VTEP    string `json:"vtep"`
	State   string `json:"state"` // "up", or "host-down" while kept programmed in the grace period
}

// Status summarises this host.
type Status struct {
	Host           string   `json:"host"`
	VTEP           string   `json:"vtep"`
	HostsUp        int      `json:"hosts_up"`
	HostsDown      int      `json:"hosts_down"`
	Networks       int      `json:"networks"`
	LocalEndpoints int      `json:"local_endpoints"`
	Endpoints      int      `json:"endpoints"`
	KeyInUse       string   `json:"key_in_use,omitempty"` // fingerprint of the cluster key this host encrypts with
	Warnings       []string `json:"warnings,omitempty"`
}

// Hosts lists the cluster's hosts: those gossip reports up, and those that
// have entries kept in the grace period (down).
func (d *Driver) Hosts() []HostInfo {
	members := d.cl.Members()
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	out := []HostInfo{}
	for _, m := range members {
		seen[m.Name] = true
		out = append(out, HostInfo{Name: m.Name, VTEP: m.VTEP.String(), State: "up", Self: m.Name == d.cfg.Host, LastSeen: "now"})
	}
	for name, vtep := range d.vteps {
		if !seen[name] {
			out = append(out, HostInfo{Name: name, VTEP: vtep.String(), State: "down", LastSeen: d.downSinceLocked(name)})
		}
	}
	slices.SortFunc(out, func(a, b HostInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// downSinceLocked is when a host's entries were hidden, as far as this
// driver saw, or "unknown".
func (d *Driver) downSinceLocked(host string) string {
	var since time.Time
	for _, hosts := range d.attached {
		if t, ok := hosts[host]; ok && !t.IsZero() && (since.IsZero() || t.Before(since)) {
			since = t
		}
	}
	for _, r := range d.remotes {
		if r.ep.Host == host && !r.hiddenSince.IsZero() && (since.IsZero() || r.hiddenSince.Before(since)) {
			since = r.hiddenSince
		}
	}
	if since.IsZero() {
		return "unknown"
	}
	return since.UTC().Format(time.RFC3339)
}

// Networks lists the cluster's networks and this host's.
func (d *Driver) Networks() []NetworkInfo {
	cluster := d.cl.Networks()
	d.mu.Lock()
	defer d.mu.Unlock()
	byKey := map[string]*NetworkInfo{}
	for _, c := range cluster {
		byKey[c.ID] = &NetworkInfo{Tenant: c.Tenant, Name: c.Name, VNI: c.VNI, Subnet: c.Subnet.String()}
	}
	for _, n := range d.nets {
		i := byKey[n.key()]
		if i == nil {
			i = &NetworkInfo{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet.String()}
			byKey[n.key()] = i
		}
		i.Local, i.DockerID, i.Internal = true, n.DockerID, n.Internal
		if n.Gateway.IsValid() {
			i.Gateway = n.Gateway.String()
		}
	}
	out := []NetworkInfo{}
	for key, i := range byKey {
		for h, since := range d.attached[key] {
			if since.IsZero() {
				i.Hosts = append(i.Hosts, h)
			}
		}
		if i.Local {
			i.Hosts = append(i.Hosts, d.cfg.Host)
		}
		slices.Sort(i.Hosts)
		i.Hosts = slices.Compact(i.Hosts)
		out = append(out, *i)
	}
	slices.SortFunc(out, func(a, b NetworkInfo) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Endpoints lists this host's endpoints and those of other hosts on the
// networks this host has.
func (d *Driver) Endpoints() []EndpointInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []EndpointInfo{}
	for _, e := range d.eps {
		out = append(out, EndpointInfo{ID: e.ID, Network: d.nets[e.Network].key(), IP: e.IP.Addr().String(),
			MAC: e.MAC.String(), Host: d.cfg.Host, VTEP: d.cfg.VTEP.String(), State: "up"})
	}
	for _, r := range d.remotes {
		state := "up"
		if !r.hiddenSince.IsZero() {
			state = "host-down"
		}
		out = append(out, EndpointInfo{ID: r.ep.ID, Network: r.ep.Network, IP: r.ep.IP.String(), MAC: r.ep.MAC.String(),
			Host: r.ep.Host, VTEP: r.ep.VTEP.String(), State: state})
	}
	slices.SortFunc(out, func(a, b EndpointInfo) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.Host, b.Host), cmp.Compare(a.IP, b.IP))
	})
	return out
}

// Status summarises this host's view.
func (d *Driver) Status() Status {
	hosts, nets, eps := d.Hosts(), d.Networks(), d.Endpoints()
	s := Status{Host: d.cfg.Host, VTEP: d.cfg.VTEP.String(), Networks: len(nets), Endpoints: len(eps)}
	if k, ok := d.cl.(interface{ KeyInUse() string }); ok {
		s.KeyInUse = k.KeyInUse()
	}
	for _, h := range hosts {
		if h.State == "up" {
			s.HostsUp++
		} else {
			s.HostsDown++
			s.Warnings = append(s.Warnings, fmt.Sprintf("host %s is down; its endpoints stay programmed for %v", h.Name, d.cfg.HiddenGrace))
		}
	}
	for _, e := range eps {
		if e.Host == d.cfg.Host {
			s.LocalEndpoints++
		}
	}
	for _, n := range nets {
		if c, ok := d.cl.Network(n.Tenant + "/" + n.Name); ok && n.Local && c.Subnet.String() != n.Subnet {
			s.Warnings = append(s.Warnings, fmt.Sprintf("network %s/%s: this host has subnet %s, the cluster %s (host %s)",
				n.Tenant, n.Name, n.Subnet, c.Subnet, c.Host))
		}
	}
	return s
}

// AdminHandler serves the admin API tenetctl uses: GET /v1/status,
// /v1/hosts, /v1/networks, /v1/endpoints, and POST /v1/hosts/NAME/remove
// (reclaim the address space of a host gone for good), all JSON.
func (d *Driver) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	get := func(path string, fn func() any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, fn()) })
	}
	get("/v1/status", func() any { return d.Status() })
	get("/v1/hosts", func() any { return d.Hosts() })
	get("/v1/networks", func() any { return d.Networks() })
	get("/v1/endpoints", func() any { return d.Endpoints() })
	registry := func(w http.ResponseWriter) bool {
		if d.kv == nil {
			writeError(w, http.StatusNotImplemented, errNoRegistry)
			return false
		}
		return true
	}
	done := func(w http.ResponseWriter, err error, v any) {
		if err != nil {
			writeError(w, http.StatusConflict, err)
			return
		}
		d.kickRegistry()
		writeJSON(w, http.StatusOK, v)
	}
	mux.HandleFunc("GET /v1/tenants", func(w http.ResponseWriter, r *http.Request) {
		if registry(w) {
			writeJSON(w, http.StatusOK, d.Tenants())
		}
	})
	mux.HandleFunc("POST /v1/tenants/{name}", func(w http.ResponseWriter, r *http.Request) {
		if registry(w) {
			done(w, d.CreateTenant(r.PathValue("name")), map[string]string{"created": r.PathValue("name")})
		}
	})
	mux.HandleFunc("DELETE /v1/tenants/{name}", func(w http.ResponseWriter, r *http.Request) {
		if registry(w) {
			done(w, d.RemoveTenant(r.PathValue("name")), map[string]string{"removed": r.PathValue("name")})
		}
	})
	mux.HandleFunc("GET /v1/definitions", func(w http.ResponseWriter, r *http.Request) {
		if registry(w) {
			writeJSON(w, http.StatusOK, d.DefinedNetworks())
		}
	})
	mux.HandleFunc("POST /v1/definitions", func(w http.ResponseWriter, r *http.Request) {
		if !registry(w) {
			return
		}
		var def Definition
		if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBody)).Decode(&def); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("create network: malformed request: %w", err))
			return
		}
		def.Removed, def.Gen, def.Origin = false, 0, ""
		done(w, d.CreateDefinedNetwork(def), map[string]string{"created": def.Tenant + "/" + def.Name})
	})
	mux.HandleFunc("DELETE /v1/definitions/{tenant}/{name}", func(w http.ResponseWriter, r *http.Request) {
		if registry(w) {
			t, n := r.PathValue("tenant"), r.PathValue("name")
			done(w, d.RemoveDefinedNetwork(t, n), map[string]string{"removed": t + "/" + n})
		}
	})
	mux.HandleFunc("POST /v1/hosts/{name}/remove", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		rm, ok := d.ipam.(interface {
			RemoveHost(ctx context.Context, names ...string) error
		})
		if !ok {
			writeError(w, http.StatusNotImplemented, errors.New("this tenetd has no IPAM to reclaim space from"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d.cfg.RequestTimeout)
		defer cancel()
		if err := rm.RemoveHost(ctx, name); err != nil {
			writeError(w, http.StatusConflict, fmt.Errorf("remove host %s: %w", name, err))
			return
		}
		d.log.Warn("host removed by an admin; its address blocks go to one heir", "host", name)
		writeJSON(w, http.StatusOK, map[string]string{"removed": name})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown admin call %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// ServeAdmin answers the admin API on a root-only unix socket at path until
// ctx is done.
func (d *Driver) ServeAdmin(ctx context.Context, path string) error {
	return d.serveUnix(ctx, path, 0o700, "admin", d.AdminHandler())
}
