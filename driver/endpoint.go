package driver

import (
	"context"
	"encoding/json"
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
	} else if d.firstInternal(e) {
		resp.StaticRoutes = []staticRoute{{Destination: netip.PrefixFrom(overlay.ResolverAddr, 32).String(), RouteType: 1}}
	}
	return resp, nil
}

// firstInternal says whether e, on a network without egress, is the first
// such endpoint of its container here. Its container then reaches the
// name resolver (overlay.ResolverAddr, on every bridge's tenant
// namespace) on-link through e; a container with egress reaches it
// through its gateway. Only one interface may carry the route (Docker
// fails a second identical one), and whichever does, the resolver answers
// from all of the container's networks of that tenant.
func (d *Driver) firstInternal(e core.Endpoint) bool {
	if e.Netns == "" {
		return true
	}
	for _, o := range d.core.Endpoints() {
		if o.ID == e.ID || o.Netns != e.Netns {
			continue
		}
		if n, ok := d.core.Network(o.Network); ok && !n.Egress() {
			return false
		}
	}
	return true
}

// Leave needs no work: the veth pair goes with DeleteEndpoint.
func (d *Driver) Leave(ctx context.Context, req endpointRequest) error { return nil }

// DeleteEndpoint removes the endpoint. An unknown endpoint is not an error
// (Docker repeats calls when it rolls back).
func (d *Driver) DeleteEndpoint(ctx context.Context, req endpointRequest) error {
	return d.core.DeleteEndpoint(ctx, req.EndpointID)
}

// EndpointInfo describes a local endpoint for EndpointOperInfo (called on
// every inspect: it must be cheap and tells only what the core knows),
// with its published ports in Docker's form.
func (d *Driver) EndpointInfo(req endpointRequest) (map[string]any, error) {
	e, ok := d.core.Endpoint(req.EndpointID)
	if !ok {
		return nil, fmt.Errorf("endpoint info %.12s: no such endpoint", req.EndpointID)
	}
	info := map[string]any{"network": e.Network, "ip": e.IP.String(), "mac": e.MAC.String(), "host": d.cfg.Host}
	if len(e.Ports) > 0 {
		pm := make([]portBinding, 0, len(e.Ports))
		for _, p := range e.Ports {
			b := portBinding{Proto: uint8(p.Proto), IP: e.IP.Addr().String(), Port: p.Port, HostPort: p.HostPort, HostPortEnd: p.HostPort}
			if p.HostIP.IsValid() {
				b.HostIP = p.HostIP.String()
			}
			pm = append(pm, b)
		}
		info[optPortMap] = pm
	}
	return info, nil
}

// ProgramExternalConnectivity publishes the ports of the container whose
// gateway endpoint this is (Docker calls it for that endpoint only, with
// the container's port map, after Join; not on --internal networks).
// A port it cannot publish fails the container's start with the reason.
func (d *Driver) ProgramExternalConnectivity(ctx context.Context, req externalConnectivityRequest) error {
	if _, ok := d.core.NetworkByRef(req.NetworkID); !ok {
		return fmt.Errorf("program external connectivity of endpoint %.12s: network %.12s is not a tenet network on this host", req.EndpointID, req.NetworkID)
	}
	reqs, err := decodePortMap(req.Options[optPortMap])
	if err != nil {
		return fmt.Errorf("publish ports of endpoint %.12s: %w", req.EndpointID, err)
	}
	_, err = d.core.PublishPorts(ctx, req.EndpointID, reqs)
	return err
}

// RevokeExternalConnectivity withdraws the endpoint's published ports
// (Docker calls it before Leave, or when another endpoint becomes the
// container's gateway). An endpoint already gone has none.
func (d *Driver) RevokeExternalConnectivity(ctx context.Context, req externalConnectivityRequest) error {
	if _, err := d.core.PublishPorts(ctx, req.EndpointID, nil); err != nil && !errors.Is(err, core.ErrNotFound) {
		return err
	}
	return nil
}

// decodePortMap turns Docker's port map into requests. Exposed ports
// without a binding (--expose, or EXPOSE without -P) are not in it.
func decodePortMap(raw json.RawMessage) ([]core.PortRequest, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var pm []portBinding
	if err := json.Unmarshal(raw, &pm); err != nil {
		return nil, fmt.Errorf("option %s: not a list of port bindings: %w", optPortMap, err)
	}
	var out []core.PortRequest
	for _, b := range pm {
		r := core.PortRequest{Proto: overlay.Proto(b.Proto), HostPort: b.HostPort, HostPortEnd: b.HostPortEnd, Port: b.Port}
		if b.HostPortEnd == b.HostPort {
			r.HostPortEnd = 0
		}
		if b.HostIP != "" {
			ip, err := netip.ParseAddr(b.HostIP)
			if err != nil {
				return nil, fmt.Errorf("port %d/%s: host address %q: not an IP address", b.Port, overlay.Proto(b.Proto), b.HostIP)
			}
			r.HostIP = ip.Unmap()
		}
		out = append(out, r)
	}
	return out, nil
}
