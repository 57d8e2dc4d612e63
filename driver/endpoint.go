package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tenet-net/tenet/overlay"
)

// CreateEndpoint makes the endpoint's veth pair, programs nothing remote
// yet, and publishes it so that every other host with the network programs
// it. The MAC is Docker's if the user gave one, else derived from the IP
// and returned to Docker.
func (d *Driver) CreateEndpoint(ctx context.Context, req createEndpointRequest) (*createEndpointResponse, error) {
	if req.EndpointID == "" {
		return nil, errors.New("create endpoint: EndpointID is empty")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create endpoint %.12s: gave up waiting: %w", req.EndpointID, err)
	}
	n := d.nets[req.NetworkID]
	if n == nil {
		return nil, fmt.Errorf("create endpoint %.12s: network %.12s is not a tenet network on this host", req.EndpointID, req.NetworkID)
	}
	where := fmt.Sprintf("create endpoint %.12s in network %s", req.EndpointID, n.key())
	if d.eps[req.EndpointID] != nil {
		return nil, fmt.Errorf("%s: already exists", where)
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, fmt.Errorf("%s: no IPv4 address from IPAM", where)
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, fmt.Errorf("%s: IPv6 is not supported yet", where)
	}
	ip, err := netip.ParsePrefix(req.Interface.Address)
	if err != nil || !n.Subnet.Contains(ip.Addr()) {
		return nil, fmt.Errorf("%s: address %q: must be an address in %s", where, req.Interface.Address, n.Subnet)
	}
	e := &localEP{ID: req.EndpointID, Network: n.DockerID, IP: ip, Created: time.Now().UTC()}
	resp := &createEndpointResponse{}
	if req.Interface.MacAddress != "" {
		e.MAC, err = net.ParseMAC(req.Interface.MacAddress)
		if err != nil || len(e.MAC) != 6 {
			return nil, fmt.Errorf("%s: mac %q: not a MAC address", where, req.Interface.MacAddress)
		}
	} else {
		e.MAC = overlay.DeriveMAC([]netip.Addr{ip.Addr()}, e.ID)
		resp.Interface = &endpointInterface{MacAddress: e.MAC.String()}
	}
	if err := d.checkAddressLocked(n, e); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	d.eps[e.ID] = e
	err = d.reconcileLocked(ctx)
	if err == nil {
		err = ctx.Err() // Docker was told it failed: do not succeed behind its back
	}
	if err != nil {
		delete(d.eps, e.ID)
		d.reconcileAndLogLocked(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := d.saveLocked(); err != nil {
		delete(d.eps, e.ID)
		d.reconcileAndLogLocked(ctx)
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	d.publishEndpointLocked(e)
	d.log.Info("endpoint created", "endpoint", e.ID, "network", n.key(), "ip", e.IP, "mac", e.MAC.String())
	return resp, nil
}

// checkAddressLocked refuses an address or MAC another endpoint of the
// network already has, here or on another host.
func (d *Driver) checkAddressLocked(n *netDef, e *localEP) error {
	for _, o := range d.eps {
		if o.Network != n.DockerID {
			continue
		}
		if o.IP.Addr() == e.IP.Addr() {
			return fmt.Errorf("address %s is already used by endpoint %.12s on this host", e.IP.Addr(), o.ID)
		}
		if o.MAC.String() == e.MAC.String() {
			return fmt.Errorf("mac %s is already used by endpoint %.12s on this host", e.MAC, o.ID)
		}
	}
	for _, r := range d.remotes {
		if r.ep.Network != n.key() || !r.hiddenSince.IsZero() {
			continue
		}
		if r.ep.IP == e.IP.Addr() {
			return fmt.Errorf("address %s is already used by endpoint %.12s on host %s", e.IP.Addr(), r.ep.ID, r.ep.Host)
		}
		if r.ep.MAC.String() == e.MAC.String() {
			return fmt.Errorf("mac %s is already used by endpoint %.12s on host %s", e.MAC, r.ep.ID, r.ep.Host)
		}
	}
	return nil
}

// Join hands Docker the container end of the endpoint's veth pair, which
// CreateEndpoint made with the network's MTU (Docker never sets it).
func (d *Driver) Join(ctx context.Context, req joinRequest) (*joinResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.eps[req.EndpointID]
	if e == nil || e.Network != req.NetworkID {
		return nil, fmt.Errorf("join endpoint %.12s: no such endpoint in network %.12s", req.EndpointID, req.NetworkID)
	}
	if req.SandboxKey != "" && e.Sandbox != req.SandboxKey {
		e.Sandbox = req.SandboxKey
		if err := d.saveLocked(); err != nil {
			return nil, fmt.Errorf("join endpoint %.12s: %w", e.ID, err)
		}
	}
	// The gateway is the tenant router on this host, which NATs out
	// through the host; --internal networks get none. Either way Docker
	// must not add a docker_gwbridge interface behind our back.
	resp := &joinResponse{
		InterfaceName:         interfaceName{SrcName: overlay.ContainerVeth(e.ID), DstPrefix: "eth"},
		DisableGatewayService: true,
	}
	if n := d.nets[e.Network]; n.egress() {
		resp.Gateway = n.Gateway.String()
	}
	return resp, nil
}

// Leave needs no work: the veth pair goes with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req endpointRequest) error {
	return nil
}

// DeleteEndpoint removes the veth pair and withdraws the endpoint from the
// cluster. An unknown endpoint is not an error (Docker repeats calls when it
// rolls back).
func (d *Driver) DeleteEndpoint(ctx context.Context, req endpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.eps[req.EndpointID]
	if e == nil {
		return nil
	}
	delete(d.eps, e.ID)
	// Withdraw first: other hosts stop sending to it while we clean up.
	d.cl.DeleteEndpoint(e.ID)
	if err := d.reconcileLocked(ctx); err != nil {
		d.eps[e.ID] = e
		d.publishEndpointLocked(e)
		return fmt.Errorf("delete endpoint %.12s: %w", e.ID, err)
	}
	if err := d.saveLocked(); err != nil {
		return fmt.Errorf("delete endpoint %.12s: %w", e.ID, err)
	}
	d.log.Info("endpoint deleted", "endpoint", e.ID, "ip", e.IP)
	return nil
}

// unjoinedGrace is how long an endpoint may wait for its Join.
const unjoinedGrace = 10 * time.Minute

// collectGarbage deletes endpoints whose container sandbox no longer
// exists: after a restart Docker may drop endpoints without calling Leave
// or DeleteEndpoint (it does not load a lazily activated plugin for its
// clean-up), which would leave their veths and other hosts' entries.
func (d *Driver) collectGarbage(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var gone []*localEP
	for _, e := range d.eps {
		if e.Sandbox == "" {
			// Never joined: Docker failed between CreateEndpoint and Join
			// and did not roll back (a crash). Give it time to join.
			if !e.Created.IsZero() && time.Since(e.Created) > unjoinedGrace {
				gone = append(gone, e)
			}
			continue
		}
		// Only when this process can see where sandboxes live (it may run
		// in another mount namespace than dockerd) is a missing one gone.
		if _, err := os.Stat(filepath.Dir(e.Sandbox)); err != nil {
			continue
		}
		if _, err := os.Stat(e.Sandbox); errors.Is(err, fs.ErrNotExist) {
			gone = append(gone, e)
		}
	}
	if len(gone) == 0 {
		return
	}
	for _, e := range gone {
		delete(d.eps, e.ID)
		d.cl.DeleteEndpoint(e.ID)
		d.log.Warn("endpoint's sandbox is gone; removing it", "endpoint", e.ID, "ip", e.IP, "sandbox", e.Sandbox)
	}
	d.reconcileAndLogLocked(ctx)
	if err := d.saveLocked(); err != nil {
		d.log.Error("save state after garbage collection", "err", err)
	}
}

// EndpointInfo describes a local endpoint for EndpointOperInfo.
func (d *Driver) EndpointInfo(req endpointRequest) (map[string]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.eps[req.EndpointID]
	if e == nil {
		return nil, fmt.Errorf("endpoint info %.12s: no such endpoint", req.EndpointID)
	}
	n := d.nets[e.Network]
	return map[string]string{"network": n.key(), "vni": fmt.Sprint(n.VNI), "ip": e.IP.String(),
		"mac": e.MAC.String(), "host": d.cfg.Host, "vtep": d.cfg.VTEP.String()}, nil
}
