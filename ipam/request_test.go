package ipam

import (
	"errors"
	"testing"
)

func TestParseAddressRequest(t *testing.T) {
	const pool = "acme/10.1.0.0/24"
	for _, tc := range []struct {
		name         string
		addr         string
		opts         map[string]string
		haveNetwork  bool
		want         AddrKind
		wantUntagged bool
		wantIP       string
		wantErr      error
	}{
		{"gateway default", "", map[string]string{OptRequestAddressType: OptGatewayType}, false, KindGateway, false, "", nil},
		{"--gateway", "10.1.0.254", map[string]string{OptRequestAddressType: OptGatewayType}, false, KindGateway, false, "10.1.0.254", nil},
		{"gateway replayed", "10.1.0.254", map[string]string{OptRequestAddressType: OptGatewayType}, true, KindGateway, false, "10.1.0.254", nil},
		{"--aux-address at network create", "10.1.0.3", nil, false, KindAux, false, "10.1.0.3", nil},
		{"endpoint, Docker 20.10", "", nil, true, KindContainer, false, "", nil},
		{"endpoint, newer Docker", "", map[string]string{OptEndpointName: "web"}, true, KindContainer, false, "", nil},
		{"endpoint with MAC (RequiresMACAddress)", "", map[string]string{OptMACAddress: "02:42:0a:01:00:05"}, true, KindContainer, false, "", nil},
		{"--ip, Docker 20.10 (or a replay)", "10.1.0.9", nil, true, KindContainer, true, "10.1.0.9", nil},
		{"--ip, newer Docker", "10.1.0.9", map[string]string{OptEndpointName: "web"}, true, KindContainer, false, "10.1.0.9", nil},
		{"--ip with MAC", "10.1.0.9", map[string]string{OptMACAddress: "x"}, false, KindContainer, false, "10.1.0.9", nil},
		{"address with prefix", "10.1.0.9/24", nil, true, KindContainer, true, "10.1.0.9", nil},
		{"no address, no network yet", "", nil, false, KindContainer, false, "", nil},
		{"malformed", "10.1.0.300", nil, true, 0, false, "", ErrInvalid},
	} {
		r, err := ParseAddressRequest(pool, tc.addr, tc.opts, tc.haveNetwork)
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
		if err != nil || r.Kind != tc.want || r.Untagged != tc.wantUntagged || got != tc.wantIP {
			t.Errorf("%s: %+v, %v; want kind %d untagged %v ip %q", tc.name, r, err, tc.want, tc.wantUntagged, tc.wantIP)
		}
	}
}
