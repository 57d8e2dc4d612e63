package driver

// Docker's remote IPAM protocol, served on the same socket as the network
// driver (docker network create --ipam-driver tenet --ipam-opt tenant=T),
// backed by package ipam. This file decodes, delegates and encodes; it also
// reclaims an address a gone container left allocated here (claimStray).

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tenet-net/tenet/ipam"
)

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

var errNoIPAM = errors.New("this tenetd runs without IPAM")

// RequestPool registers (or counts another use of) a tenant's subnet,
// after the subnet and tenant rules.
func (d *Driver) RequestPool(ctx context.Context, r requestPoolRequest) (*requestPoolResponse, error) {
	if d.ipam == nil {
		return nil, errNoIPAM
	}
	req, err := ipam.ParsePoolRequest(d.cfg.DefaultTenant, r.AddressSpace, r.Pool, r.SubPool, r.Options, r.V6)
	if err != nil {
		return nil, err
	}
	if !req.Subnet.Addr().Is4() {
		return nil, fmt.Errorf("request pool %s: IPv6 is not supported yet", req.Subnet)
	}
	if err := d.core.CheckSubnet(req.Subnet); err != nil {
		return nil, fmt.Errorf("request pool (tenant %s): %w", req.Tenant, err)
	}
	// The tenant rule is for new networks. Docker asks again for the pool
	// of every network it has when the engine starts; refusing a network
	// this host already has (made before its tenant rule applied: before
	// any tenant was defined) would leave Docker a network without a pool,
	// on which `docker run --ip` crashes Docker's API handler (a nil pool:
	// moby#44636), and would change nothing else.
	if !d.core.HasSubnet(req.Tenant, req.Subnet) {
		if err := d.checkTenant(req.Tenant); err != nil {
			return nil, fmt.Errorf("request pool %s: %w", req.Subnet, err)
		}
	}
	p, err := d.ipam.RequestPool(ctx, req)
	if err != nil {
		return nil, err
	}
	return &requestPoolResponse{PoolID: p.ID, Pool: p.Subnet.String(), Data: map[string]string{}}, nil
}

// ReleasePool drops one use of a pool.
func (d *Driver) ReleasePool(ctx context.Context, r releasePoolRequest) error {
	if d.ipam == nil {
		return errNoIPAM
	}
	return d.ipam.ReleasePool(ctx, r.PoolID)
}

// RequestAddress hands out an address unique in the cluster, the one asked
// for with --ip, or the network's cluster-wide gateway.
func (d *Driver) RequestAddress(ctx context.Context, r requestAddressRequest) (*requestAddressResponse, error) {
	if d.ipam == nil {
		return nil, errNoIPAM
	}
	req, err := ipam.ParseAddressRequest(r.PoolID, r.Address, r.Options, d.hasPoolNetwork(r.PoolID))
	if err != nil {
		return nil, err
	}
	a, err := d.ipam.RequestAddress(ctx, r.PoolID, req)
	if err != nil && req.Addr.IsValid() && errors.Is(err, ipam.ErrInUse) {
		if ticket := d.claimStray(r.PoolID, req.Addr); ticket != 0 {
			// Allocated here, before this tenetd started, to a container
			// whose endpoint is gone and whose release never came (Docker
			// called it while tenetd could not answer, or dropped the
			// endpoint after a crash of its own): a container restarted
			// with its --ip after a reboot would otherwise never get it
			// back.
			d.log.Warn("reclaiming an address allocated here to a container that is gone", "pool", r.PoolID, "ip", req.Addr)
			if rerr := d.ipam.ReleaseAddress(ctx, r.PoolID, req.Addr); rerr == nil {
				a, err = d.ipam.RequestAddress(ctx, r.PoolID, req)
			}
			if err != nil {
				// Unmark it only if the mark is still this claim's: a
				// concurrent request may have taken the address between
				// the release and the request above, and its mark stays.
				d.mu.Lock()
				if d.issued[issuedAddr{r.PoolID, req.Addr}] == ticket {
					delete(d.issued, issuedAddr{r.PoolID, req.Addr})
				}
				d.mu.Unlock()
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if req.Kind == ipam.KindContainer {
		d.mu.Lock()
		d.issueLocked(issuedAddr{r.PoolID, a.Addr()})
		d.mu.Unlock()
	}
	return &requestAddressResponse{Address: a.String(), Data: map[string]string{}}, nil
}

// claimStray says whether address a of a pool is allocated on this host to
// no container (not handed out by this process, held by no endpoint of the
// pool's tenant and subnet on this host) and, if so, marks it handed out,
// so that a concurrent request for it cannot reclaim it too, and returns
// the mark's ticket (0: not a stray). The caller unmarks it if it fails to
// take the address and the mark still has its ticket. In-memory reads only.
func (d *Driver) claimStray(poolID string, a netip.Addr) uint64 {
	tenant, subnet, err := ipam.ParsePoolID(poolID)
	if err != nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key := issuedAddr{poolID, a}
	if d.issued[key] != 0 || !d.ipam.AllocatedHere(poolID, a) {
		return 0
	}
	for _, e := range d.core.Endpoints() {
		if e.IP.Addr() != a {
			continue
		}
		if n, ok := d.core.Network(e.Network); !ok || (n.Tenant == tenant && n.Subnet == subnet) {
			return 0 // held (or its network unknown: kept, to be safe)
		}
	}
	return d.issueLocked(key)
}

// issueLocked marks an address handed out, with a new ticket, and returns
// the ticket. d.mu is held.
func (d *Driver) issueLocked(key issuedAddr) uint64 {
	d.ticket++
	d.issued[key] = d.ticket
	return d.ticket
}

// hasPoolNetwork reports whether this host has the network an IPAM pool
// serves (the pool's tenant and subnet): Docker asks for a network's aux
// addresses before CreateNetwork, and for endpoints' addresses after.
func (d *Driver) hasPoolNetwork(poolID string) bool {
	tenant, subnet, err := ipam.ParsePoolID(poolID)
	return err == nil && d.core.HasSubnet(tenant, subnet)
}

// ReleaseAddress frees an address; releasing one that is not held is not
// an error (Docker repeats releases when it rolls back).
func (d *Driver) ReleaseAddress(ctx context.Context, r releaseAddressRequest) error {
	if d.ipam == nil {
		return errNoIPAM
	}
	a, err := ipam.ParseAddress(r.PoolID, r.Address)
	if err != nil {
		return err
	}
	if err := d.ipam.ReleaseAddress(ctx, r.PoolID, a); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.issued, issuedAddr{r.PoolID, a})
	d.mu.Unlock()
	return nil
}
