package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Config configures a Driver.
type Config struct {
	// Host is this host's name in the cluster (its gossip node name).
	Host string
	// VTEP is this host's underlay address.
	VTEP netip.Addr
	// StateDir holds state.json, the local networks and endpoints, so that
	// a restarted tenetd carries on where it stopped.
	StateDir string
	// RequestTimeout bounds every plugin call: Docker gives legacy plugins
	// no timeout of its own, so a slow answer would hang docker run.
	RequestTimeout time.Duration
	// HiddenGrace is how long the endpoints of a host that gossip reports
	// down stay programmed here. A tenetd restart (or a short partition)
	// must not cut traffic to containers that are still running; stale
	// entries for a host that is really gone only point at nothing.
	HiddenGrace time.Duration
	// GCInterval is how often endpoints whose container is gone without a
	// word from Docker are looked for.
	GCInterval time.Duration
	// DefaultTenant is the tenant of an IPAM pool requested without
	// --ipam-opt tenant=.
	DefaultTenant string
	Logger        *slog.Logger
}

// DefaultConfig returns the defaults; Host, VTEP and StateDir must be set.
func DefaultConfig() Config {
	return Config{RequestTimeout: 10 * time.Second, HiddenGrace: 2 * time.Minute, GCInterval: 30 * time.Second, DefaultTenant: "default", Logger: slog.New(slog.DiscardHandler)}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Host == "":
		return errors.New("driver: Host: must be set")
	case !c.VTEP.IsValid():
		return errors.New("driver: VTEP: must be this host's underlay address")
	case c.StateDir == "":
		return errors.New("driver: StateDir: must be set")
	case c.RequestTimeout <= 0:
		return fmt.Errorf("driver: RequestTimeout %v: must be positive", c.RequestTimeout)
	case c.HiddenGrace < 0:
		return fmt.Errorf("driver: HiddenGrace %v: must not be negative", c.HiddenGrace)
	case c.GCInterval <= 0:
		return fmt.Errorf("driver: GCInterval %v: must be positive", c.GCInterval)
	case c.Logger == nil:
		return errors.New("driver: Logger: must be set")
	}
	return nil
}
