package driver

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"
	"strconv"

	"github.com/tenet-net/tenet/overlay"
)

var (
	tenantPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	networkPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
)

// VNIs Tenet derives itself lie in [minDerivedVNI, overlay.MaxVNI]; below is
// left for VNIs chosen with -o vni.
const minDerivedVNI = 4096

// deriveVNI maps a network's cluster-wide key to a VNI, the same on every
// host, so that hosts creating the network at the same time agree without
// talking.
func deriveVNI(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return minDerivedVNI + h.Sum32()%(overlay.MaxVNI-minDerivedVNI+1)
}

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

// parseNetwork validates a CreateNetwork request into a netDef.
func parseNetwork(req createNetworkRequest) (*netDef, error) {
	if req.NetworkID == "" {
		return nil, errors.New("NetworkID is empty")
	}
	opts, err := genericOptions(req.Options)
	if err != nil {
		return nil, err
	}
	n := &netDef{DockerID: req.NetworkID, Tenant: opts[OptTenant], Name: opts[OptNetwork]}
	if n.Tenant == "" || n.Name == "" {
		return nil, fmt.Errorf("options %q and %q are required (docker network create -d tenet -o tenant=TENANT -o network=NAME --subnet CIDR ...): Docker does not tell the driver a network's name", OptTenant, OptNetwork)
	}
	if !tenantPattern.MatchString(n.Tenant) {
		return nil, fmt.Errorf("option tenant %q: must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit", n.Tenant)
	}
	if !networkPattern.MatchString(n.Name) {
		return nil, fmt.Errorf("option network %q: must be 1-64 of a-z, 0-9, '_', '.' and '-', starting with a letter or digit", n.Name)
	}
	if v, ok := opts[OptVNI]; ok {
		vni, err := strconv.ParseUint(v, 10, 32)
		if err != nil || vni < overlay.MinVNI || vni > overlay.MaxVNI {
			return nil, fmt.Errorf("option vni %q: must be a number %d-%d", v, overlay.MinVNI, overlay.MaxVNI)
		}
		n.VNI = uint32(vni)
	} else {
		n.VNI = deriveVNI(n.key())
	}
	if v, ok := opts[OptMTU]; ok {
		mtu, err := strconv.Atoi(v)
		if err != nil || mtu < overlay.MinMTU || mtu > overlay.MaxMTU {
			return nil, fmt.Errorf("option %s %q: must be a number %d-%d", OptMTU, v, overlay.MinMTU, overlay.MaxMTU)
		}
		n.MTU = mtu
	}
	if internal, ok := req.Options[optInternal].(bool); ok {
		n.Internal = internal
	}
	if len(req.IPv6Data) > 0 {
		return nil, errors.New("IPv6 (--ipv6) is not supported yet")
	}
	if len(req.IPv4Data) != 1 {
		return nil, fmt.Errorf("want exactly one IPv4 pool (--subnet CIDR), got %d", len(req.IPv4Data))
	}
	pool := req.IPv4Data[0]
	n.Subnet, err = netip.ParsePrefix(pool.Pool)
	if err != nil || !n.Subnet.Addr().Is4() || n.Subnet != n.Subnet.Masked() {
		return nil, fmt.Errorf("pool %q: must be an IPv4 network in CIDR form", pool.Pool)
	}
	if pool.Gateway != "" {
		gw, err := netip.ParsePrefix(pool.Gateway)
		if err != nil || !n.Subnet.Contains(gw.Addr()) {
			return nil, fmt.Errorf("gateway %q: must be an address in %s", pool.Gateway, n.Subnet)
		}
		n.Gateway = gw.Addr()
	}
	return n, nil
}

