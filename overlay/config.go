package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
)

// Config configures a Datapath.
type Config struct {
	// VTEP is this host's underlay address: the VXLAN source address, and
	// how the underlay interface (and so the default MTU) is found.
	VTEP netip.Addr
	// Port is the VXLAN UDP destination port.
	Port uint16
	// WireGuardPort is the UDP port, on the underlay, of encrypted
	// networks' traffic (crypt.go).
	WireGuardPort uint16
	// NetnsPrefix is prepended to a tenant's name to name its network
	// namespace (under /run/netns). Tests make it unique per simulated host.
	NetnsPrefix string
	// HostNetns is the path of the host's network namespace, where VXLAN
	// sockets and container veth ends live. Empty: the namespace the
	// process was in when New ran.
	HostNetns string
	// UplinkNet holds the /30 links between each tenant's namespace and the
	// host namespace that carry egress traffic; it must not be used on the
	// host otherwise.
	UplinkNet netip.Prefix
	Logger    *slog.Logger
}

// DefaultPort is the IANA VXLAN port.
const DefaultPort = 4789

// DefaultConfig returns a Config with the defaults; VTEP must still be set.
func DefaultConfig() Config {
	return Config{Port: DefaultPort, WireGuardPort: DefaultWireGuardPort, NetnsPrefix: "tenet-", UplinkNet: netip.MustParsePrefix("169.254.0.0/16"),
		Logger: slog.New(slog.DiscardHandler)}
}

var netnsPrefixPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	if !c.VTEP.IsValid() || c.VTEP.IsUnspecified() || c.VTEP.IsMulticast() {
		return fmt.Errorf("overlay: VTEP %v: must be this host's unicast underlay address", c.VTEP)
	}
	if c.Port == 0 {
		return errors.New("overlay: Port 0: must be 1-65535")
	}
	if c.WireGuardPort == 0 || c.WireGuardPort == c.Port {
		return fmt.Errorf("overlay: WireGuardPort %d: must be 1-65535 and differ from the VXLAN port", c.WireGuardPort)
	}
	if !netnsPrefixPattern.MatchString(c.NetnsPrefix) {
		return fmt.Errorf("overlay: NetnsPrefix %q: must be 1-64 of letters, digits, '_', '.', '-'", c.NetnsPrefix)
	}
	if !c.UplinkNet.Addr().Is4() || c.UplinkNet.Bits() > 24 || c.UplinkNet != c.UplinkNet.Masked() {
		return fmt.Errorf("overlay: UplinkNet %v: must be an IPv4 network of /24 or larger", c.UplinkNet)
	}
	if c.Logger == nil {
		return errors.New("overlay: Logger: must be set")
	}
	return nil
}

// ErrNotSupported is wrapped by errors about kernel features this kernel
// lacks: "vxlan: not supported by this kernel".
var ErrNotSupported = errors.New("not supported by this kernel")
