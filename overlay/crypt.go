package overlay

// Encrypted networks: their VXLAN traffic between hosts goes through
// WireGuard, never in clear.
//
// Each host that has an encrypted network gets one more namespace, the
// crypt namespace (<prefix>_crypt; a tenant name holds no '_'), holding a
// single WireGuard device, tnwg0. The device is made in the host namespace
// and moved there, so its UDP socket stays on the underlay (WireGuard keeps
// the socket in the namespace the device was made in), while its address
// (this host's VTEP as a /32) and a default route through it live in the
// crypt namespace. An encrypted network's VXLAN device is made in the crypt
// namespace, not the host's, and then moved into its tenant's, so its UDP
// socket (port Config.Port) lives in the crypt namespace, whose only way
// out is the WireGuard device:
//
//	container ─ br<vni> ─ vx<vni> ══(socket in <prefix>_crypt)══ tnwg0 ══(socket in the host ns)══ underlay
//
// So an encrypted network's frames leave the host only inside WireGuard
// (to the peer's VTEP, which is the inner address too: WireGuard's allowed
// IPs for a peer are its VTEP), and a VXLAN datagram from the underlay in
// clear can never reach an encrypted network: the host namespace's VXLAN
// socket has no device with that VNI, and nothing in clear enters the
// crypt namespace. Whether a VXLAN device's socket is in the crypt
// namespace is read from the kernel (its link-netns), not assumed from a
// name.
//
// Keys: every host has one WireGuard key pair (PrivateKey), which the core
// makes and keeps in the kernel only (the device holds it; it is read back
// after a restart and made anew after a reboot); the public half travels
// through gossip. WireGuard itself makes the keys that encrypt traffic, with
// a new handshake every two minutes (forward secrecy), and keeps the
// previous session's keys until the new one is confirmed, so that rotation
// loses nothing.

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// WireGuardOverhead is what WireGuard over IPv4 adds to a packet: outer
// IPv4 20, UDP 8, WireGuard's header 16 and authentication tag 16. Over
// IPv6 it is 20 more.
const WireGuardOverhead = 60

// DefaultWireGuardPort is the UDP port of encrypted traffic.
const DefaultWireGuardPort = 51820

// EncryptedMaxMTU is the largest MTU of an encrypted network over an
// underlay whose clear networks may have up to maxMTU (Datapath.MaxMTU):
// WireGuard's overhead less (20 more over IPv6).
func EncryptedMaxMTU(maxMTU int, vtep netip.Addr) int {
	if vtep.Is6() && !vtep.Is4In6() {
		return maxMTU - WireGuardOverhead - 20
	}
	return maxMTU - WireGuardOverhead
}

// Crypt is what encrypted networks need on this host: its WireGuard key and
// the hosts it exchanges encrypted traffic with.
type Crypt struct {
	// Key is this host's private key; it must be set when any network is
	// encrypted.
	Key PrivateKey
	// Peers are the other hosts this host sends encrypted traffic to or
	// receives it from, with their public keys.
	Peers []CryptPeer
}

// CryptPeer is another host's WireGuard identity.
type CryptPeer struct {
	VTEP netip.Addr // its underlay address: WireGuard's endpoint and inner address
	Port uint16     // its WireGuard port
	Key  PublicKey
	// PSK is the preshared key of this host and the peer (zero: none).
	// Changing it keeps the current session: WireGuard uses it at the
	// next handshake.
	PSK PresharedKey
}

// PresharedKey is a WireGuard preshared key: a symmetric key both peers
// mix into their handshake. It never prints.
type PresharedKey [32]byte

// IsZero says whether k is unset.
func (k PresharedKey) IsZero() bool { return k == PresharedKey{} }

// String never shows the key; it shows a fingerprint (4 bytes of its
// SHA-256), so that logs tell whether two hosts hold the same one.
func (k PresharedKey) String() string {
	if k.IsZero() {
		return "none"
	}
	sum := sha256.Sum256(k[:])
	return "psk:" + hex.EncodeToString(sum[:4])
}

// GoString is String.
func (k PresharedKey) GoString() string { return k.String() }

// MarshalText refuses, so that a preshared key never lands in JSON.
func (k PresharedKey) MarshalText() ([]byte, error) {
	return nil, errors.New("a preshared key is not marshalled")
}

// PrivateKey is a WireGuard (X25519) private key, clamped as WireGuard
// stores it. It never prints.
type PrivateKey [32]byte

// PublicKey is a WireGuard public key.
type PublicKey [32]byte

// GeneratePrivateKey makes a new random private key.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate wireguard key: %w", err)
	}
	// Clamped as the kernel stores it, so that a key read back compares
	// equal to the one given.
	k[0] &= 248
	k[31] = k[31]&127 | 64
	return k, nil
}

// IsZero says whether k is unset.
func (k PrivateKey) IsZero() bool { return k == PrivateKey{} }

// Public returns k's public key.
func (k PrivateKey) Public() PublicKey {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		return PublicKey{} // cannot happen: any 32 bytes are a key
	}
	var p PublicKey
	copy(p[:], priv.PublicKey().Bytes())
	return p
}

