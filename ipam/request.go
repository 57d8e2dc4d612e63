package ipam

// Decoding Docker's RequestAddress (as of Docker 20.10) into an
// AddressRequest, so the driver glue stays a line long.

// Option keys Docker puts in RequestAddress.Options.
const (
	OptRequestAddressType = "RequestAddressType"                     // set for the gateway
	OptGatewayType        = "com.docker.network.gateway"             // its value
	OptMACAddress         = "com.docker.network.endpoint.macaddress" // endpoints, if RequiresMACAddress (no longer asked)
	OptEndpointName       = "com.docker.network.endpoint.name"       // endpoints, newer Docker
)

// ParseAddressRequest classifies a RequestAddress. haveNetwork says whether
// the driver already has, on this host, the network this pool serves (its
// CreateNetwork was done): Docker asks for a network's aux addresses before
// it calls CreateNetwork, and for every endpoint's address after.
//
//   - RequestAddressType=gateway: the gateway (--gateway, or the default).
//   - The endpoint name or MAC option, or no address: an endpoint's.
//   - An address with neither, before the network exists: an aux address.
//   - An address with neither, once the network exists: an endpoint's
//     (--ip, or Docker's replay at its start), marked Untagged, because
//     Docker's replay of the network's aux addresses looks the same (as of
//     Docker 20.10, which sends no endpoint option unless the IPAM driver
//     asks for RequiresMACAddress). RequestAddress tells them apart.
func ParseAddressRequest(poolID, address string, options map[string]string, haveNetwork bool) (AddressRequest, error) {
	a, err := ParseAddress(poolID, address)
	if err != nil {
		return AddressRequest{}, err
	}
	r := AddressRequest{Addr: a}
	_, mac := options[OptMACAddress]
	_, name := options[OptEndpointName]
	switch {
	case options[OptRequestAddressType] == OptGatewayType:
		r.Kind = KindGateway
	case mac || name || !a.IsValid():
		r.Kind = KindContainer
	case haveNetwork:
		r.Kind, r.Untagged = KindContainer, true
	default:
		r.Kind = KindAux
	}
	return r, nil
}
