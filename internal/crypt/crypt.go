// Package crypt holds what hosts tell each other about encrypted networks,
// through gossip's key-value table (replicated on every host, over the
// ring's AES-GCM encryption):
//
//   - crypt/wg, one entry per host: the public half of its WireGuard key,
//     its WireGuard port, and its current share of the preshared keys, so
//     that every host can make it a peer. The private half never leaves
//     the host's kernel. Two hosts' preshared key (PresharedKey) is derived
//     from both names and both shares: a host that replaces its share (at
//     start, and every rotation interval) thereby replaces every preshared
//     key it has, and each peer follows as soon as gossip brings the new
//     share. Only members of the ring, which holds the cluster key, see the
//     shares.
//   - crypt/net/<tenant>/<name>, one entry per host that has the network:
//     whether that host has it encrypted, so that a host creating the
//     network with the other setting is refused (encryption is part of a
//     network's cluster-wide definition, like its subnet and VNI; gossip's
//     networks table, whose format another package owns, does not carry it).
//
// Values have a version byte first; decoders check every byte and refuse
// anything else, so a malformed entry from a peer is ignored. Pure; safe for
// concurrent use.
package crypt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// Keys in the key-value table.
const (
	Prefix      = "crypt/"
	HostKey     = Prefix + "wg"
	netPrefix   = Prefix + "net/"
	version     = 1
	hostVersion = 2 // 1 had no share
	hostLen     = 1 + 2 + 32 + 32
	networkLen  = 2
)

// NetworkKey is the key of a network's entries (network: "tenant/name").
func NetworkKey(network string) string { return netPrefix + network }

// IsNetworkKey says whether key is a network's, and whose.
func IsNetworkKey(key string) (network string, ok bool) { return strings.CutPrefix(key, netPrefix) }

// Host is one host's WireGuard identity.
type Host struct {
	Port uint16
	Key  overlay.PublicKey
	// Share is the host's current share of the preshared keys it uses
	// with its peers (PresharedKey); the host replaces it at every start
	// and every rotation interval.
	Share Share
}

// Share is a host's random contribution to its preshared keys. It never
// prints.
type Share [32]byte

// String never shows the share.
func (Share) String() string { return "(share)" }

// GoString never shows the share.
func (Share) GoString() string { return "(share)" }

// NewShare makes a random share.
func NewShare() (Share, error) {
	var s Share
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("make a preshared key share: %w", err)
	}
	return s, nil
}

// PresharedKey is the WireGuard preshared key of hosts a and b, from their
// names and current shares: the same whichever host computes it, and new
// as soon as either host's share is. Pure.
func PresharedKey(a string, aShare Share, b string, bShare Share) overlay.PresharedKey {
	if b < a {
		a, aShare, b, bShare = b, bShare, a, aShare
	}
	h := sha256.New()
	h.Write([]byte("tenet wireguard preshared key v1\x00"))
	for _, x := range []struct {
		name  string
		share Share
	}{{a, aShare}, {b, bShare}} {
		h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(x.name))))
		h.Write([]byte(x.name))
		h.Write(x.share[:])
	}
	var k overlay.PresharedKey
	copy(k[:], h.Sum(nil))
	return k
}

// EncodeHost encodes h: version, port (big-endian), public key, share.
func EncodeHost(h Host) []byte {
	b := make([]byte, 0, hostLen)
	b = append(b, hostVersion)
	b = binary.BigEndian.AppendUint16(b, h.Port)
	b = append(b, h.Key[:]...)
	return append(b, h.Share[:]...)
}

// DecodeHost decodes what EncodeHost made, and refuses anything else: a
// port of 0 and an all-zero key too.
func DecodeHost(b []byte) (Host, error) {
	var h Host
	if len(b) != hostLen {
		return h, fmt.Errorf("wireguard identity of %d bytes: want %d", len(b), hostLen)
	}
	if b[0] != hostVersion {
		return h, fmt.Errorf("wireguard identity version %d: want %d", b[0], hostVersion)
	}
	h.Port = binary.BigEndian.Uint16(b[1:3])
	copy(h.Key[:], b[3:35])
	copy(h.Share[:], b[35:])
	if h.Port == 0 {
		return h, errors.New("wireguard identity: port 0")
	}
	if h.Key.IsZero() {
		return h, errors.New("wireguard identity: all-zero key")
	}
	return h, nil
}

// EncodeNetwork encodes whether a host has a network encrypted.
func EncodeNetwork(encrypted bool) []byte {
	if encrypted {
		return []byte{version, 1}
	}
	return []byte{version, 0}
}

// DecodeNetwork decodes what EncodeNetwork made, and refuses anything else.
func DecodeNetwork(b []byte) (encrypted bool, err error) {
	if len(b) != networkLen || b[0] != version || b[1] > 1 {
		return false, fmt.Errorf("network encryption entry %x: want %x or %x", b, EncodeNetwork(false), EncodeNetwork(true))
	}
	return b[1] == 1, nil
}

// KV is what the readers need of gossip's key-value table.
type KV interface {
	List(prefix string) []gossip.KVEntry
}

// Hosts returns every host's WireGuard identity, by host, leaving out
// malformed entries (returned as bad, host names sorted).
func Hosts(kv KV) (hosts map[string]Host, bad []string) {
	hosts = map[string]Host{}
	for _, e := range kv.List(HostKey) {
		if e.Key != HostKey {
			continue
		}
		h, err := DecodeHost(e.Value)
		if err != nil {
			bad = append(bad, e.Host)
			continue
		}
		hosts[e.Host] = h
	}
	slices.Sort(bad)
	return hosts, bad
}

// NetworkSetting is one host's word on a network.
type NetworkSetting struct {
	Host      string
	Encrypted bool
}

// Networks returns what hosts say of network ("tenant/name"): whether each
// has it encrypted, sorted by host; malformed entries are left out.
func Networks(kv KV, network string) []NetworkSetting {
	var out []NetworkSetting
	key := NetworkKey(network)
	for _, e := range kv.List(key) {
		if e.Key != key {
			continue
		}
		enc, err := DecodeNetwork(e.Value)
		if err != nil {
			continue
		}
		out = append(out, NetworkSetting{Host: e.Host, Encrypted: enc})
	}
	slices.SortFunc(out, func(a, b NetworkSetting) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// Conflict returns the first host other than self that has network with
// the other setting than encrypted ("" if none).
func Conflict(kv KV, network, self string, encrypted bool) (host string, theirs bool) {
	for _, s := range Networks(kv, network) {
		if s.Host != self && s.Encrypted != encrypted {
			return s.Host, s.Encrypted
		}
	}
	return "", false
}

// Word says "encrypted" or "not encrypted", for messages.
func Word(encrypted bool) string {
	if encrypted {
		return "encrypted"
	}
	return "not encrypted"
}
