package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/registry"
	"github.com/tenet-net/tenet/ipam"
)

// Core is what the driver needs of the host core: *core.Core, or a fake.
type Core interface {
	CreateNetwork(ctx context.Context, spec core.NetworkSpec) (core.Network, error)
	DeleteNetwork(ctx context.Context, key string) error
	NetworkByRef(ref string) (core.Network, bool)
	CreateEndpoint(ctx context.Context, spec core.EndpointSpec) (core.Endpoint, error)
	AttachEndpoint(ctx context.Context, id, netns string) (core.Endpoint, core.Network, error)
	DeleteEndpoint(ctx context.Context, id string) error
	PublishPorts(ctx context.Context, id string, reqs []core.PortRequest) ([]core.PortBinding, error)
	Endpoint(id string) (core.Endpoint, bool)
	Endpoints() []core.Endpoint
	Network(key string) (core.Network, bool)
	CheckSubnet(p netip.Prefix) error
	HasSubnet(tenant string, subnet netip.Prefix) bool
}

// Addresses is what the driver needs of the cluster-wide allocator:
// *ipam.IPAM, or a fake.
type Addresses interface {
	RequestPool(ctx context.Context, req ipam.PoolRequest) (ipam.Pool, error)
	ReleasePool(ctx context.Context, id string) error
	RequestAddress(ctx context.Context, poolID string, req ipam.AddressRequest) (netip.Prefix, error)
	ReleaseAddress(ctx context.Context, poolID string, a netip.Addr) error
	AllocatedHere(poolID string, a netip.Addr) bool
	Status(poolID string) (ipam.PoolStatus, error)
}

// Tenants tells whether a tenant is defined: *registry.Registry.
type Tenants interface {
	TenantDefined(tenant string) (defined, any bool)
}

// Config configures a Driver.
type Config struct {
	Host string
	// RequestTimeout bounds every plugin call: Docker gives legacy plugins
	// no timeout of its own, so a slow answer would hang docker run.
	RequestTimeout time.Duration
	// DefaultTenant is the tenant of an IPAM pool requested without
	// --ipam-opt tenant=.
	DefaultTenant string
	// ObserveCall, if set, is told of every plugin call answered: its name
	// ("NetworkDriver.CreateEndpoint"), how long it took and its error.
	ObserveCall func(call string, took time.Duration, err error)
	Logger      *slog.Logger
}

// DefaultConfig returns the defaults; Host must be set.
func DefaultConfig() Config {
	return Config{RequestTimeout: 10 * time.Second, DefaultTenant: "default", Logger: slog.New(slog.DiscardHandler)}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Host == "":
		return errors.New("driver: Host: must be set")
	case c.RequestTimeout <= 0:
		return fmt.Errorf("driver: RequestTimeout %v: must be positive", c.RequestTimeout)
	case c.Logger == nil:
		return errors.New("driver: Logger: must be set")
	}
	return nil
}

// Driver is Tenet's Docker front end on one host.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	core    Core
	ipam    Addresses // nil: no IPAM
	tenants Tenants   // nil: every tenant is allowed

	mu     sync.Mutex
	issued map[issuedAddr]uint64 // container addresses this process handed out and Docker has not released, each with its hand-out's ticket
	ticket uint64                // the last ticket given (see issueLocked)
}

// issuedAddr is an address of a pool.
type issuedAddr struct {
	pool string
	addr netip.Addr
}

// New returns a driver over the core, IPAM (may be nil) and the registry's
// tenants (may be nil).
func New(cfg Config, c Core, am Addresses, tenants Tenants) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Driver{cfg: cfg, log: cfg.Logger.With("component", "driver"), core: c, ipam: am, tenants: tenants,
		issued: map[issuedAddr]uint64{}}, nil
}

// checkTenant refuses a tenant that is not defined where admins define
// tenants.
func (d *Driver) checkTenant(tenant string) error {
	if d.tenants == nil {
		return nil
	}
	if defined, any := d.tenants.TenantDefined(tenant); any && !defined {
		return fmt.Errorf("tenant %q is not defined in this cluster (tenetctl tenant create %s)", tenant, tenant)
	}
	return nil
}

var _ Tenants = (*registry.Registry)(nil)
