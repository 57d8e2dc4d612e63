package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/overlay"
)

// CreateEndpoint creates a container's interface. The MAC is Docker's if
// the user gave one (--mac-address), else derived from the IP by the core
// and returned to Docker, so that a restarted container keeps it.
func (d *Driver) CreateEndpoint(ctx context.Context, req createEndpointRequest) (*createEndpointResponse, error) {
	if req.EndpointID == "" {
		return nil, errors.New("create endpoint: EndpointID is empty")
	}
	n, ok := d.core.NetworkByRef(req.NetworkID)
	if !ok {
		return nil, fmt.Errorf("create endpoint %.12s: network %.12s is not a tenet network on this host", req.EndpointID, req.NetworkID)
	}
	where := fmt.Sprintf("create endpoint %.12s in network %s", req.EndpointID, n.Key())
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, fmt.Errorf("%s: no IPv4 address from IPAM", where)
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, fmt.Errorf("%s: IPv6 is not supported yet", where)
	}
	ip, err := netip.ParsePrefix(req.Interface.Address)
	if err != nil {
		return nil, fmt.Errorf("%s: address %q: not an address in CIDR form", where, req.Interface.Address)
	}
	spec := core.EndpointSpec{ID: req.EndpointID, Network: n.Key(), IP: ip}
	if req.Interface.MacAddress != "" {
		spec.MAC, err = net.ParseMAC(req.Interface.MacAddress)
		if err != nil {
			return nil, fmt.Errorf("%s: mac %q: not a MAC address", where, req.Interface.MacAddress)
		}
	}
	e, err := d.core.CreateEndpoint(ctx, spec)
	if err != nil {
		return nil, err
	}
	resp := &createEndpointResponse{}
	if req.Interface.MacAddress == "" {
		// Docker may set only what it left empty.
		resp.Interface = &endpointInterface{MacAddress: e.MAC.String()}
	}
	return resp, nil
}

// Join hands Docker the container end of the endpoint's veth pair, which
// the core made with the network's MTU (Docker never sets it).
func (d *Driver) Join(ctx context.Context, req joinRequest) (*joinResponse, error) {
	if _, ok := d.core.NetworkByRef(req.NetworkID); !ok {
		return nil, fmt.Errorf("join endpoint %.12s: network %.12s is not a tenet network on this host", req.EndpointID, req.NetworkID)
	}
	e, n, err := d.core.AttachEndpoint(ctx, req.EndpointID, req.SandboxKey)
	if err != nil {
		return nil, fmt.Errorf("join endpoint: %w", err)
	}
	if n.Ref != req.NetworkID {
		return nil, fmt.Errorf("join endpoint %.12s: it is in network %s, not %.12s", e.ID, n.Key(), req.NetworkID)
	}
	// The gateway is the tenant router on this host, which NATs out
	// through the host; --internal networks get none. Either way Docker
	// must not add a docker_gwbridge interface behind our back.
	resp := &joinResponse{
		InterfaceName:         interfaceName{SrcName: overlay.ContainerVeth(e.ID), DstPrefix: "eth"},
		DisableGatewayService: true,
	}
	if n.Egress() {
		resp.Gateway = n.Gateway.String()
	}
	return resp, nil
}

// Leave needs no work: the veth pair goes with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req endpointRequest) error { return nil }

// DeleteEndpoint removes the endpoint. An unknown endpoint is not an error
// (Docker repeats calls when it rolls back).
func (d *Driver) DeleteEndpoint(ctx context.Context, req endpointRequest) error {
	return d.core.DeleteEndpoint(ctx, req.EndpointID)
}

// EndpointInfo describes a local endpoint for EndpointOperInfo (called on
// every inspect: it must be cheap and tells only what the core knows).
func (d *Driver) EndpointInfo(req endpointRequest) (map[string]string, error) {
	e, ok := d.core.Endpoint(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("endpoint info %.12s: no such endpoint", req.EndpointID)
	}
	return map[string]string{"network": e.Network, "ip": e.IP.String(), "mac": e.MAC.String(), "host": d.cfg.Host}, nil
}
