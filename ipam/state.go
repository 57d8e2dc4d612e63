package ipam

// Persisted state: what a restarted tenetd needs to keep every allocation
// and never re-accept a block it already handed away. Encoded as versioned
// JSON; decodeState validates every field, since the bytes come from disk.
//
// The state is saved at every allocation and release, so its encoding
// should grow little with the addresses held. Version 2 keeps a pool's
// addresses as runs of consecutive ones ("10.1.0.2-10.1.3.233"), as a
// host mostly allocates them, taken from the allocator's bitmaps without
// listing each address: listing and encoding a thousand addresses one by
// one took 0.09 ms and 0.18 ms at every save (BenchmarkEncodeState).
// Addresses scattered by releases still take a run each. A version 1
// state, an address each, reads as version 2: one address is a run of one.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

const stateVersion = 2

// maxStateAddrs bounds the addresses a state may hold (its runs' lengths
// summed), so that a damaged or forged file cannot make restoring it
// allocate without end. A host holds at most 1,022 containers per network.
const maxStateAddrs = 1 << 20

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
	Addrs          []addrRun    `json:"addrs,omitempty"` // allocated to containers
}

// addrRun is a run of consecutive addresses from First to Last, written
// "First" if they are one, else "First-Last".
type addrRun struct{ First, Last netip.Addr }

func (r addrRun) MarshalText() ([]byte, error) {
	b := r.First.AppendTo(nil)
	if r.Last != r.First {
		b = r.Last.AppendTo(append(b, '-'))
	}
	return b, nil
}

func (r *addrRun) UnmarshalText(b []byte) error {
	f, l, isRun := strings.Cut(string(b), "-")
	first, err := netip.ParseAddr(f)
	if err != nil {
		return fmt.Errorf("address %q: %w", b, err)
	}
	last := first
	if isRun {
		if last, err = netip.ParseAddr(l); err != nil {
			return fmt.Errorf("address run %q: %w", b, err)
		}
		if last.BitLen() != first.BitLen() || !first.Less(last) {
			return fmt.Errorf("address run %q: its last address does not follow its first", b)
		}
	}
	*r = addrRun{first, last}
	return nil
}

// len is the number of addresses in r, or max+1 if that is more than max.
func (r addrRun) len(max uint64) uint64 {
	d := toU128(r.Last).sub(toU128(r.First))
	if d.hi != 0 || d.lo >= max {
		return max + 1
	}
	return d.lo + 1
}

// each calls fn with every address of r in order.
func (r addrRun) each(fn func(netip.Addr)) {
	for a := r.First; ; a = a.Next() {
		fn(a)
		if a == r.Last {
			return
		}
	}
}

// appendRun adds a to runs, extending the last run if a follows it.
func appendRun(runs []addrRun, a addrRun) []addrRun {
	if n := len(runs); n > 0 && runs[n-1].Last.Next() == a.First {
		runs[n-1].Last = a.Last
		return runs
	}
	return append(runs, a)
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
	if s.Version != stateVersion && s.Version != 1 {
		return nil, fmt.Errorf("decode ipam state: version %d: want %d or 1", s.Version, stateVersion)
	}
	s.Version = stateVersion // read as this version
	budget := uint64(maxStateAddrs)
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
		for _, r := range p.Addrs {
			if !req.allocRange().Contains(r.First) || !req.allocRange().Contains(r.Last) {
				t, _ := r.MarshalText()
				return nil, kindErrorf(ErrInvalid, "decode ipam state: pool %s: address %s: not in the range", req.PoolID(), t)
			}
			n := r.len(budget)
			if n > budget {
				return nil, kindErrorf(ErrInvalid, "decode ipam state: more than %d addresses", maxStateAddrs)
			}
			budget -= n
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
