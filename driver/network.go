package driver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/ipam"
)

// genericOptions returns the -o options Docker passes under
// com.docker.network.generic.
func genericOptions(opts map[string]any) (map[string]string, error) {
	out := map[string]string{}
	raw, ok := opts[optGeneric]
	if !ok || raw == nil {
		return out, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("option %s: want an object, got %T", optGeneric, raw)
	}
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("option %s: want a string, got %T", k, v)
		}
		out[k] = s
	}
	return out, nil
}

// parseNetwork turns a CreateNetwork request into a network spec, checking
// what only Docker's request can tell: the options, the pool, and that the
// pool came from Tenet's IPAM for the same tenant.
func parseNetwork(req createNetworkRequest) (core.NetworkSpec, error) {
	var s core.NetworkSpec
	if req.NetworkID == "" {
		return s, errors.New("NetworkID is empty")
	}
	opts, err := genericOptions(req.Options)
	if err != nil {
		return s, err
	}
	s.Ref, s.Tenant, s.Name = req.NetworkID, opts[OptTenant], opts[OptNetwork]
	if s.Tenant == "" || s.Name == "" {
		return s, fmt.Errorf("options %q and %q are required (docker network create -d tenet --ipam-driver tenet --ipam-opt tenant=TENANT -o tenant=TENANT -o network=NAME --subnet CIDR ...): Docker does not tell the driver a network's name", OptTenant, OptNetwork)
	}
	if v, ok := opts[OptVNI]; ok {
		vni, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return s, fmt.Errorf("option vni %q: must be a number %d-%d", v, rules.MinVNI, rules.MaxVNI)
		}
		if err := rules.VNI(vni); err != nil {
			return s, fmt.Errorf("option %w", err)
		}
		s.VNI = uint32(vni)
	}
	if v, ok := opts[OptEncrypted]; ok {
		enc, err := ParseEncrypted(v)
		if err != nil {
			return s, err
		}
		s.Encrypted = enc
	}
	if v, ok := opts[OptMTU]; ok {
		mtu, err := strconv.Atoi(v)
		if err != nil || mtu <= 0 {
			return s, fmt.Errorf("option %s %q: must be a positive number", OptMTU, v)
		}
		s.MTU = mtu
	}
	if internal, ok := req.Options[optInternal].(bool); ok {
		s.Internal = internal
	}
	if len(req.IPv6Data) > 0 {
		return s, errors.New("IPv6 (--ipv6) is not supported yet")
	}
	if len(req.IPv4Data) != 1 {
		return s, fmt.Errorf("want exactly one IPv4 pool (--subnet CIDR), got %d", len(req.IPv4Data))
	}
	pool := req.IPv4Data[0]
	if pool.AddressSpace != ipam.LocalSpace && pool.AddressSpace != ipam.GlobalSpace {
		return s, fmt.Errorf("the pool comes from Docker's own IPAM (address space %q), which hands out the same addresses on every host: create the network with --ipam-driver tenet --ipam-opt tenant=%s", pool.AddressSpace, s.Tenant)
	}
	s.Subnet, err = netip.ParsePrefix(pool.Pool)
	if err != nil {
		return s, fmt.Errorf("pool %q: must be an IPv4 network in CIDR form", pool.Pool)
	}
	if pool.Gateway != "" {
		gw, err := netip.ParsePrefix(pool.Gateway)
		if err != nil {
			return s, fmt.Errorf("gateway %q: not an address in CIDR form", pool.Gateway)
		}
		s.Gateway = gw.Addr()
	}
	return s, nil
}

// ParseEncrypted reads the value of -o encrypted: empty (the option alone,
// as Docker's overlay driver takes it) or a boolean.
func ParseEncrypted(v string) (bool, error) {
	if v == "" {
		return true, nil
	}
	enc, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("option %s %q: want true or false (or the option alone, for true)", OptEncrypted, v)
	}
	return enc, nil
}

// CreateNetwork creates a Tenet network on this host.
func (d *Driver) CreateNetwork(ctx context.Context, req createNetworkRequest) error {
	s, err := parseNetwork(req)
	if err != nil {
		return fmt.Errorf("create network: %w", err)
	}
	if err := d.checkTenant(s.Tenant); err != nil {
		return fmt.Errorf("create network %s: %w", s.Key(), err)
	}
	if d.ipam != nil {
		// The pool Docker got from IPAM must be the tenant's: -o tenant
		// and --ipam-opt tenant must agree.
		if _, err := d.ipam.Status(ipam.PoolRequest{Tenant: s.Tenant, Subnet: s.Subnet.Masked()}.PoolID()); err != nil {
			return fmt.Errorf("create network %s: option tenant=%s does not match the IPAM pool of %s: pass the same tenant as --ipam-opt tenant=%s", s.Key(), s.Tenant, s.Subnet, s.Tenant)
		}
	}
	_, err = d.core.CreateNetwork(ctx, s)
	return err
}

// DeleteNetwork removes a network from this host. An unknown ID is not an
// error, so that a repeated call is harmless.
func (d *Driver) DeleteNetwork(ctx context.Context, req networkRequest) error {
	n, ok := d.core.NetworkByRef(req.NetworkID)
	if !ok {
		return nil
	}
	return d.core.DeleteNetwork(ctx, n.Key())
}
