package core

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tenet-net/tenet/internal/atomicfile"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// stateVersion is the format of state.json. Version 1 (tenetd before the
// core) keyed endpoints by Docker network ID and also held a copy of other
// hosts' state, which is ignored now.
const stateVersion = 2

type savedState struct {
	Version   int             `json:"version"`
	Networks  []savedNetwork  `json:"networks"`
	Endpoints []savedEndpoint `json:"endpoints"`
}

type savedNetwork struct {
	Tenant   string       `json:"tenant"`
	Name     string       `json:"name"`
	VNI      uint32       `json:"vni"`
	Subnet   netip.Prefix `json:"subnet"`
	Gateway  netip.Addr   `json:"gateway,omitzero"`
	Internal bool         `json:"internal,omitempty"`
	MTU      int          `json:"mtu,omitempty"`
	Ref      string       `json:"ref,omitempty"`
	DockerID string       `json:"docker_id,omitempty"` // version 1's Ref
	Created  time.Time    `json:"created,omitzero"`
}

type savedEndpoint struct {
	ID      string           `json:"id"`
	Network string           `json:"network"` // key; version 1: the Docker network ID
	IP      netip.Prefix     `json:"ip"`
	MAC     net.HardwareAddr `json:"mac"`
	Names   []string         `json:"names,omitempty"`
	Netns   string           `json:"netns,omitempty"`
	Seen    bool             `json:"netns_seen,omitempty"`
	Sandbox string           `json:"sandbox,omitempty"` // version 1's Netns
	Ports   []savedPort      `json:"ports,omitempty"`
	Created time.Time        `json:"created,omitzero"`
}

type savedPort struct {
	Proto    string     `json:"proto"` // "tcp", "udp"
	HostIP   netip.Addr `json:"host_ip,omitzero"`
	HostPort uint16     `json:"host_port"`
	Port     uint16     `json:"port"`
}

