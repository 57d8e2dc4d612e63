package core

import (
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
	// Encrypted: added without a version change (older tenetds ignore
	// it, and a file without it holds no encrypted network).
	Encrypted bool      `json:"encrypted,omitempty"`
	Ref       string    `json:"ref,omitempty"`
	DockerID  string    `json:"docker_id,omitempty"` // version 1's Ref
	Created   time.Time `json:"created,omitzero"`
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
	Created time.Time        `json:"created,omitzero"`
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
			Internal: n.Internal, MTU: n.MTU, Encrypted: n.Encrypted, Ref: n.Ref}
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
		eps[e.ID] = &Endpoint{EndpointSpec: EndpointSpec{ID: e.ID, Network: key, IP: e.IP, MAC: e.MAC, Names: e.Names}, Netns: netns, NetnsSeen: seen, Created: e.Created}
	}
	return nets, eps, nil
}

func encodeState(nets []Network, eps []Endpoint) ([]byte, error) {
	s := savedState{Version: stateVersion, Networks: []savedNetwork{}, Endpoints: []savedEndpoint{}}
	for _, n := range nets {
		s.Networks = append(s.Networks, savedNetwork{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet,
			Gateway: n.Gateway, Internal: n.Internal, MTU: n.MTU, Encrypted: n.Encrypted, Ref: n.Ref, Created: n.Created})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, savedEndpoint{ID: e.ID, Network: e.Network, IP: e.IP, MAC: e.MAC, Names: e.Names, Netns: e.Netns, Seen: e.NetnsSeen, Created: e.Created})
	}
	slices.SortFunc(s.Networks, func(a, b savedNetwork) int { return cmp.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) })
	slices.SortFunc(s.Endpoints, func(a, b savedEndpoint) int { return cmp.Compare(a.ID, b.ID) })
	return json.MarshalIndent(s, "", "  ")
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
		b, err := encodeState(nets, eps)
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
