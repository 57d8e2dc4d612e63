package overlay

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Kernel object names. Interface names are at most 15 bytes (IFNAMSIZ-1):
//
//	br<vni>       the network's bridge, in the tenant namespace   (≤ 10 bytes)
//	vx<vni>       the network's VXLAN device, made in the host namespace
//	              and moved into the tenant namespace               (≤ 10 bytes)
//	tv<12 hex>    an endpoint's bridge-side veth, in the tenant ns  (14 bytes)
//	tc<12 hex>    an endpoint's container-side veth, in the host ns
//	              until Docker moves it into the container          (14 bytes)
//	tnwg0         the WireGuard device of encrypted networks, made in the
//	              host namespace and moved into the crypt namespace
//	              <prefix>_crypt (a tenant name holds no '_')
//
// The 12 hex digits are the first 48 bits of SHA-256 of the endpoint ID, so the
// names are stable across restarts; two IDs collide with probability about
// n²/2⁴⁹ (10,000 endpoints on one host: 2 in 10⁷), and Validate rejects it.

func bridgeName(vni uint32) string { return fmt.Sprintf("br%d", vni) }

// wgName is the WireGuard device of encrypted networks.
const wgName = "tnwg0"

// cryptNetnsSuffix follows the namespace prefix in the crypt namespace's
// name; no tenant's namespace can have it.
const cryptNetnsSuffix = "_crypt"

func vxlanName(vni uint32) string { return fmt.Sprintf("vx%d", vni) }

// bridgeMAC is a network's bridge MAC, 02:7e:ff and the VNI's 24 bits, the
// same on every host. A bridge without a MAC of its own takes its lowest
// port's, so the gateway's MAC (with egress) would change under the
// containers as endpoints come and go. An endpoint MAC derived from an
// IPv4 address starts so only for 255.0.0.0/8 (reserved); Validate refuses
// an endpoint with its network's bridge MAC (one derived from an IPv6
// address ending in ff00:1001, in VNI 4097).
func bridgeMAC(vni uint32) string {
	return fmt.Sprintf("02:7e:ff:%02x:%02x:%02x", byte(vni>>16), byte(vni>>8), byte(vni))
}

func hash48(id string) [6]byte {
	sum := sha256.Sum256([]byte(id))
	var h [6]byte
	copy(h[:], sum[:6])
	return h
}

func endpointTag(id string) string {
	h := hash48(id)
	return hex.EncodeToString(h[:])
}

// BridgeVeth is the name of an endpoint's veth end on the bridge.
func BridgeVeth(endpointID string) string { return "tv" + endpointTag(endpointID) }

// ContainerVeth is the name of the veth end handed to the container; it lives
// in the host namespace until Docker moves it.
func ContainerVeth(endpointID string) string { return "tc" + endpointTag(endpointID) }