func savePorts(ps []PortBinding) []savedPort {
	var out []savedPort
	for _, p := range ps {
		out = append(out, savedPort{Proto: p.Proto.String(), HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	return out
}

// loadPorts reads saved ports back; ok is false if one breaks the rules.
func loadPorts(ps []savedPort) (out []PortBinding, ok bool) {
	for _, p := range ps {
		proto := map[string]overlay.Proto{"tcp": overlay.TCP, "udp": overlay.UDP}[p.Proto]
		r := PortRequest{Proto: proto, HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port}
		if proto == 0 || p.HostPort == 0 || r.check() != nil {
			return nil, false
		}
		if r.anyHost() {
			r.HostIP = netip.Addr{}
		}
		out = append(out, PortBinding{Proto: proto, HostIP: r.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	return out, true
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState reads state.json (either version). Entries that no longer pass
// validation are dropped with a warning through warn.
func loadState(dir string, warn func(msg string, args ...any)) (map[string]*Network, map[string]*Endpoint, error) {
	nets, eps := map[string]*Network{}, map[string]*Endpoint{}
	b, err := atomicfile.Read(statePath(dir))
	if err != nil || b == nil {
		return nets, eps, err
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("core: read %s: %w", statePath(dir), err)
	}
	if s.Version > stateVersion {
		return nil, nil, fmt.Errorf("core: read %s: format version %d is newer than this tenetd's %d", statePath(dir), s.Version, stateVersion)
	}
	byRef := map[string]string{}
	for _, n := range s.Networks {
		spec := NetworkSpec{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet, Gateway: n.Gateway,
			Internal: n.Internal, MTU: n.MTU, Ref: n.Ref}
		if spec.Ref == "" {
			spec.Ref = n.DockerID
		}
		if err := rules.Tenant(spec.Tenant); err != nil {
			warn("dropping a saved network", "network", spec.Key(), "err", err)
			continue
		}
		nets[spec.Key()] = &Network{NetworkSpec: spec, Created: n.Created}
		if spec.Ref != "" {
			byRef[spec.Ref] = spec.Key()
		}
	}
	for _, e := range s.Endpoints {
		key := e.Network
		if s.Version < 2 {
			key = byRef[e.Network]
		}
		if nets[key] == nil {
			warn("dropping a saved endpoint of an unknown network", "endpoint", e.ID, "network", e.Network)
			continue
		}
		netns := e.Netns
		if netns == "" {
			netns = e.Sandbox
		}
		// Version 1 did not record whether the namespace was seen; an
		// endpoint it knew had joined long ago.
		seen := e.Seen || s.Version < 2
		ports, ok := loadPorts(e.Ports)
		if !ok {
			warn("dropping the published ports of a saved endpoint: one breaks the rules", "endpoint", e.ID)
		}
		eps[e.ID] = &Endpoint{EndpointSpec: EndpointSpec{ID: e.ID, Network: key, IP: e.IP, MAC: e.MAC, Names: e.Names}, Netns: netns, NetnsSeen: seen,
			Ports: ports, Created: e.Created}
	}
	dropClashingPorts(eps, warn)
	return nets, eps, nil
}

// dropClashingPorts drops the published ports of a saved endpoint (in ID
// order) that publishes a host port an earlier one has, or one host port
// in ways that clash, so that an edited state file cannot make every
// reconcile fail.
func dropClashingPorts(eps map[string]*Endpoint, warn func(msg string, args ...any)) {
	ids := make([]string, 0, len(eps))
	for id := range eps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	owner := map[l4]string{}
	for _, id := range ids {
		e := eps[id]
		mine := map[l4][]PortBinding{}
		ok := true
		for _, p := range e.Ports {
			k := l4{p.Proto, p.HostPort}
			if _, taken := owner[k]; taken {
				ok = false
			}
			for _, m := range mine[k] {
				if m.Port != p.Port || m.Reservation().IP.IsUnspecified() || p.Reservation().IP.IsUnspecified() || m.HostIP == p.HostIP {
					ok = false
				}
			}
			mine[k] = append(mine[k], p)
		}
		if !ok {
			warn("dropping the published ports of a saved endpoint: they clash", "endpoint", id)
			e.Ports = nil
			continue
		}
		for k := range mine {
			owner[k] = id
		}
	}
}

func encodeState(nets []Network, eps []Endpoint) ([]byte, error) {
	s := savedState{Version: stateVersion, Networks: []savedNetwork{}, Endpoints: []savedEndpoint{}}
	for _, n := range nets {
		s.Networks = append(s.Networks, saveNetwork(n))
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, saveEndpoint(e))
	}
	slices.SortFunc(s.Networks, func(a, b savedNetwork) int { return cmp.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) })
	slices.SortFunc(s.Endpoints, func(a, b savedEndpoint) int { return cmp.Compare(a.ID, b.ID) })
	return json.Marshal(s) // no indentation: it doubled the cost of every save
}

func saveNetwork(n Network) savedNetwork {
	return savedNetwork{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet,
		Gateway: n.Gateway, Internal: n.Internal, MTU: n.MTU, Ref: n.Ref, Created: n.Created}
}

func saveEndpoint(e Endpoint) savedEndpoint {
	return savedEndpoint{ID: e.ID, Network: e.Network, IP: e.IP, MAC: e.MAC, Names: e.Names, Netns: e.Netns, Seen: e.NetnsSeen,
		Ports: savePorts(e.Ports), Created: e.Created}
}

func (a savedEndpoint) equal(b savedEndpoint) bool {
	return a.ID == b.ID && a.Network == b.Network && a.IP == b.IP && bytes.Equal(a.MAC, b.MAC) && slices.Equal(a.Names, b.Names) &&
		a.Netns == b.Netns && a.Seen == b.Seen && a.Sandbox == b.Sandbox && slices.Equal(a.Ports, b.Ports) && a.Created == b.Created
}

// stateEncoder writes what encodeState writes, byte for byte, encoding
// again only the endpoints that changed since its last call: encoding
// every endpoint on every save took 4.5 ms at 1,000 endpoints, twice per
// docker run. Only the saver's goroutine uses it.
type stateEncoder struct {
	eps map[string]*encodedEndpoint // by ID, as of the last call
	gen uint64                      // calls so far
}

type encodedEndpoint struct {
	saved savedEndpoint
	json  []byte
	gen   uint64 // the last call that saw it
}

// encode takes nets and eps as snapshot returns them.
func (se *stateEncoder) encode(nets []Network, eps []Endpoint) ([]byte, error) {
	saved := make([]savedNetwork, 0, len(nets))
	for _, n := range nets {
		saved = append(saved, saveNetwork(n))
	}
	slices.SortFunc(saved, func(a, b savedNetwork) int { return cmp.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) })
	nj, err := json.Marshal(saved)
	if err != nil {
		return nil, err
	}
	if se.eps == nil {
		se.eps = map[string]*encodedEndpoint{}
	}
	se.gen++
	list := make([]*encodedEndpoint, 0, len(eps))
	size := 0
	for _, e := range eps {
		s := saveEndpoint(e)
		enc := se.eps[e.ID]
		if enc == nil || !enc.saved.equal(s) {
			b, err := json.Marshal(s)
			if err != nil {
				return nil, err
			}
			// Kept apart from the endpoint's own slices, which a later
			// change could alter in place.
			s.Names, s.MAC = slices.Clone(s.Names), bytes.Clone(s.MAC)
			enc = &encodedEndpoint{saved: s, json: b}
			se.eps[e.ID] = enc
		}
		enc.gen = se.gen
		list = append(list, enc)
		size += len(enc.json) + 1
	}
	for id, enc := range se.eps {
		if enc.gen != se.gen {
			delete(se.eps, id)
		}
	}
	byID := func(a, b *encodedEndpoint) int { return cmp.Compare(a.saved.ID, b.saved.ID) }
	if !slices.IsSortedFunc(list, byID) {
		slices.SortFunc(list, byID)
	}
	out := make([]byte, 0, size+len(nj)+64)
	out = fmt.Appendf(out, `{"version":%d,"networks":`, stateVersion)
	out = append(out, nj...)
	out = append(out, `,"endpoints":[`...)
	for i, e := range list {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e.json...)
	}
	return append(out, "]}"...), nil
}

// saver is the one goroutine that writes state.json. A caller asks for the
// state as it is now to be on disk and waits; requests that arrive while a
// write is in progress are served by the next write, which holds them all.
type saver struct {
	c    *Core
	mu   sync.Mutex // guards the fields below
	want uint64     // generations asked for
	done uint64     // generation last written
	err  error      // result of the last write
	cond chan struct{}
	wake chan struct{}
	enc  stateEncoder // run's own
}

func newSaver(c *Core) *saver {
	return &saver{c: c, cond: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// save waits until the state as it is when save is called is on disk.
func (s *saver) save(ctx context.Context) error {
	s.mu.Lock()
	s.want++
	gen := s.want
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	for {
		s.mu.Lock()
		done, err, cond := s.done, s.err, s.cond
		s.mu.Unlock()
		if done >= gen {
			return err
		}
		select {
		case <-cond:
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting to save the state: %w", ctx.Err())
		}
	}
}

func (s *saver) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		gen := s.want
		s.mu.Unlock()
		nets, eps := s.c.snapshot()
		b, err := s.enc.encode(nets, eps)
		if err == nil {
			err = atomicfile.Write(statePath(s.c.cfg.StateDir), b, 0o600)
		}
		if err != nil {
			err = fmt.Errorf("save state: %w", err)
		}
		s.mu.Lock()
		s.done, s.err = gen, err
		close(s.cond)
		s.cond = make(chan struct{})
		s.mu.Unlock()
	}
}
