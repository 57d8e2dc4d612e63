package core

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// Config configures a Core.
type Config struct {
	// Host is this host's name in the cluster (its gossip node name).
	Host string
	// VTEP is this host's underlay address.
	VTEP netip.Addr
	// StateDir holds state.json and state.journal: this host's networks
	// and endpoints.
	StateDir string
	// HiddenGrace is how long the endpoints of a host that gossip reports
	// down stay programmed here: a tenetd restart or a short partition
	// must not cut traffic to containers that still run.
	HiddenGrace time.Duration
	// SyncWait bounds how long, after start, remote entries found in the
	// kernel are kept for a network gossip has not yet synced.
	SyncWait time.Duration
	// RepairInterval is how often the whole datapath is reconciled, to
	// repair what was changed behind Tenet's back.
	RepairInterval time.Duration
	// RetryInterval spaces the retries of a reconcile that failed.
	RetryInterval time.Duration
	// PSKRotation is how often this host replaces its share of the
	// WireGuard preshared keys with its peers (crypt.PresharedKey), and so
	// every preshared key it has; 0: only at start.
	PSKRotation time.Duration
	// GCInterval is how often endpoints whose network namespace vanished
	// without a word from the front end are looked for.
	GCInterval time.Duration
	// UnjoinedGrace is how long an endpoint may wait to be attached to a
	// network namespace before it is collected.
	UnjoinedGrace time.Duration
	// AbandonedKeep is how long the datapath keeps a network whose
	// creation the caller gave up on while the kernel was still building
	// it (a slow host), so that the caller's retry of the same network
	// finds it built instead of starting over; 0: removed at once.
	AbandonedKeep time.Duration
	// Forbidden lists ranges tenant subnets may not overlap (the underlay,
	// the uplink range), besides the ones package rules always refuses.
	Forbidden []rules.Forbidden
	// Infra is what tenants may not reach through their egress (the
	// underlay networks, gossip's port) and what an operator allows
	// anyway; every member's underlay address is added to Deny.
	Infra overlay.Infra
	// Observer receives measurements (metrics); nil: none.
	Observer Observer
	// DynamicPorts are the host ports a published port asked for without
	// one (docker run -p 80, -P) is given from, lowest free first.
	DynamicPorts PortRange
	Logger       *slog.Logger
}

// DefaultConfig returns the defaults; Host, VTEP and StateDir must be set.
func DefaultConfig() Config {
	return Config{HiddenGrace: 2 * time.Minute, SyncWait: 15 * time.Second, RepairInterval: 5 * time.Minute, PSKRotation: time.Hour,
		RetryInterval: 10 * time.Second, GCInterval: 30 * time.Second, UnjoinedGrace: 10 * time.Minute, AbandonedKeep: time.Minute,
		DynamicPorts: PortRange{First: 49153, Last: 60999}, Logger: slog.New(slog.DiscardHandler)}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.Host == "":
		return errors.New("core: Host: must be set")
	case !c.VTEP.IsValid():
		return errors.New("core: VTEP: must be this host's underlay address")
	case c.StateDir == "":
		return errors.New("core: StateDir: must be set")
	case c.HiddenGrace < 0:
		return fmt.Errorf("core: HiddenGrace %v: must not be negative", c.HiddenGrace)
	case c.SyncWait < 0:
		return fmt.Errorf("core: SyncWait %v: must not be negative", c.SyncWait)
	case c.PSKRotation < 0:
		return fmt.Errorf("core: PSKRotation %v: must not be negative", c.PSKRotation)
	case c.RepairInterval <= 0:
		return fmt.Errorf("core: RepairInterval %v: must be positive", c.RepairInterval)
	case c.RetryInterval <= 0:
		return fmt.Errorf("core: RetryInterval %v: must be positive", c.RetryInterval)
	case c.GCInterval <= 0:
		return fmt.Errorf("core: GCInterval %v: must be positive", c.GCInterval)
	case c.UnjoinedGrace <= 0:
		return fmt.Errorf("core: UnjoinedGrace %v: must be positive", c.UnjoinedGrace)
	case c.AbandonedKeep < 0:
		return fmt.Errorf("core: AbandonedKeep %v: must not be negative", c.AbandonedKeep)
	case c.DynamicPorts.First == 0 || c.DynamicPorts.Last < c.DynamicPorts.First:
		return fmt.Errorf("core: DynamicPorts %d-%d: must be a range within 1-65535", c.DynamicPorts.First, c.DynamicPorts.Last)
	case c.Logger == nil:
		return errors.New("core: Logger: must be set")
	}
	return nil
}
