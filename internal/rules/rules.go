// Package rules holds Tenet's naming and address rules, each written once:
// what a tenant or network may be called, which Docker network name a
// tenant's network gets, how a VNI is derived, which subnets a tenant may
// use and when two networks' subnets conflict. The plugin front end, the
// admin API, the registry, the core and the datapath all check input
// against these same functions. Pure; safe for concurrent use.
package rules

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"regexp"
	"strings"
)

var (
	tenantPattern  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	networkPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$`)
)

// Tenant checks a tenant name: 1-32 of a-z, 0-9 and '-', starting and
// ending with a letter or digit. A tenant name never holds a '.', which is
// what makes DockerName one-to-one.
func Tenant(name string) error {
	if !tenantPattern.MatchString(name) {
		return fmt.Errorf("tenant %q: must be 1-32 of a-z, 0-9 and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Network checks a network's name within its tenant: 1-64 of a-z, 0-9,
// '_', '.' and '-', starting and ending with a letter or digit.
func Network(name string) error {
	if !networkPattern.MatchString(name) {
		return fmt.Errorf("network %q: must be 1-64 of a-z, 0-9, '_', '.' and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Key is a network's cluster-wide identity: "tenant/name".
func Key(tenant, name string) string { return tenant + "/" + name }

// SplitKey splits "tenant/name" and checks both parts.
func SplitKey(key string) (tenant, name string, err error) {
	tenant, name, ok := strings.Cut(key, "/")
	if !ok {
		return "", "", fmt.Errorf("network %q: want TENANT/NAME", key)
	}
	if err := Tenant(tenant); err != nil {
		return "", "", err
	}
	if err := Network(name); err != nil {
		return "", "", err
	}
	return tenant, name, nil
}

// DockerName is the Docker network name of a tenant's network in every
// engine: "tenant.name". Tenant names hold no '.', so the first '.' splits
// it back, and no two (tenant, name) pairs share a Docker name
// ("acme-eu/web" is acme-eu.web, "acme/eu-web" is acme.eu-web).
func DockerName(tenant, name string) string { return tenant + "." + name }

// VNIs Tenet derives lie in [MinDerivedVNI, MaxVNI]; below is left for
// VNIs an admin chooses.
const (
	MinVNI        = 1
	MaxVNI        = 1<<24 - 1
	MinDerivedVNI = 4096
)

// DeriveVNI maps a network key to a VNI, the same on every host, so hosts
// that create the network at the same time agree without talking. Two keys
// can map to one VNI; creation refuses the second and asks for a VNI.
func DeriveVNI(key string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return MinDerivedVNI + h.Sum32()%(MaxVNI-MinDerivedVNI+1)
}

// VNI checks a VNI chosen by an admin.
func VNI(v uint64) error {
	if v < MinVNI || v > MaxVNI {
		return fmt.Errorf("vni %d: must be %d-%d", v, MinVNI, MaxVNI)
	}
	return nil
}

// MaxSubnetBits is the longest subnet prefix a network may have: a /30
// holds a gateway and one container.
const MaxSubnetBits = 30

// reserved are ranges no tenant network may overlap.
var reserved = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0.0.0.0/8)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16), where tenant uplinks live"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (240.0.0.0/4)"},
}

// Forbidden is a range a host forbids tenant subnets to overlap, with the
// reason shown to the user: its underlay, its uplink range.
type Forbidden struct {
	Prefix netip.Prefix
	What   string // "the underlay of host h1 (198.51.100.0/24)"
}

// Subnet checks a tenant network's subnet: an IPv4 network in CIDR form
// (host bits zero), /MaxSubnetBits or larger, overlapping no reserved range
// and none of forbidden.
func Subnet(p netip.Prefix, forbidden []Forbidden) error {
	if !p.IsValid() || !p.Addr().Is4() || p != p.Masked() {
		return fmt.Errorf("subnet %s: must be an IPv4 network in CIDR form (host bits zero)", p)
	}
	if p.Bits() > MaxSubnetBits {
		return fmt.Errorf("subnet %s: must be a /%d or larger, to hold a gateway and a container", p, MaxSubnetBits)
	}
	for _, r := range reserved {
		if r.p.Overlaps(p) {
			return fmt.Errorf("subnet %s: overlaps %s", p, r.what)
		}
	}
	for _, f := range forbidden {
		if f.Prefix.Overlaps(p) {
			return fmt.Errorf("subnet %s: overlaps %s", p, f.What)
		}
	}
	return nil
}

// Net is what the conflict rule needs to know of an existing network.
type Net struct {
	Tenant, Name string
	VNI          uint32
	Subnet       netip.Prefix
}

// Conflict refuses a new network n that clashes with an existing one: the
// same VNI, or, within one tenant, overlapping subnets. Entries with n's own
// key are skipped (they are n, as other hosts know it).
func Conflict(n Net, existing []Net) error {
	for _, o := range existing {
		if o.Tenant == n.Tenant && o.Name == n.Name {
			continue
		}
		if o.VNI == n.VNI {
			return fmt.Errorf("vni %d is already used by network %s; choose another", n.VNI, Key(o.Tenant, o.Name))
		}
		if o.Tenant == n.Tenant && o.Subnet.IsValid() && o.Subnet.Overlaps(n.Subnet) {
			return fmt.Errorf("subnet %s overlaps network %s (%s) of the same tenant", n.Subnet, Key(o.Tenant, o.Name), o.Subnet)
		}
	}
	return nil
}
