package rules

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNamesAcceptAndRefuseNamingTheInput(t *testing.T) {
	for _, ok := range []string{"a", "acme", "acme-eu", "a1", strings.Repeat("x", 32)} {
		if err := Tenant(ok); err != nil {
			t.Errorf("Tenant(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Acme", "acme.eu", "acme/eu", "-acme", "acme-", strings.Repeat("x", 33), "acme eu"} {
		err := Tenant(bad)
		if err == nil || !strings.Contains(err.Error(), "\""+bad+"\"") {
			t.Errorf("Tenant(%q) = %v; want an error naming it", bad, err)
		}
	}
	for _, ok := range []string{"web", "eu-web", "web_1", "v1.2", strings.Repeat("x", 64)} {
		if err := Network(ok); err != nil {
			t.Errorf("Network(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Web", "web/x", ".web", "web.", strings.Repeat("x", 65)} {
		if err := Network(bad); err == nil {
			t.Errorf("Network(%q) accepted", bad)
		}
	}
}

func TestDockerNamesNeverCollide(t *testing.T) {
	// The reported collision, and every pairing of a few dashed names.
	seen := map[string]string{}
	words := []string{"acme", "acme-eu", "eu", "eu-web", "web", "a", "a-b", "b", "b-c", "c", "a.b", "b.c"}
	for _, tn := range words {
		if Tenant(tn) != nil {
			continue
		}
		for _, nn := range words {
			key := Key(tn, nn)
			d := DockerName(tn, nn)
			if o, dup := seen[d]; dup {
				t.Fatalf("%s and %s both map to %s", o, key, d)
			}
			seen[d] = key
		}
	}
	if DockerName("acme-eu", "web") == DockerName("acme", "eu-web") {
		t.Fatal("the reported collision is back")
	}
}

func TestSubnetRules(t *testing.T) {
	underlay := []Forbidden{{netip.MustParsePrefix("198.51.100.0/24"), "the underlay"},
		{netip.MustParsePrefix("169.254.0.0/16"), "the uplink range"}}
	for _, ok := range []string{"10.1.0.0/24", "10.0.0.0/8", "192.168.1.0/30"} {
		if err := Subnet(netip.MustParsePrefix(ok), underlay); err != nil {
			t.Errorf("Subnet(%s) = %v", ok, err)
		}
	}
	for bad, want := range map[string]string{
		"0.0.0.0/0":        "overlaps",
		"127.0.0.0/16":     "loopback",
		"224.1.0.0/16":     "multicast",
		"169.254.1.0/24":   "uplink",
		"198.51.100.64/26": "underlay",
		"198.0.0.0/8":      "underlay",
		"10.1.0.1/24":      "host bits",
		"10.1.0.0/31":      "/30",
		"fd00::/64":        "IPv4",
	} {
		err := Subnet(netip.MustParsePrefix(bad), underlay)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), bad) {
			t.Errorf("Subnet(%s) = %v; want an error naming it and %q", bad, err, want)
		}
	}
}

func TestConflict(t *testing.T) {
	web := Net{"acme", "web", 5000, netip.MustParsePrefix("10.1.0.0/24")}
	existing := []Net{web, {"globex", "web", 5001, netip.MustParsePrefix("10.1.0.0/24")}}
	if err := Conflict(web, existing); err != nil {
		t.Fatalf("a network conflicts with itself: %v", err)
	}
	if err := Conflict(Net{"acme", "db", 5002, netip.MustParsePrefix("10.2.0.0/24")}, existing); err != nil {
		t.Fatal(err)
	}
	if err := Conflict(Net{"acme", "db", 5002, netip.MustParsePrefix("10.1.0.128/25")}, existing); err == nil ||
		!strings.Contains(err.Error(), "overlaps network acme/web") {
		t.Fatalf("overlap in one tenant: %v", err)
	}
	if err := Conflict(Net{"other", "db", 5001, netip.MustParsePrefix("10.9.0.0/24")}, existing); err == nil ||
		!strings.Contains(err.Error(), "vni 5001") {
		t.Fatalf("vni reuse: %v", err)
	}
}

func TestDeriveVNIInRange(t *testing.T) {
	for _, k := range []string{"acme/web", "a/b", ""} {
		if v := DeriveVNI(k); v < MinDerivedVNI || v > MaxVNI || v != DeriveVNI(k) {
			t.Fatalf("DeriveVNI(%q) = %d", k, v)
		}
	}
}
