package ipam

import (
	"errors"
	"testing"
)

func TestParseAddressRequest(t *testing.T) {
	const pool = "acme/10.1.0.0/24"
	for _, tc := range []struct {
		name    string
		addr    string
		opts    map[string]string
		want    AddrKind
		wantIP  string
		wantErr error
	}{
		{"gateway default", "", map[string]string{OptRequestAddressType: OptGatewayType}, KindGateway, "", nil},
		{"--gateway", "10.1.0.254", map[string]string{OptRequestAddressType: OptGatewayType}, KindGateway, "10.1.0.254", nil},
		{"endpoint", "", map[string]string{OptMACAddress: "02:42:0a:01:00:05"}, KindContainer, "", nil},
		{"--ip", "10.1.0.9", map[string]string{OptMACAddress: "02:42:0a:01:00:05"}, KindContainer, "10.1.0.9", nil},
		{"--ip, newer docker", "10.1.0.9", map[string]string{OptEndpointName: "web"}, KindContainer, "10.1.0.9", nil},
		{"--aux-address", "10.1.0.3", nil, KindAux, "10.1.0.3", nil},
		{"no address, no options", "", nil, KindContainer, "", nil},
		{"address with prefix", "10.1.0.9/24", map[string]string{OptMACAddress: "x"}, KindContainer, "10.1.0.9", nil},
		{"malformed", "10.1.0.300", nil, 0, "", ErrInvalid},
	} {
		r, err := ParseAddressRequest(pool, tc.addr, tc.opts)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		got := ""
		if r.Addr.IsValid() {
			got = r.Addr.String()
		}
		if err != nil || r.Kind != tc.want || got != tc.wantIP {
			t.Errorf("%s: %+v, %v; want kind %d ip %q", tc.name, r, err, tc.want, tc.wantIP)
		}
	}
}
