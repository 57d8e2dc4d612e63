package ipam

// Persisted state: what a restarted tenetd needs to keep every allocation
// and never re-accept a block it already handed away. Encoded as versioned
// JSON; decodeState validates every field, since the bytes come from disk.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
)

const stateVersion = 1

type persistedState struct {
	Version int                   `json:"version"`
	Seq     uint64                `json:"seq"`
	Pools   []persistedPool       `json:"pools"`
	Own     map[string]blockEntry `json:"own"`     // this host's block entries by key
	Removed []string              `json:"removed"` // hosts known to be removed
	Fenced  bool                  `json:"fenced"`  // this host was removed
}

type persistedPool struct {
	Tenant  string       `json:"tenant"`
	Subnet  netip.Prefix `json:"subnet"`
	Range   netip.Prefix `json:"range"`
	Gateway netip.Addr   `json:"gateway"`
	// GatewayPending: the gateway is the default one, reserved but not yet
	// confirmed by Docker's gateway request, so not yet published.
	GatewayPending bool         `json:"gateway_pending,omitempty"`
	Aux            []netip.Addr `json:"aux,omitempty"`
	Addrs          []netip.Addr `json:"addrs,omitempty"` // allocated to containers
}

func encodeState(s *persistedState) []byte {
	s.Version = stateVersion
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data only
	}
	return b
}

// decodeState parses and validates bytes written by encodeState.
func decodeState(b []byte) (*persistedState, error) {
	var s persistedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode ipam state: %w", err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("decode ipam state: version %d: want %d", s.Version, stateVersion)
	}
	ids := map[string]bool{}
	for i, p := range s.Pools {
		if err := validTenant(p.Tenant); err != nil {
			return nil, fmt.Errorf("decode ipam state: pool %d: tenant %q: %w", i, p.Tenant, err)
		}
		if !p.Subnet.IsValid() || p.Subnet.Masked() != p.Subnet || p.Subnet.Addr().Zone() != "" || p.Subnet.Addr().BitLen()-p.Subnet.Bits() < 2 {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %d: subnet %v: not a usable masked prefix", i, p.Subnet)
		}
		req := PoolRequest{Tenant: p.Tenant, Subnet: p.Subnet}
		if p.Range.IsValid() {
			if p.Range.Masked() != p.Range || !p.Subnet.Contains(p.Range.Addr()) || p.Range.Bits() < p.Subnet.Bits() || p.Range == p.Subnet {
				return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: range %v: not inside the subnet", req.PoolID(), p.Range)
			}
			req.Range = p.Range
		}
		if ids[req.PoolID()] {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: listed twice", req.PoolID())
		}
		ids[req.PoolID()] = true
		if !p.Gateway.IsValid() || !p.Subnet.Contains(p.Gateway) {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: gateway %v: not in the subnet", req.PoolID(), p.Gateway)
		}
		for _, a := range p.Aux {
			if !p.Subnet.Contains(a) {
				return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: aux %v: not in the subnet", req.PoolID(), a)
			}
		}
		for _, a := range p.Addrs {
			if !req.allocRange().Contains(a) {
				return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: address %v: not in the range", req.PoolID(), a)
			}
		}
	}
	for k, e := range s.Own {
		if _, _, ok := parseBlockKey(k); !ok {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: block key %q: malformed", k)
		}
		if validName(e.To) != nil {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: block %q: owner %q: not a host name", k, e.To)
		}
	}
	for _, h := range s.Removed {
		if validName(h) != nil {
			return nil, kindErrorf(ErrInvalid, "decode ipam state: removed host %q: not a host name", h)
		}
	}
	slices.Sort(s.Removed)
	// One form for "none": empty lists decode as nil, as they encode.
	for i := range s.Pools {
		if len(s.Pools[i].Aux) == 0 {
			s.Pools[i].Aux = nil
		}
		if len(s.Pools[i].Addrs) == 0 {
			s.Pools[i].Addrs = nil
		}
	}
	if len(s.Removed) == 0 {
		s.Removed = nil
	}
	if len(s.Own) == 0 {
		s.Own = nil
	}
	return &s, nil
}
