package ipam

// Decoding Docker's RequestAddress (as of Docker 20.10) into an
// AddressRequest, so the driver glue stays a line long.

// Option keys Docker puts in RequestAddress.Options.
const (
	OptRequestAddressType = "RequestAddressType"                     // set for the gateway
	OptGatewayType        = "com.docker.network.gateway"             // its value
	OptMACAddress         = "com.docker.network.endpoint.macaddress" // endpoints, when RequiresMACAddress
	OptEndpointName       = "com.docker.network.endpoint.name"       // endpoints, newer Docker
)

// ParseAddressRequest classifies a RequestAddress: the gateway carries
// RequestAddressType; an endpoint carries its MAC (the driver answers
// RequiresMACAddress: true, so Docker always sends one) or, in newer Docker,
// its name; an explicit address with neither is an --aux-address. A request
// with no address and no option is treated as an endpoint's.
func ParseAddressRequest(poolID, address string, options map[string]string) (AddressRequest, error) {
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
	default:
		r.Kind = KindAux
	}
	return r, nil
}