// CreateNetwork records a network on this host, checks it against the
// cluster's definition of the same tenant/name, builds its bridge and VXLAN
// device, and publishes it.
func (d *Driver) CreateNetwork(ctx context.Context, req createNetworkRequest) error {
	n, err := parseNetwork(req)
	if err != nil {
		return fmt.Errorf("create network: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create network %s: gave up waiting: %w", n.key(), err)
	}
	if err := d.checkNetworkLocked(n); err != nil {
		return fmt.Errorf("create network %s: %w", n.key(), err)
	}
	d.nets[n.DockerID] = n
	err = d.reconcileLocked(ctx)
	if err == nil {
		// Docker has been told the call failed once the deadline passed;
		// it must not succeed here behind its back.
		err = ctx.Err()
	}
	if err != nil {
		delete(d.nets, n.DockerID)
		d.reconcileAndLogLocked(context.WithoutCancel(ctx))
		return fmt.Errorf("create network %s: %w", n.key(), err)
	}
	if err := d.saveLocked(); err != nil {
		delete(d.nets, n.DockerID)
		d.reconcileAndLogLocked(ctx)
		return fmt.Errorf("create network %s: %w", n.key(), err)
	}
	d.publishNetworkLocked(n)
	d.log.Info("network created", "network", n.key(), "vni", n.VNI, "subnet", n.Subnet, "docker_id", n.DockerID)
	return nil
}

// checkNetworkLocked refuses a definition that conflicts with this host's
// networks or the cluster's: the same tenant/name with another subnet or
// VNI, a VNI of another network, or a subnet overlapping another network of
// the same tenant.
func (d *Driver) checkNetworkLocked(n *netDef) error {
	if o := d.nets[n.DockerID]; o != nil {
		return fmt.Errorf("docker network %.12s already exists here as %s", n.DockerID, o.key())
	}
	for _, o := range d.nets {
		if o.key() == n.key() {
			return fmt.Errorf("already created on this host (docker network %.12s)", o.DockerID)
		}
	}
	if c, ok := d.cl.Network(n.key()); ok {
		if c.Subnet != n.Subnet {
			return fmt.Errorf("subnet %s differs from the cluster's %s (defined by host %s)", n.Subnet, c.Subnet, c.Host)
		}
		if c.VNI != n.VNI {
			return fmt.Errorf("vni %d differs from the cluster's %d (defined by host %s)", n.VNI, c.VNI, c.Host)
		}
	}
	others := d.cl.Networks()
	for _, o := range d.nets {
		others = append(others, gossipNetwork(o))
	}
	for _, c := range others {
		if c.ID == n.key() {
			continue
		}
		if c.VNI == n.VNI {
			return fmt.Errorf("vni %d is already used by network %s; choose another with -o vni=N", n.VNI, c.ID)
		}
		if c.Tenant == n.Tenant && c.Subnet.IsValid() && c.Subnet.Overlaps(n.Subnet) {
			return fmt.Errorf("subnet %s overlaps network %s (%s) of the same tenant", n.Subnet, c.ID, c.Subnet)
		}
	}
	return nil
}

// DeleteNetwork removes a network from this host. Docker calls it after the
// network's last endpoint is gone; an unknown ID is not an error, so that
// a repeated call is harmless.
func (d *Driver) DeleteNetwork(ctx context.Context, req networkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.nets[req.NetworkID]
	if n == nil {
		return nil
	}
	// Docker deletes a network only once it has no endpoints; any left
	// here are stale (a call that failed half-way), and Docker would only
	// log a refusal. They go with the network.
	for _, e := range d.eps {
		if e.Network == n.DockerID {
			d.log.Warn("deleting a stale endpoint with its network", "endpoint", e.ID, "network", n.key())
			delete(d.eps, e.ID)
			d.cl.DeleteEndpoint(e.ID)
		}
	}
	delete(d.nets, n.DockerID)
	if err := d.reconcileLocked(ctx); err != nil {
		d.nets[n.DockerID] = n
		return fmt.Errorf("delete network %s: %w", n.key(), err)
	}
	if err := d.saveLocked(); err != nil {
		return fmt.Errorf("delete network %s: %w", n.key(), err)
	}
	d.cl.Detach(n.key())
	d.cl.DeleteNetwork(n.key())
	d.log.Info("network deleted", "network", n.key(), "docker_id", n.DockerID)
	return nil
}
