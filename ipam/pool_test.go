package ipam

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePoolRequest(t *testing.T) {
	for _, tc := range []struct {
		name          string
		space, pool   string
		sub           string
		opts          map[string]string
		v6            bool
		wantID        string
		wantRange     string
		wantErr       error
		wantErrSubstr string
	}{
		{name: "tenant from ipam-opt", space: LocalSpace, pool: "10.1.0.0/24", opts: map[string]string{"tenant": "acme"}, wantID: "acme/10.1.0.0/24"},
		{name: "default tenant", space: LocalSpace, pool: "10.1.0.0/24", wantID: "default/10.1.0.0/24"},
		{name: "unmasked subnet is masked", pool: "10.1.0.7/24", opts: map[string]string{"tenant": "b"}, wantID: "b/10.1.0.0/24"},
		{name: "ip-range", pool: "10.1.0.0/24", sub: "10.1.0.128/25", wantID: "default/10.1.0.0/24", wantRange: "10.1.0.128/25"},
		{name: "ip-range equal to subnet is dropped", pool: "10.1.0.0/24", sub: "10.1.0.0/24", wantID: "default/10.1.0.0/24"},
		{name: "v6", pool: "fd00:1::/64", v6: true, wantID: "default/fd00:1::/64"},
		{name: "malformed CIDR", pool: "10.1.0.300/24", wantErr: ErrInvalid, wantErrSubstr: `subnet "10.1.0.300/24": not a CIDR`},
		{name: "no subnet", pool: "", wantErr: ErrInvalid, wantErrSubstr: "pass --subnet"},
		{name: "range without subnet", pool: "", sub: "10.1.0.0/25", wantErr: ErrInvalid},
		{name: "range outside subnet", pool: "10.1.0.0/24", sub: "10.2.0.0/25", wantErr: ErrNotInPool, wantErrSubstr: "must lie inside the subnet"},
		{name: "range larger than subnet", pool: "10.1.0.0/24", sub: "10.1.0.0/23", wantErr: ErrNotInPool},
		{name: "family mismatch", pool: "10.1.0.0/24", v6: true, wantErr: ErrInvalid},
		{name: "too small", pool: "10.1.0.0/31", wantErr: ErrInvalid},
		{name: "bad tenant", pool: "10.1.0.0/24", opts: map[string]string{"tenant": "Acme/x"}, wantErr: ErrInvalid, wantErrSubstr: `tenant "Acme/x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParsePoolRequest("default", tc.space, tc.pool, tc.sub, tc.opts, tc.v6)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.PoolID() != tc.wantID {
				t.Fatalf("pool id = %q, want %q", r.PoolID(), tc.wantID)
			}
			if got := ""; r.Range.IsValid() {
				got = r.Range.String()
				if got != tc.wantRange {
					t.Fatalf("range = %q, want %q", got, tc.wantRange)
				}
			} else if tc.wantRange != "" {
				t.Fatalf("range not set, want %q", tc.wantRange)
			}
			tenant, sub, err := ParsePoolID(r.PoolID())
			if err != nil || tenant != r.Tenant || sub != r.Subnet {
				t.Fatalf("ParsePoolID(%q) = %q, %v, %v", r.PoolID(), tenant, sub, err)
			}
		})
	}
}

func TestParsePoolIDRejects(t *testing.T) {
	for _, id := range []string{"", "acme", "acme/", "acme/10.1.0.7/24", "/10.1.0.0/24", "Acme/10.1.0.0/24", "acme/nope"} {
		if _, _, err := ParsePoolID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParsePoolID(%q): err = %v, want ErrInvalid", id, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Host, ok.Seeds = "h1", []string{"h1", "h2"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Host", func(c *Config) { c.Host = "" }},
		{"Seeds", func(c *Config) { c.Seeds = nil }},
		{"Seeds", func(c *Config) { c.Seeds = []string{"h2", "h1"} }},
		{"Seeds", func(c *Config) { c.Seeds = []string{"h1", "h1"} }},
		{"BlockBitsV4", func(c *Config) { c.BlockBitsV4 = 31 }},
		{"BlockBitsV6", func(c *Config) { c.BlockBitsV6 = 64 }},
		{"DefaultTenant", func(c *Config) { c.DefaultTenant = "A" }},
		{"AnswerTimeout", func(c *Config) { c.AnswerTimeout = 0 }},
	} {
		c := ok
		c.Seeds = append([]string(nil), ok.Seeds...)
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: err = %v, want it to name the field", tc.field, err)
		}
	}
}
