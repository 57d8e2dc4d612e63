package driver

// Docker's remote IPAM protocol, served on the same socket as the network
// driver (docker network create --ipam-driver tenet --ipam-opt tenant=T),
// backed by package ipam: addresses unique across the cluster, allocated
// locally from blocks this host owns. This file only decodes, delegates and
// encodes.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/tenet-net/tenet/ipam"
)

// Addresses is what the driver needs of the cluster-wide allocator:
// *ipam.IPAM, or a fake in unit tests.
type Addresses interface {
	RequestPool(ctx context.Context, req ipam.PoolRequest) (ipam.Pool, error)
	ReleasePool(ctx context.Context, id string) error
	RequestAddress(ctx context.Context, poolID string, req ipam.AddressRequest) (netip.Prefix, error)
	ReleaseAddress(ctx context.Context, poolID string, a netip.Addr) error
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

func (d *Driver) addresses() (Addresses, error) {
	if d.ipam == nil {
		return nil, fmt.Errorf("this tenetd runs without IPAM")
	}
	return d.ipam, nil
}

// RequestPool registers (or counts another use of) a tenant's subnet.
func (d *Driver) RequestPool(ctx context.Context, r requestPoolRequest) (*requestPoolResponse, error) {
	m, err := d.addresses()
	if err != nil {
		return nil, err
	}
	req, err := ipam.ParsePoolRequest(d.cfg.DefaultTenant, r.AddressSpace, r.Pool, r.SubPool, r.Options, r.V6)
	if err != nil {
		return nil, err
	}
	p, err := m.RequestPool(ctx, req)
	if err != nil {
		return nil, err
	}
	return &requestPoolResponse{PoolID: p.ID, Pool: p.Subnet.String(), Data: map[string]string{}}, nil
}

// ReleasePool drops one use of a pool.
func (d *Driver) ReleasePool(ctx context.Context, r releasePoolRequest) error {
	m, err := d.addresses()
	if err != nil {
		return err
	}
	return m.ReleasePool(ctx, r.PoolID)
}

// RequestAddress hands out an address unique in the cluster, the one asked
// for with --ip, or the network's cluster-wide gateway.
func (d *Driver) RequestAddress(ctx context.Context, r requestAddressRequest) (*requestAddressResponse, error) {
	m, err := d.addresses()
	if err != nil {
		return nil, err
	}
	req, err := ipam.ParseAddressRequest(r.PoolID, r.Address, r.Options, d.hasPoolNetwork(r.PoolID))
	if err != nil {
		return nil, err
	}
	a, err := m.RequestAddress(ctx, r.PoolID, req)
	if err != nil {
		return nil, err
	}
	return &requestAddressResponse{Address: a.String(), Data: map[string]string{}}, nil
}

// hasPoolNetwork reports whether this host has the network an IPAM pool
// serves (the pool's tenant and subnet): Docker asks for a network's aux
// addresses before CreateNetwork, and for endpoints' addresses after.
func (d *Driver) hasPoolNetwork(poolID string) bool {
	tenant, subnet, err := ipam.ParsePoolID(poolID)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.nets {
		if n.Tenant == tenant && n.Subnet == subnet {
			return true
		}
	}
	return false
}

// ReleaseAddress frees an address; releasing one that is not held is not
// an error (Docker repeats releases when it rolls back).
func (d *Driver) ReleaseAddress(ctx context.Context, r releaseAddressRequest) error {
	m, err := d.addresses()
	if err != nil {
		return err
	}
	a, err := ipam.ParseAddress(r.PoolID, r.Address)
	if err != nil {
		return err
	}
	return m.ReleaseAddress(ctx, r.PoolID, a)
}

// FileStore keeps ipam's state in a file, written atomically.
type FileStore struct{ Path string }

var _ ipam.Store = FileStore{}

// Load returns the saved state, or nil if there is none yet.
func (f FileStore) Load() ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	return b, err
}

// Save replaces the state (temporary file and rename).
func (f FileStore) Save(state []byte) error {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return err
	}
	tmp := f.Path + ".tmp"
	if err := os.WriteFile(tmp, state, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f.Path)
}
