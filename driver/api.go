package driver

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
}

type capabilitiesResponse struct {
	Scope             string
	ConnectivityScope string
}

type infoResponse struct {
	Value map[string]string
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
)
