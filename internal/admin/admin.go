// Package admin serves the admin API (package adminapi) that tenetctl
// uses: it reads this host's core and gossip's view of the cluster, and
// changes the cluster through the registry and IPAM. A thin front end:
// every rule it applies lives in the package it calls. Safe for concurrent
// use; it keeps no state.
package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tenet-net/tenet/internal/adminapi"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/internal/errkind"
	"github.com/tenet-net/tenet/internal/metrics"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/internal/unixhttp"
)

// Local is what the server reads of this host's core.
type Local interface {
	Networks() []core.Network
	Endpoints() []core.Endpoint
}

// Hosts is what the server needs of IPAM: the hosts it knows of and
// removes.
type Hosts interface {
	RemoveHost(ctx context.Context, names ...string) error
	Hosts() (known, removed []string)
}

// Server answers the admin API.
type Server struct {
	Host        string
	VTEP        string
	HiddenGrace time.Duration
	Core        Local
	Cluster     core.Cluster
	Registry    *registry.Registry // nil: no registry
	IPAM        Hosts              // nil: no IPAM
	KeyInUse    func() string      // fingerprint of the cluster key in use
	// Changed is called after a definition changed, so that the local
	// engine is brought in line at once.
	Changed        func()
	RequestTimeout time.Duration
	// Gossip reads the ring's statistics for status; nil: left out.
	Gossip func() metrics.GossipStats
	// Convergence summarises recent convergence for status; nil: left out.
	Convergence func() metrics.Summary
	// MaxMTU is the largest MTU of a network, encrypted or not, that the
	// underlay carries (the default MTU); nil: unknown.
	MaxMTU func(encrypted bool) (int, error)
	// DiagnoseTimeout bounds a diagnosis (60 s): it reads the whole
	// kernel state.
	DiagnoseTimeout time.Duration
	Logger          *slog.Logger
}

// Writers report the state of the datapath writer: *core.Core.
type Writers interface {
	Writer() core.WriterState
}

// Diagnoser diagnoses this host: *core.Core.
type Diagnoser interface {
	Diagnose(ctx context.Context) ([]core.Finding, error)
}

