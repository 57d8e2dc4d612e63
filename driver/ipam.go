package driver

// Docker's remote IPAM protocol, served on the same socket as the network
// driver (docker network create --ipam-driver tenet --ipam-opt tenant=T).
//
// Interim allocator, until the cluster-wide one (issue "IPAM") lands: tenants
// are address spaces (one pool ID per tenant and subnet, the same on every
// host, so equal subnets of two tenants coexist), the gateway is the same on
// every host, and a container's address must be given with --ip; it is
// refused if this host or any other host of the cluster already uses it.
// Addresses are not handed out dynamically, because nothing yet makes two
// hosts' choices unique.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// OptIPAMTenant is the --ipam-opt key naming the tenant (address space).
const OptIPAMTenant = "tenant"

const gatewayRequest = "com.docker.network.gateway"

// pool is one subnet of a tenant, as this host's engine uses it.
type pool struct {
	ID      string       `json:"id"`
	Tenant  string       `json:"tenant"`
	Prefix  netip.Prefix `json:"prefix"`
	Range   netip.Prefix `json:"range,omitzero"`
	Refs    int          `json:"refs"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	Used    []netip.Addr `json:"used,omitempty"` // containers' and aux addresses, sorted
}

type requestPoolRequest struct {
	AddressSpace string
	Pool         string
	SubPool      string
	Options      map[string]string
	V6           bool
}

type requestPoolResponse struct {
	PoolID string
	Pool   string
	Data   map[string]string
}

type releasePoolRequest struct{ PoolID string }

type requestAddressRequest struct {
	PoolID  string
	Address string
	Options map[string]string
}

type requestAddressResponse struct {
	Address string
	Data    map[string]string
}

type releaseAddressRequest struct {
	PoolID  string
	Address string
}

// RequestPool registers (or counts another use of) a tenant's subnet.
func (d *Driver) RequestPool(ctx context.Context, req requestPoolRequest) (*requestPoolResponse, error) {
	tenant := req.Options[OptIPAMTenant]
	what := fmt.Sprintf("request pool %s (tenant %q)", req.Pool, tenant)
	switch {
	case req.V6:
		return nil, fmt.Errorf("%s: IPv6 is not supported yet", what)
	case tenant == "":
		return nil, fmt.Errorf("request pool %s: --ipam-opt %s=TENANT is required: tenants are address spaces", req.Pool, OptIPAMTenant)
	case !tenantPattern.MatchString(tenant):
		return nil, fmt.Errorf("%s: tenant must be 1-32 of a-z, 0-9 and '-'", what)
	case req.Pool == "":
		return nil, fmt.Errorf("request pool (tenant %s): --subnet is required", tenant)
	}
	prefix, err := netip.ParsePrefix(req.Pool)
	if err != nil || !prefix.Addr().Is4() || prefix != prefix.Masked() || prefix.Bits() > 30 {
		return nil, fmt.Errorf("%s: must be an IPv4 network in CIDR form, /30 or larger", what)
	}
	var rng netip.Prefix
	if req.SubPool != "" {
		rng, err = netip.ParsePrefix(req.SubPool)
		if err != nil || rng != rng.Masked() || !prefix.Contains(rng.Addr()) || rng.Bits() < prefix.Bits() {
			return nil, fmt.Errorf("%s: ip range %q: must be a network inside %s", what, req.SubPool, prefix)
		}
	}
	id := tenant + "/" + prefix.String()
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[id]; p != nil {
		if p.Range != rng {
			return nil, fmt.Errorf("%s: already in use here with ip range %v", what, p.Range)
		}
		p.Refs++
	} else {
		for _, o := range d.pools {
			if o.Tenant == tenant && o.Prefix.Overlaps(prefix) {
				return nil, fmt.Errorf("%s: overlaps %s of the same tenant", what, o.Prefix)
			}
		}
		d.pools[id] = &pool{ID: id, Tenant: tenant, Prefix: prefix, Range: rng, Refs: 1}
	}
	if err := d.saveLocked(); err != nil {
		d.releasePoolLocked(id)
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &requestPoolResponse{PoolID: id, Pool: prefix.String(), Data: map[string]string{}}, nil
}

// ReleasePool drops one use of a pool; unknown IDs are not an error.
func (d *Driver) ReleasePool(ctx context.Context, req releasePoolRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.releasePoolLocked(req.PoolID)
	return d.saveLocked()
}

func (d *Driver) releasePoolLocked(id string) {
	if p := d.pools[id]; p != nil {
		if p.Refs--; p.Refs <= 0 {
			delete(d.pools, id)
		}
	}
}

// RequestAddress hands Docker the gateway (the same on every host) or the
// address given with --ip, after checking nobody in the cluster uses it.
func (d *Driver) RequestAddress(ctx context.Context, req requestAddressRequest) (*requestAddressResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pools[req.PoolID]
	what := fmt.Sprintf("request address %s in pool %s", req.Address, req.PoolID)
	if p == nil {
		return nil, fmt.Errorf("%s: no such pool", what)
	}
	var ip netip.Addr
	if req.Address != "" {
		var err error
		if ip, err = netip.ParseAddr(req.Address); err != nil {
			return nil, fmt.Errorf("%s: not an IP address", what)
		}
		if err := p.check(ip); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	if req.Options["RequestAddressType"] == gatewayRequest {
		if !ip.IsValid() {
			ip = p.Prefix.Addr().Next()
		}
		p.Gateway = ip
	} else {
		if !ip.IsValid() {
			return nil, fmt.Errorf("request address in pool %s: give the container an address with --ip: addresses are not yet allocated cluster-wide, so Tenet does not pick them", req.PoolID)
		}
		if err := d.checkFreeLocked(p, ip); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		p.Used = append(p.Used, ip)
		slices.SortFunc(p.Used, netip.Addr.Compare)
	}
	if err := d.saveLocked(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &requestAddressResponse{Address: netip.PrefixFrom(ip, p.Prefix.Bits()).String(), Data: map[string]string{}}, nil
}

// check says whether ip may be handed out from p at all.
func (p *pool) check(ip netip.Addr) error {
	if !p.Prefix.Contains(ip) {
		return fmt.Errorf("not in %s", p.Prefix)
	}
	if ip == p.Prefix.Addr() {
		return fmt.Errorf("the network address of %s", p.Prefix)
	}
	if last := lastAddr(p.Prefix); ip == last {
		return fmt.Errorf("the broadcast address of %s", p.Prefix)
	}
	return nil
}

// checkFreeLocked refuses an address this host already handed out in p,
// p's gateway, or one another host's endpoint has in a network of the same
// tenant and subnet.
func (d *Driver) checkFreeLocked(p *pool, ip netip.Addr) error {
	if ip == p.Gateway {
		return fmt.Errorf("is the gateway")
	}
	if p.Range.IsValid() && !p.Range.Contains(ip) {
		return fmt.Errorf("outside the ip range %s", p.Range)
	}
	if _, found := slices.BinarySearchFunc(p.Used, ip, netip.Addr.Compare); found {
		return fmt.Errorf("already in use on this host")
	}
	for _, r := range d.remotes {
		if !r.hiddenSince.IsZero() || r.ep.IP != ip {
			continue
		}
		tenant, _, _ := strings.Cut(r.ep.Network, "/")
		if tenant != p.Tenant {
			continue
		}
		for _, n := range d.nets {
			if n.key() == r.ep.Network && n.Subnet == p.Prefix {
				return fmt.Errorf("already used by endpoint %.12s on host %s", r.ep.ID, r.ep.Host)
			}
		}
	}
	return nil
}

// ReleaseAddress frees an address; releasing one that is not held is not
// an error (Docker repeats releases when it rolls back).
func (d *Driver) ReleaseAddress(ctx context.Context, req releaseAddressRequest) error {
	ip, err := netip.ParseAddr(req.Address)
	if err != nil {
		return fmt.Errorf("release address %q in pool %s: not an IP address", req.Address, req.PoolID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pools[req.PoolID]
	if p == nil {
		return nil
	}
	if i, found := slices.BinarySearchFunc(p.Used, ip, netip.Addr.Compare); found {
		p.Used = slices.Delete(p.Used, i, i+1)
	} else if ip == p.Gateway {
		p.Gateway = netip.Addr{}
	}
	return d.saveLocked()
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
