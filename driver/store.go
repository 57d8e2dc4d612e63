package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// netDef is a Tenet network as created on this host.
type netDef struct {
	DockerID string       `json:"docker_id"` // this engine's ID for it
	Tenant   string       `json:"tenant"`
	Name     string       `json:"name"`
	VNI      uint32       `json:"vni"`
	Subnet   netip.Prefix `json:"subnet"`
	Gateway  netip.Addr   `json:"gateway,omitzero"`
	MTU      int          `json:"mtu,omitempty"`
	Internal bool         `json:"internal,omitempty"`
}

// egress says whether the network's containers may leave it through the
// host: it has a gateway and is not --internal.
func (n *netDef) egress() bool { return !n.Internal && n.Gateway.IsValid() }

// key is the network's cluster-wide identity.
func (n *netDef) key() string { return n.Tenant + "/" + n.Name }

// localEP is an endpoint of a container on this host.
type localEP struct {
	ID      string           `json:"id"`
	Network string           `json:"network"` // DockerID
	IP      netip.Prefix     `json:"ip"`
	MAC     net.HardwareAddr `json:"mac"`
	// Sandbox is the container's network namespace path Docker gave in
	// Join; once it is gone, so is the container.
	Sandbox string    `json:"sandbox,omitempty"`
	Created time.Time `json:"created,omitzero"`
}

type savedState struct {
	Networks  []*netDef  `json:"networks"`
	Endpoints []*localEP `json:"endpoints"`
	// The last view of other hosts, so that a restarted tenetd keeps their
	// endpoints programmed (for HiddenGrace) until gossip has caught up,
	// instead of withdrawing them from the kernel at its first reconcile.
	Remotes  []savedRemote         `json:"remotes,omitempty"`
	Attached map[string][]string   `json:"attached,omitempty"` // network key -> hosts
	VTEPs    map[string]netip.Addr `json:"vteps,omitempty"`
}

type savedRemote struct {
	ID      string           `json:"id"`
	Network string           `json:"network"`
	MAC     net.HardwareAddr `json:"mac"`
	IP      netip.Addr       `json:"ip"`
	VTEP    netip.Addr       `json:"vtep"`
	Host    string           `json:"host"`
	Version uint64           `json:"version"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func loadState(dir string) (savedState, error) {
	var s savedState
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("driver: read state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("driver: read state %s: %w", statePath(dir), err)
	}
	return s, nil
}

// saveState writes the state atomically (temporary file, fsync, rename).
func saveState(dir string, s savedState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("driver: save state: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("driver: save state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("driver: save state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("driver: save state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("driver: save state: %w", err)
	}
	if err := os.Rename(tmp, statePath(dir)); err != nil {
		return fmt.Errorf("driver: save state: %w", err)
	}
	return nil
}