const maxBody = 1 << 20

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	bad := &unixhttp.RateLog{Logger: s.Logger, Level: slog.LevelWarn, Burst: 5}
	mux := http.NewServeMux()
	get := func(path string, fn func() any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, fn()) })
	}
	get("/v1/status", func() any { return s.Status() })
	get("/v1/hosts", func() any { return s.hosts() })
	get("/v1/networks", func() any { return s.networks() })
	mux.HandleFunc("GET /v1/networks/{tenant}/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, err := s.network(r.PathValue("tenant"), r.PathValue("name"))
		if err != nil {
			bad.Log(r.Context(), "admin call refused", "call", r.Method+" "+r.URL.Path, "err", err)
			writeError(w, status(err), err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r.URL.Query())
		if err != nil {
			bad.Log(r.Context(), "admin call refused", "call", r.Method+" "+r.URL.Path, "err", err)
			writeError(w, status(err), err)
			return
		}
		writeJSON(w, http.StatusOK, s.endpoints(f))
	})
	mux.HandleFunc("GET /v1/diagnose", func(w http.ResponseWriter, r *http.Request) {
		d, err := s.diagnose(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	change := func(w http.ResponseWriter, r *http.Request, fn func() (adminapi.Done, error)) {
		if s.Registry == nil {
			writeError(w, http.StatusNotImplemented, errors.New("this tenetd has no registry"))
			return
		}
		d, err := fn()
		if err != nil {
			bad.Log(r.Context(), "admin call refused", "call", r.Method+" "+r.URL.Path, "err", err)
			writeError(w, status(err), err)
			return
		}
		s.Logger.Info("admin change", "call", r.Method+" "+r.URL.Path)
		if s.Changed != nil {
			s.Changed()
		}
		writeJSON(w, http.StatusOK, d)
	}
	get("/v1/tenants", func() any {
		out := []adminapi.Tenant{}
		if s.Registry != nil {
			for _, t := range s.Registry.Tenants() {
				out = append(out, adminapi.Tenant{Tenant: t.Tenant, Gen: t.Gen, Origin: t.Origin})
			}
		}
		return out
	})
	mux.HandleFunc("POST /v1/tenants/{name}", func(w http.ResponseWriter, r *http.Request) {
		change(w, r, func() (adminapi.Done, error) {
			name := r.PathValue("name")
			return adminapi.Done{Created: name}, s.Registry.CreateTenant(name)
		})
	})
	mux.HandleFunc("DELETE /v1/tenants/{name}", func(w http.ResponseWriter, r *http.Request) {
		change(w, r, func() (adminapi.Done, error) {
			name := r.PathValue("name")
			return adminapi.Done{Removed: name}, s.Registry.RemoveTenant(name)
		})
	})
	get("/v1/definitions", func() any {
		out := []adminapi.Definition{}
		if s.Registry != nil {
			for _, d := range s.Registry.Networks() {
				out = append(out, definition(d))
			}
		}
		return out
	})
	mux.HandleFunc("POST /v1/definitions", func(w http.ResponseWriter, r *http.Request) {
		change(w, r, func() (adminapi.Done, error) {
			var d adminapi.Definition
			dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&d); err != nil {
				return adminapi.Done{}, errkind.Errorf(errkind.Invalid, "create network: malformed request: %v", err)
			}
			def := registry.Definition{Tenant: d.Tenant, Name: d.Name, Subnet: d.Subnet, VNI: d.VNI, Internal: d.Internal, MTU: d.MTU,
				Encrypted: d.Encrypted}
			return adminapi.Done{Created: rules.Key(d.Tenant, d.Name)}, s.Registry.CreateNetwork(def)
		})
	})
	mux.HandleFunc("DELETE /v1/definitions/{tenant}/{name}", func(w http.ResponseWriter, r *http.Request) {
		change(w, r, func() (adminapi.Done, error) {
			t, n := r.PathValue("tenant"), r.PathValue("name")
			return adminapi.Done{Removed: rules.Key(t, n)}, s.Registry.RemoveNetwork(t, n)
		})
	})
	mux.HandleFunc("POST /v1/hosts/{name}/remove", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := s.removeHost(r.Context(), name); err != nil {
			bad.Log(r.Context(), "admin call refused", "call", "remove host", "host", name, "err", err)
			writeError(w, status(err), err)
			return
		}
		s.Logger.Warn("host removed by an admin; its address blocks go to one heir", "host", name)
		writeJSON(w, http.StatusOK, adminapi.Done{Removed: name})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		bad.Log(r.Context(), "unknown admin call", "call", r.Method+" "+r.URL.Path)
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown admin call %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func status(err error) int {
	switch {
	case errors.Is(err, errkind.Invalid):
		return http.StatusBadRequest
	case errors.Is(err, errkind.NotFound):
		return http.StatusNotFound
	}
	return http.StatusConflict
}

func (s *Server) removeHost(ctx context.Context, name string) error {
	if s.IPAM == nil {
		return errors.New("remove host: this tenetd has no IPAM to reclaim space from")
	}
	if name == s.Host {
		return fmt.Errorf("remove host %s: that is this host; run it on another one", name)
	}
	known, removed := s.IPAM.Hosts()
	if slices.Contains(removed, name) {
		return nil // done before; safe to repeat
	}
	ok := slices.Contains(known, name)
	for _, h := range s.Cluster.Hosts() {
		ok = ok || h.Name == name
	}
	if !ok {
		return errkind.Errorf(errkind.NotFound, "remove host %s: no such host in this cluster", name)
	}
	timeout := s.RequestTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := s.IPAM.RemoveHost(ctx, name); err != nil {
		return fmt.Errorf("remove host %s: %w", name, err)
	}
	return nil
}

func definition(d registry.Definition) adminapi.Definition {
	return adminapi.Definition{Tenant: d.Tenant, Name: d.Name, Subnet: d.Subnet, VNI: d.VNI, Internal: d.Internal,
		MTU: d.MTU, Encrypted: d.Encrypted, Gen: d.Gen, Origin: d.Origin, DockerName: d.DockerName()}
}

// hosts lists the cluster's hosts gossip knows, up or down, except those
// an admin removed.
func (s *Server) hosts() []adminapi.Host {
	var removed []string
	if s.IPAM != nil {
		_, removed = s.IPAM.Hosts()
	}
	out := []adminapi.Host{}
	for _, h := range s.Cluster.Hosts() {
		if slices.Contains(removed, h.Name) {
			continue
		}
		hi := adminapi.Host{Name: h.Name, Self: h.Name == s.Host, State: "up", LastSeen: "now"}
		if h.VTEP.IsValid() {
			hi.VTEP = h.VTEP.String()
		}
		if h.Name == s.Host {
			hi.VTEP = s.VTEP
		}
		if !h.Alive && h.Name != s.Host {
			hi.State, hi.LastSeen = "down", "unknown"
			if !h.DownSince.IsZero() {
				hi.LastSeen = h.DownSince.UTC().Format(time.RFC3339)
			}
		}
		out = append(out, hi)
	}
	slices.SortFunc(out, func(a, b adminapi.Host) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// networks merges the networks gossip knows, this host's, and the defined
// ones.
func (s *Server) networks() []adminapi.Network {
	byKey := map[string]*adminapi.Network{}
	for _, c := range s.Cluster.Networks() {
		byKey[c.ID] = &adminapi.Network{Tenant: c.Tenant, Name: c.Name, VNI: c.VNI, Subnet: c.Subnet.String()}
		for _, w := range crypt.Networks(core.ClusterKV{Cluster: s.Cluster}, c.ID) {
			byKey[c.ID].Encrypted = byKey[c.ID].Encrypted || w.Encrypted
		}
	}
	if s.Registry != nil {
		for _, d := range s.Registry.Networks() {
			n := byKey[d.NetworkKey()]
			if n == nil {
				n = &adminapi.Network{Tenant: d.Tenant, Name: d.Name, VNI: d.VNI, Subnet: d.Subnet}
				byKey[d.NetworkKey()] = n
			}
			n.Defined, n.DockerName, n.Internal, n.MTU, n.Encrypted = true, d.DockerName(), d.Internal, d.MTU, d.Encrypted
		}
	}
	for _, l := range s.Core.Networks() {
		n := byKey[l.Key()]
		if n == nil {
			n = &adminapi.Network{Tenant: l.Tenant, Name: l.Name, VNI: l.VNI, Subnet: l.Subnet.String()}
			byKey[l.Key()] = n
		}
		n.Local, n.DockerID, n.Internal, n.MTU, n.Encrypted = true, l.Ref, l.Internal, l.MTU, l.Encrypted
		if l.Gateway.IsValid() {
			n.Gateway = l.Gateway.String()
		}
	}
	out := []adminapi.Network{}
	for key, n := range byKey {
		n.Hosts = []string{}
		for _, p := range s.Cluster.Peers(key) {
			if p.DownSince.IsZero() && p.Host != s.Host {
				n.Hosts = append(n.Hosts, p.Host)
			}
		}
		if n.Local {
			n.Hosts = append(n.Hosts, s.Host)
		}
		slices.Sort(n.Hosts)
		n.Hosts = slices.Compact(n.Hosts)
		out = append(out, *n)
	}
	slices.SortFunc(out, func(a, b adminapi.Network) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// filter selects endpoints (adminapi.EndpointFilter).
type filter struct {
	tenant, network, name, host string
}

func (f filter) keep(e adminapi.Endpoint) bool {
	_, name, _ := strings.Cut(e.Network, "/")
	return (f.tenant == "" || e.Tenant == f.tenant) && (f.network == "" || e.Network == f.network) &&
		(f.name == "" || name == f.name) && (f.host == "" || e.Host == f.host)
}

// parseFilter reads ?tenant=&network=&host=; network is tenant/name or a
// name in any tenant.
func parseFilter(q url.Values) (filter, error) {
	var f filter
	for k := range q {
		if k != "tenant" && k != "network" && k != "host" {
			return f, errkind.Errorf(errkind.Invalid, "list endpoints: unknown filter %q (tenant, network, host)", k)
		}
	}
	f.tenant, f.host = q.Get("tenant"), q.Get("host")
	if f.tenant != "" {
		if err := rules.Tenant(f.tenant); err != nil {
			return f, errkind.Errorf(errkind.Invalid, "list endpoints: %v", err)
		}
	}
	if n := q.Get("network"); strings.Contains(n, "/") {
		t, name, err := rules.SplitKey(n)
		if err != nil {
			return f, errkind.Errorf(errkind.Invalid, "list endpoints: %v", err)
		}
		f.network = rules.Key(t, name)
	} else if n != "" {
		if err := rules.Network(n); err != nil {
			return f, errkind.Errorf(errkind.Invalid, "list endpoints: %v", err)
		}
		f.name = n
	}
	if len(f.host) > 255 {
		return f, errkind.Errorf(errkind.Invalid, "list endpoints: host %.20q...: too long", f.host)
	}
	return f, nil
}

// endpoints lists this host's endpoints and those of other hosts on its
// networks (those of hosts down within the grace period as host-down)
// that f selects.
func (s *Server) endpoints(f filter) []adminapi.Endpoint {
	out := []adminapi.Endpoint{}
	for _, e := range s.Core.Endpoints() {
		a := adminapi.Endpoint{ID: e.ID, Network: e.Network, IP: e.IP.Addr().String(), MAC: e.MAC.String(),
			Host: s.Host, VTEP: s.VTEP, State: "up"}
		if e.Netns == "" {
			a.State = "created"
		}
		a.Tenant, _, _ = strings.Cut(e.Network, "/")
		if len(e.Names) > 0 {
			a.Name, a.Aliases = e.Names[0], e.Names[1:]
		}
		for _, p := range e.Ports {
			a.Ports = append(a.Ports, fmt.Sprintf("%s:%d->%d/%s", p.Reservation().IP, p.HostPort, p.Port, p.Proto))
		}
		if f.keep(a) {
			out = append(out, a)
		}
	}
	now := time.Now()
	for _, n := range s.Core.Networks() {
		for _, r := range s.Cluster.Remotes(n.Key()) {
			if r.Host == s.Host {
				continue
			}
			state := "up"
			if !r.DownSince.IsZero() {
				if now.Sub(r.DownSince) > s.HiddenGrace {
					continue
				}
				state = "host-down"
			}
			tenant, _, _ := strings.Cut(r.Network, "/")
			a := adminapi.Endpoint{ID: r.ID, Tenant: tenant, Network: r.Network, IP: r.IP.String(), MAC: r.MAC.String(),
				Host: r.Host, VTEP: r.VTEP.String(), State: state}
			if len(r.Names) > 0 {
				a.Name, a.Aliases = r.Names[0], r.Names[1:]
			}
			if f.keep(a) {
				out = append(out, a)
			}
		}
	}
	slices.SortFunc(out, func(a, b adminapi.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Network, b.Network), cmp.Compare(a.Host, b.Host), cmp.Compare(a.IP, b.IP), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Status summarises this host's view.
func (s *Server) Status() adminapi.Status {
	hosts, nets, eps := s.hosts(), s.networks(), s.endpoints(filter{})
	st := adminapi.Status{Host: s.Host, VTEP: s.VTEP, Networks: len(nets), Endpoints: len(eps)}
	if s.KeyInUse != nil {
		st.KeyInUse = s.KeyInUse()
	}
	for _, h := range hosts {
		if h.State == "up" {
			st.HostsUp++
		} else {
			st.HostsDown++
			st.Warnings = append(st.Warnings, fmt.Sprintf("host %s is down; its endpoints stay programmed for %v; if it is gone for good: tenetctl host remove %s", h.Name, s.HiddenGrace, h.Name))
		}
	}
	for _, e := range eps {
		if e.Host == s.Host {
			st.LocalEndpoints++
		}
	}
	for _, l := range s.Core.Networks() {
		if c, ok := s.Cluster.Network(l.Key()); ok && c.Host != s.Host && c.Subnet != l.Subnet {
			st.Warnings = append(st.Warnings, fmt.Sprintf("network %s: this host has subnet %s, the cluster %s (host %s)",
				l.Key(), l.Subnet, c.Subnet, c.Host))
		}
	}
	st.Ring = adminapi.Ring{Health: "ok", Members: map[string]int{"alive": st.HostsUp, "down": st.HostsDown}}
	switch {
	case st.HostsDown > 0 && st.HostsUp <= 1:
		st.Ring.Health = "isolated"
	case st.HostsDown > 0:
		st.Ring.Health = "degraded"
	}
	if s.Gossip != nil {
		g := s.Gossip()
		st.Ring.Sent, st.Ring.Received, st.Ring.SendErrors, st.Ring.Dropped = g.Sent, g.Received, g.SendErrors, g.Dropped
		if len(g.Members) > 0 {
			st.Ring.Members = g.Members
		}
	}
	if s.Convergence != nil {
		c := s.Convergence()
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		st.Convergence = adminapi.Convergence{Window: c.Span.String(), Samples: c.Count, P50Ms: ms(c.P50), P99Ms: ms(c.P99), MaxMs: ms(c.Max)}
	}
	if w, ok := s.Core.(Writers); ok {
		ws := w.Writer()
		st.Datapath = adminapi.Datapath{Queued: ws.Queued, BusyMs: ws.Busy.Milliseconds()}
		if ws.LastErr != nil {
			st.Datapath.LastError = ws.LastErr.Error()
		}
		if !ws.RetryAt.IsZero() {
			st.Datapath.RetryAt = ws.RetryAt.UTC().Format(time.RFC3339)
		}
		if ws.LastErr != nil || !ws.RetryAt.IsZero() {
			st.Warnings = append(st.Warnings, "the datapath writer is failing (tenetctl diagnose says what differs; tenetd's log says why)")
		}
	}
	return st
}

// network describes one network with the hosts that have it.
func (s *Server) network(tenant, name string) (adminapi.NetworkDetail, error) {
	key := rules.Key(tenant, name)
	var d adminapi.NetworkDetail
	found := false
	for _, n := range s.networks() {
		if n.Tenant == tenant && n.Name == name {
			d.Network, found = n, true
		}
	}
	if !found {
		return d, errkind.Errorf(errkind.NotFound, "network %s: no such network known here", key)
	}
	counts := map[string]int{}
	d.EndpointsKnown = d.Local
	if d.Local {
		for _, e := range s.Core.Endpoints() {
			if e.Network == key {
				counts[s.Host]++
			}
		}
		for _, r := range s.Cluster.Remotes(key) {
			if r.Host != s.Host {
				counts[r.Host]++
			}
		}
		d.EffectiveMTU = d.MTU
		if d.MTU == 0 && s.MaxMTU != nil {
			if m, err := s.MaxMTU(d.Encrypted); err == nil {
				d.EffectiveMTU = m
			}
		}
	}
	byHost := map[string]adminapi.NetworkHost{}
	for _, p := range s.Cluster.Peers(key) {
		h := adminapi.NetworkHost{Host: p.Host, State: "up", Endpoints: counts[p.Host]}
		if !p.DownSince.IsZero() {
			h.State = "down"
		}
		byHost[p.Host] = h
	}
	if d.Local {
		byHost[s.Host] = adminapi.NetworkHost{Host: s.Host, State: "up", Self: true, Endpoints: counts[s.Host]}
	} else {
		delete(byHost, s.Host)
	}
	for h, n := range counts { // endpoints of a host whose attachment is not seen (yet)
		if _, ok := byHost[h]; !ok {
			byHost[h] = adminapi.NetworkHost{Host: h, State: "up", Endpoints: n}
		}
	}
	d.HostEndpoints = []adminapi.NetworkHost{}
	for _, h := range slices.Sorted(maps.Keys(byHost)) {
		d.HostEndpoints = append(d.HostEndpoints, byHost[h])
	}
	return d, nil
}

// diagnose asks the core what is wrong here.
func (s *Server) diagnose(ctx context.Context) (adminapi.Diagnosis, error) {
	d := adminapi.Diagnosis{Host: s.Host, Findings: []adminapi.Finding{}}
	dg, ok := s.Core.(Diagnoser)
	if !ok {
		return d, errors.New("diagnose: this tenetd cannot diagnose its host")
	}
	timeout := s.DiagnoseTimeout
	if timeout == 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fs, err := dg.Diagnose(ctx)
	if err != nil {
		return d, fmt.Errorf("diagnose: %w", err)
	}
	for _, f := range fs {
		d.Findings = append(d.Findings, adminapi.Finding{Area: f.Area, Problem: f.Problem, Object: f.Object, Tenant: f.Tenant,
			Network: f.Network, Endpoint: f.Endpoint, Host: f.Host, Fix: f.Fix})
	}
	return d, nil
}

// Serve answers the API on a root-only unix socket at path until ctx is
// done.
func (s *Server) Serve(ctx context.Context, path string) error {
	return unixhttp.Serve(ctx, unixhttp.Config{Path: path, DirMode: 0o700, Name: "admin", Logger: s.Logger}, s.Handler())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, adminapi.ErrorBody{Err: err.Error()})
}
