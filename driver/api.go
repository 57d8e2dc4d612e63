package driver

import "encoding/json"

// Wire types of Docker's remote NetworkDriver protocol (as of Docker 20.10;
// see shared/reference/docker-libnetwork.md §1). Only the fields Tenet reads
// or answers are declared; JSON decoding ignores the rest.

// IPAMData describes one pool of a network, as Docker passes it.
type IPAMData struct {
	AddressSpace string
	Pool         string            // CIDR
	Gateway      string            // CIDR
	AuxAddresses map[string]string // name -> CIDR
}

type createNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []IPAMData
	IPv6Data  []IPAMData
}

type networkRequest struct {
	NetworkID string
}

type endpointInterface struct {
	Address     string `json:",omitempty"`
	AddressIPv6 string `json:",omitempty"`
	MacAddress  string `json:",omitempty"`
}

type createEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *endpointInterface
	Options    map[string]any
}

type createEndpointResponse struct {
	Interface *endpointInterface `json:",omitempty"`
}

type endpointRequest struct {
	NetworkID  string
	EndpointID string
}

type joinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
}

type joinResponse struct {
	InterfaceName         interfaceName
	Gateway               string `json:",omitempty"`
	GatewayIPv6           string `json:",omitempty"`
	DisableGatewayService bool
	StaticRoutes          []staticRoute `json:",omitempty"`
}

// staticRoute is a route Docker adds in the container's namespace;
// RouteType 1 is on-link through the endpoint's interface (libnetwork's
// types.CONNECTED), 0 through NextHop.
type staticRoute struct {
	Destination string
	RouteType   int
	NextHop     string `json:",omitempty"`
}

type capabilitiesResponse struct {
	Scope             string
	ConnectivityScope string
}

// infoResponse's values are strings, except the port map (a list of
// portBinding), which Docker 20.10 ignores anyway: it asserts Go types a
// JSON decoder never makes (docker port shows nothing for a remote
// driver; see README's Limits).
type infoResponse struct {
	Value map[string]any
}

// externalConnectivityRequest is ProgramExternalConnectivity's (and
// RevokeExternalConnectivity's, without options). Options are the
// container's sandbox labels: the port map among them.
type externalConnectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]json.RawMessage
}

// portBinding is libnetwork's types.PortBinding as JSON: one -p, -P or
// exposed port. Proto is an IP protocol number (6 tcp, 17 udp, 132 sctp);
// HostIP is "" for every address; HostPort 0 asks for any free port, and
// HostPortEnd above HostPort for the first free one of the range. IP (the
// container's) is not set for remote drivers.
type portBinding struct {
	Proto       uint8
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

type errorResponse struct {
	Err string
}

// Option keys Tenet reads from "docker network create -o KEY=VALUE".
const (
	OptTenant  = "tenant"  // required: the tenant the network belongs to
	OptNetwork = "network" // required: the network's cluster-wide name within the tenant
	OptVNI     = "vni"     // optional: the VXLAN network identifier
	// OptEncrypted (optional): the network's traffic between hosts goes
	// through WireGuard only. "-o encrypted" alone means true, as with
	// Docker's overlay driver; else true or false.
	OptEncrypted = "encrypted"
	OptMTU       = "com.docker.network.driver.mtu"

	optGeneric  = "com.docker.network.generic"
	optInternal = "com.docker.network.internal"
	optPortMap  = "com.docker.network.portmap" // a sandbox label: []portBinding
)