// String never shows the key.
func (k PrivateKey) String() string { return "(private key)" }

// GoString never shows the key.
func (k PrivateKey) GoString() string { return "(private key)" }

// MarshalText refuses, so that a private key never lands in JSON or logs.
func (k PrivateKey) MarshalText() ([]byte, error) {
	return nil, errors.New("a private key is not marshalled")
}

// IsZero says whether p is unset.
func (p PublicKey) IsZero() bool { return p == PublicKey{} }

// String is the key in base64, as wg(8) shows it.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// ParsePublicKey parses the base64 form.
func ParsePublicKey(s string) (PublicKey, error) {
	var p PublicKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(p) {
		return p, fmt.Errorf("public key %q: want 32 bytes in base64", s)
	}
	copy(p[:], b)
	return p, nil
}

// validate checks the peers (the key is checked against the networks by
// State.Validate).
func (c Crypt) validate() error {
	vteps := map[netip.Addr]bool{}
	keys := map[PublicKey]netip.Addr{}
	for _, p := range c.Peers {
		if !p.VTEP.IsValid() || p.VTEP.IsUnspecified() || p.VTEP.IsMulticast() || p.VTEP.Zone() != "" {
			return invalid("crypt peer %v: vtep: must be a unicast address", p.VTEP)
		}
		if p.Port == 0 {
			return invalid("crypt peer %v: port 0: must be 1-65535", p.VTEP)
		}
		if p.Key.IsZero() {
			return invalid("crypt peer %v: no public key", p.VTEP)
		}
		if vteps[p.VTEP.Unmap()] {
			return invalid("crypt peer %v: listed twice", p.VTEP)
		}
		vteps[p.VTEP.Unmap()] = true
		if o, dup := keys[p.Key]; dup {
			return invalid("crypt peer %v: public key %s already belongs to peer %v", p.VTEP, p.Key, o)
		}
		keys[p.Key] = p.VTEP
	}
	return nil
}

// CryptObjects are the objects of the crypt namespace.
type CryptObjects struct {
	// Device is the WireGuard device; a zero Device (observed): the
	// namespace has none.
	Device WGDevice
	// Peers by public key.
	Peers map[PublicKey]WGPeer
}

// WGDevice is the crypt namespace's WireGuard device (wgName) as Tenet
// sets it.
type WGDevice struct {
	MTU   int
	Addr  netip.Prefix // this host's VTEP, /32 (or /128)
	Port  uint16       // the listen port, on the underlay
	Key   PrivateKey
	Up    bool
	Route bool // the default route of the crypt namespace goes through it
}

func (w WGDevice) String() string {
	s := fmt.Sprintf("%s type wireguard mtu %d addr %s listen-port %d", wgName, w.MTU, w.Addr, w.Port)
	if !w.Key.IsZero() {
		s += " public-key " + w.Key.Public().String()
	}
	if w.Route {
		s += " default-route"
	}
	if w.Up {
		s += " up"
	}
	return s
}

// WGPeer is a peer of the WireGuard device.
type WGPeer struct {
	Key      PublicKey
	Endpoint netip.AddrPort
	Allowed  netip.Prefix // the peer's VTEP as a /32 (or /128)
	PSK      PresharedKey
}

func (p WGPeer) String() string {
	s := fmt.Sprintf("peer %s endpoint %s allowed-ips %s", p.Key, p.Endpoint, p.Allowed)
	if !p.PSK.IsZero() {
		s += " preshared-key " + p.PSK.String()
	}
	return s
}

// desireCrypt is the crypt namespace's objects for s on host h, nil when no
// network of s is encrypted. Peers of the other address family than the
// VTEP's, and this host itself, are left out. Pure.
func desireCrypt(s State, h Host) *CryptObjects {
	any := false
	for i := range s.Networks {
		any = any || s.Networks[i].Encrypted
	}
	if !any {
		return nil
	}
	bits := h.VTEP.BitLen()
	c := &CryptObjects{Peers: map[PublicKey]WGPeer{}}
	c.Device = WGDevice{MTU: h.UnderlayMTU - h.wireGuardOverhead(), Addr: netip.PrefixFrom(h.VTEP, bits), Port: h.WireGuardPort,
		Key: s.Crypt.Key, Up: true, Route: true}
	for _, p := range s.Crypt.Peers {
		vtep := p.VTEP.Unmap()
		if vtep == h.VTEP || vtep.BitLen() != bits {
			continue
		}
		c.Peers[p.Key] = WGPeer{Key: p.Key, Endpoint: netip.AddrPortFrom(vtep, p.Port), Allowed: netip.PrefixFrom(vtep, bits), PSK: p.PSK}
	}
	return c
}

// wireGuardOverhead is WireGuard's overhead on this host's underlay.
func (h Host) wireGuardOverhead() int {
	if h.VTEP.Is6() && !h.VTEP.Is4In6() {
		return WireGuardOverhead + 20
	}
	return WireGuardOverhead
}

// MaxMTUEncrypted is the largest MTU of an encrypted network: the
// WireGuard device's MTU less VXLAN's overhead.
func (h Host) MaxMTUEncrypted() int { return EncryptedMaxMTU(h.MaxMTU(), h.VTEP) }
