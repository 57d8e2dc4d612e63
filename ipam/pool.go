package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// OptTenant is the --ipam-opt key (RequestPool Options) naming the tenant,
// since the docker CLI cannot name an address space (as of Docker 20.10).
const OptTenant = "tenant"

// PoolRequest is a validated RequestPool.
type PoolRequest struct {
	Tenant string       // address space; a tenant
	Subnet netip.Prefix // --subnet, masked
	Range  netip.Prefix // --ip-range, masked; zero means the whole subnet
}

// ParsePoolRequest validates Docker's RequestPool fields. addressSpace is used
// as the tenant unless options carry OptTenant (Docker always sends its own
// default space names, which map to defaultTenant); pool is --subnet and
// subPool is --ip-range.
func ParsePoolRequest(defaultTenant, addressSpace, pool, subPool string, options map[string]string, v6 bool) (PoolRequest, error) {
	tenant := defaultTenant
	if addressSpace != "" && addressSpace != LocalSpace && addressSpace != GlobalSpace {
		tenant = addressSpace
	}
	if t, ok := options[OptTenant]; ok {
		tenant = t
	}
	if err := validTenant(tenant); err != nil {
		return PoolRequest{}, fmt.Errorf("request pool: tenant %q: %w", tenant, err)
	}
	if pool == "" {
		if subPool != "" {
			return PoolRequest{}, kindErrorf(ErrInvalid, "request pool: ip-range %q without a subnet", subPool)
		}
		return PoolRequest{}, kindErrorf(ErrInvalid, "request pool (tenant %s): no subnet given: pass --subnet, hosts must agree on it", tenant)
	}
	sub, err := netip.ParsePrefix(pool)
	if err != nil {
		return PoolRequest{}, kindErrorf(ErrInvalid, "request pool (tenant %s): subnet %q: not a CIDR", tenant, pool)
	}
	sub = sub.Masked()
	if sub.Addr().Is4In6() || sub.Addr().Zone() != "" {
		return PoolRequest{}, kindErrorf(ErrInvalid, "request pool (tenant %s): subnet %q: must be plain IPv4 or IPv6", tenant, pool)
	}
	if sub.Addr().Is6() != v6 {
		return PoolRequest{}, kindErrorf(ErrInvalid, "request pool (tenant %s): subnet %s: address family does not match v6=%v", tenant, sub, v6)
	}
	if n := sub.Addr().BitLen() - sub.Bits(); n < 2 {
		return PoolRequest{}, kindErrorf(ErrInvalid, "request pool (tenant %s): subnet %s: too small, needs at least 2 host bits", tenant, sub)
	}
	r := PoolRequest{Tenant: tenant, Subnet: sub}
	if subPool != "" {
		rng, err := netip.ParsePrefix(subPool)
		if err != nil {
			return PoolRequest{}, kindErrorf(ErrInvalid, "request pool %s/%s: ip-range %q: not a CIDR", tenant, sub, subPool)
		}
		rng = rng.Masked()
		if rng.Addr().Is6() != v6 || !sub.Contains(rng.Addr()) || rng.Bits() < sub.Bits() {
			return PoolRequest{}, kindErrorf(ErrNotInPool, "request pool %s/%s: ip-range %s: must lie inside the subnet", tenant, sub, rng)
		}
		if rng != sub {
			r.Range = rng
		}
	}
	return r, nil
}

// Docker's default address space names, which this IPAM answers in
// GetDefaultAddressSpaces; a request naming either uses the default tenant.
const (
	LocalSpace  = "tenet-local"
	GlobalSpace = "tenet-global"
)

// PoolID is the pool ID Docker stores: "<tenant>/<subnet>". It is the same on
// every host for the same tenant and subnet, and differs between tenants.
func (r PoolRequest) PoolID() string { return r.Tenant + "/" + r.Subnet.String() }

// ParsePoolID splits a pool ID made by PoolID.
func ParsePoolID(id string) (tenant string, subnet netip.Prefix, err error) {
	tenant, cidr, ok := strings.Cut(id, "/")
	if !ok || validTenant(tenant) != nil {
		return "", netip.Prefix{}, kindErrorf(ErrInvalid, "pool id %q: not <tenant>/<subnet>", id)
	}
	subnet, err = netip.ParsePrefix(cidr)
	if err != nil || subnet.Masked() != subnet {
		return "", netip.Prefix{}, kindErrorf(ErrInvalid, "pool id %q: subnet %q not a masked CIDR", id, cidr)
	}
	return tenant, subnet, nil
}

// allocRange is where containers get addresses: the ip-range, or the subnet.
func (r PoolRequest) allocRange() netip.Prefix {
	if r.Range.IsValid() {
		return r.Range
	}
	return r.Subnet
}

// DefaultGateway is the subnet's first usable address, the gateway on every
// host unless --gateway says otherwise.
func (r PoolRequest) DefaultGateway() netip.Addr { return r.Subnet.Addr().Next() }

// overlaps reports whether two prefixes share an address.
func overlaps(a, b netip.Prefix) bool { return a.Overlaps(b) }

func validTenant(t string) error {
	if t == "" || len(t) > 63 {
		return kindErrorf(ErrInvalid, "must be 1-63 characters")
	}
	for i, r := range t {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return kindErrorf(ErrInvalid, "must be lower-case letters, digits, '-', '_' or '.', starting with a letter or digit")
		}
	}
	return nil
}

// reservedAddrs are never handed to a container: the subnet's first address,
// the IPv4 broadcast address, the gateway and aux addresses.
func reservedAddrs(subnet netip.Prefix, gateway netip.Addr, aux []netip.Addr) map[netip.Addr]struct{} {
	m := map[netip.Addr]struct{}{subnet.Addr(): {}}
	if subnet.Addr().Is4() {
		m[lastAddr(subnet)] = struct{}{}
	}
	if gateway.IsValid() {
		m[gateway] = struct{}{}
	}
	for _, a := range aux {
		m[a] = struct{}{}
	}
	return m
}

func sortedAddrs(m map[netip.Addr]struct{}) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
