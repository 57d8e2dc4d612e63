package overlay

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testKey makes distinct keys (a byte that clamping leaves alone).
func testKey(b byte) PrivateKey {
	var k PrivateKey
	k[5] = b
	return k
}

var (
	hostKey  = testKey(1)
	peerKey1 = testKey(2).Public()
	peerKey2 = testKey(3).Public()
)

func secret(peers ...netip.Addr) Network {
	return Network{Tenant: "acme", Name: "secret", VNI: 4200, Peers: peers, Encrypted: true}
}

func cryptState(nets []Network, peers ...CryptPeer) State {
	return State{Networks: nets, Crypt: Crypt{Key: hostKey, Peers: peers}}
}

func TestPlanEncrypted(t *testing.T) {
	dev := "crypt: link set tnwg0 type wireguard mtu 1440 addr 198.51.100.10/32 listen-port 51820 public-key " +
		hostKey.Public().String() + " default-route up"
	peer1 := "crypt: wg set tnwg0 peer " + peerKey1.String() + " endpoint 198.51.100.11:51820 allowed-ips 198.51.100.11/32"
	oneSecret := cryptState([]Network{secret(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey1})
	withClear := cryptState([]Network{secret(vtep1), web(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey1})
	tests := []struct {
		name     string
		desired  State
		observed Snapshot
		want     []string
	}{
		{
			name:     "first encrypted network: the crypt namespace first, its vxlan device made there",
			desired:  oneSecret,
			observed: newSnapshot(),
			want: []string{
				dev,
				peer1,
				"host: rules " + hostRulesDigest(uplinkNet, 4789, false) + " (new, 0 elements)",
				"netns add acme",
				"acme: link add br4200 type bridge address 02:7e:ff:00:10:68 mtu 1390 up",
				"acme: link add vx4200 type vxlan id 4200 dstport 4789 local 198.51.100.10 nolearning proxy encrypted mtu 1390 master br4200 up",
				"acme: fdb append 00:00:00:00:00:00 dev vx4200 dst 198.51.100.11",
			},
		},
		{
			name:     "an encrypted network beside a clear one: only its device is encrypted",
			desired:  withClear,
			observed: des(oneSecret),
			want: []string{
				"acme: link add br4097 type bridge address 02:7e:ff:00:10:01 mtu 1450 up",
				"acme: link add vx4097 type vxlan id 4097 dstport 4789 local 198.51.100.10 nolearning proxy mtu 1450 master br4097 up",
				"acme: fdb append 00:00:00:00:00:00 dev vx4097 dst 198.51.100.11",
			},
		},
		{
			name:     "the last encrypted network goes: the crypt namespace last",
			desired:  State{Networks: []Network{web(vtep1)}, Crypt: withClear.Crypt},
			observed: des(withClear),
			want: []string{
				"acme: link del vx4200",
				"acme: link del br4200",
				"netns del crypt",
			},
		},
		{
			name:     "a new key for this host: only the device",
			desired:  State{Networks: oneSecret.Networks, Crypt: Crypt{Key: testKey(9), Peers: oneSecret.Crypt.Peers}},
			observed: des(oneSecret),
			want:     []string{strings.Replace(dev, hostKey.Public().String(), testKey(9).Public().String(), 1)},
		},
		{
			name:     "a peer's new key replaces its old one",
			desired:  cryptState([]Network{secret(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey2}),
			observed: des(oneSecret),
			want: []string{
				"crypt: wg set tnwg0 peer " + peerKey1.String() + " remove",
				"crypt: wg set tnwg0 peer " + peerKey2.String() + " endpoint 198.51.100.11:51820 allowed-ips 198.51.100.11/32",
			},
		},
		{
			name:     "peers of the other family and this host itself are left out",
			desired:  cryptState([]Network{secret(vtep1)}, CryptPeer{VTEP: vtep0, Port: 51820, Key: peerKey1}, CryptPeer{VTEP: netip.MustParseAddr("2001:db8::1"), Port: 51820, Key: peerKey2}),
			observed: des(oneSecret),
			want:     []string{"crypt: wg set tnwg0 peer " + peerKey1.String() + " remove"},
		},
		{
			name:     "a peer's preshared key changes: the peer alone is set, the device and sessions kept",
			desired:  cryptState([]Network{secret(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey1, PSK: PresharedKey{9}}),
			observed: des(oneSecret),
			want:     []string{peer1 + " preshared-key " + PresharedKey{9}.String()},
		},
		{
			name:     "a clear network made encrypted: its vxlan device made anew in the crypt namespace",
			desired:  cryptState([]Network{{Tenant: "acme", Name: "web", VNI: 4097, Encrypted: true}}),
			observed: des(State{Networks: []Network{web()}}),
			want: []string{
				dev,
				"acme: link del vx4097",
				"acme: link set br4097 mtu 1390 address 02:7e:ff:00:10:01 up",
				"acme: link add vx4097 type vxlan id 4097 dstport 4789 local 198.51.100.10 nolearning proxy encrypted mtu 1390 master br4097 up",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.desired.Validate(); err != nil {
				t.Fatal(err)
			}
			got := planStrings(Plan(des(tt.desired), tt.observed))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
			next := simulate(t, tt.observed, Plan(des(tt.desired), tt.observed))
			if rest := Plan(des(tt.desired), next); len(rest) != 0 {
				t.Errorf("a second plan is not empty: %q", planStrings(rest))
			}
		})
	}
}

func TestPlanConvergesWithEncryptedNetworks(t *testing.T) {
	p1 := CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey1}
	p2 := CryptPeer{VTEP: vtep2, Port: 51821, Key: peerKey2}
	states := []State{
		{},
		{Networks: []Network{web(vtep1)}},
		cryptState([]Network{secret(vtep1)}, p1),
		cryptState([]Network{secret(vtep1, vtep2), web(vtep1)}, p1, p2),
		{Networks: []Network{secret(vtep2)}, Crypt: Crypt{Key: testKey(7), Peers: []CryptPeer{p2}}},
		cryptState([]Network{{Tenant: "globex", Name: "x", VNI: 5000, Encrypted: true, MTU: 1300}}),
		cryptState([]Network{{Tenant: "acme", Name: "web", VNI: 4097, Encrypted: true}},
			CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey2}),
	}
	for round := range 30 {
		cur := newSnapshot()
		for _, i := range randPerm(round, len(states)) {
			want := des(states[i])
			cur = simulate(t, cur, Plan(want, cur))
			if diff := cmp.Diff(normalize(want), normalize(cur)); diff != "" {
				t.Fatalf("round %d, state %d: not converged (-want +got):\n%s", round, i, diff)
			}
			if again := Plan(want, cur); len(again) != 0 {
				t.Fatalf("round %d, state %d: second plan not empty: %v", round, i, planStrings(again))
			}
		}
	}
}

func randPerm(seed, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i*7 + seed*3) % n
	}
	seen := map[int]bool{}
	var perm []int
	for _, v := range out {
		if !seen[v] {
			seen[v] = true
			perm = append(perm, v)
		}
	}
	for i := range n {
		if !seen[i] {
			perm = append(perm, i)
		}
	}
	return perm
}

func TestEncryptedMTU(t *testing.T) {
	if got := host0.MaxMTUEncrypted(); got != 1390 {
		t.Errorf("MaxMTUEncrypted over a 1500-byte IPv4 underlay: %d, want 1390 (1500 - 60 - 50)", got)
	}
	h6 := Host{VTEP: netip.MustParseAddr("2001:db8::1"), UnderlayMTU: 1500}
	if got := h6.MaxMTUEncrypted(); got != 1350 {
		t.Errorf("MaxMTUEncrypted over a 1500-byte IPv6 underlay: %d, want 1350 (1500 - 80 - 70)", got)
	}
	if got := EncryptedMaxMTU(1450, vtep0); got != 1390 {
		t.Errorf("EncryptedMaxMTU(1450): %d", got)
	}
	s := cryptState([]Network{{Tenant: "acme", Name: "secret", VNI: 4200, Encrypted: true, MTU: 1400}})
	err := s.ValidateMTU(1450)
	if err == nil || !strings.Contains(err.Error(), "mtu 1400: above 1390") || !strings.Contains(err.Error(), "WireGuard") {
		t.Errorf("an encrypted network with mtu 1400 over a 1500 underlay: %v", err)
	}
	s.Networks[0].MTU = 1390
	if err := s.ValidateMTU(1450); err != nil {
		t.Errorf("mtu 1390: %v", err)
	}
}

func TestValidateCrypt(t *testing.T) {
	tests := []struct {
		name  string
		state State
		want  string
	}{
		{"encrypted without a key", State{Networks: []Network{secret()}}, `network acme/secret: encrypted, but no wireguard key`},
		{"peer without a key", cryptState(nil, CryptPeer{VTEP: vtep1, Port: 51820}), "crypt peer 198.51.100.11: no public key"},
		{"peer without a port", cryptState(nil, CryptPeer{VTEP: vtep1, Key: peerKey1}), "crypt peer 198.51.100.11: port 0"},
		{"peer twice", cryptState(nil, CryptPeer{VTEP: vtep1, Port: 1, Key: peerKey1}, CryptPeer{VTEP: vtep1, Port: 1, Key: peerKey2}),
			"crypt peer 198.51.100.11: listed twice"},
		{"one key for two peers", cryptState(nil, CryptPeer{VTEP: vtep1, Port: 1, Key: peerKey1}, CryptPeer{VTEP: vtep2, Port: 1, Key: peerKey1}),
			"crypt peer 198.51.100.12: public key " + peerKey1.String() + " already belongs to peer 198.51.100.11"},
		{"multicast peer", cryptState(nil, CryptPeer{VTEP: netip.MustParseAddr("239.1.1.1"), Port: 1, Key: peerKey1}), "must be a unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.state.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate: %v, want %q in it", err, tt.want)
			}
			if _, err := tt.state.validateScope(Scope{Crypt: true}, nil); err == nil {
				t.Errorf("validateScope accepted it")
			}
		})
	}
}

// TestKeys checks X25519 against RFC 7748's test vector, clamping, and that
// a private key never shows in print or JSON.
func TestKeys(t *testing.T) {
	b, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	var k PrivateKey
	copy(k[:], b)
	pub := k.Public()
	if got := hex.EncodeToString(pub[:]); got != "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" {
		t.Errorf("public key of RFC 7748's Alice: %s", got)
	}
	seen := map[PrivateKey]bool{}
	for range 100 {
		g, err := GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		if g[0]&7 != 0 || g[31]&128 != 0 || g[31]&64 == 0 {
			t.Fatalf("generated key not clamped: %x", g[:])
		}
		if seen[g] || g.IsZero() {
			t.Fatal("generated the same key twice")
		}
		seen[g] = true
	}
	s := State{Crypt: Crypt{Key: k}}
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", s, s, s, k), fmt.Sprintf("%x", k.String())} {
		if strings.Contains(out, "77076d0a") || strings.Contains(out, "119") || strings.Contains(out, "0x77") {
			t.Errorf("a private key shows: %s", out)
		}
	}
	if _, err := json.Marshal(s); err == nil {
		t.Error("a state with a private key was marshalled to JSON")
	}
	p := k.Public()
	q, err := ParsePublicKey(p.String())
	if err != nil || q != p {
		t.Errorf("ParsePublicKey(%s) = %s, %v", p, q, err)
	}
	for _, bad := range []string{"", "abc", p.String()[:40]} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

func TestScopedCryptReconcileTouchesOnlyCrypt(t *testing.T) {
	a := cryptState([]Network{secret(vtep1), web(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey1})
	b := cryptState([]Network{secret(vtep1), web(vtep1)}, CryptPeer{VTEP: vtep1, Port: 51820, Key: peerKey2})
	cur := converge(t, a)
	sc := Scope{Crypt: true}
	nets, err := b.validateScope(sc, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := newView(b, nets, sc, nil, nil)
	observed := restrict(cur, v)
	if len(observed.Tenants) != 0 {
		t.Errorf("a crypt scope reads tenants: %v", observed)
	}
	desired, _ := desire(b, nets, host0, v, observed)
	got := planStrings(Plan(desired, observed))
	want := []string{
		"crypt: wg set tnwg0 peer " + peerKey1.String() + " remove",
		"crypt: wg set tnwg0 peer " + peerKey2.String() + " endpoint 198.51.100.11:51820 allowed-ips 198.51.100.11/32",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
}

func TestPresharedKeyNeverShows(t *testing.T) {
	k := PresharedKey{0xab, 0xcd, 0xef}
	p := WGPeer{Key: peerKey1, PSK: k}
	for _, s := range []string{k.String(), fmt.Sprintf("%v %+v %#v", k, p, p), Op{Kind: OpPeerSet, Peer: p}.String()} {
		if strings.Contains(s, "abcdef") || strings.Contains(s, "171 205 239") || strings.Contains(s, "0xab") || !strings.Contains(s, "psk:") {
			t.Errorf("a preshared key shows, or no fingerprint: %s", s)
		}
	}
	if _, err := json.Marshal(p); err == nil {
		t.Error("a peer with a preshared key marshals")
	}
	if (PresharedKey{}).String() != "none" {
		t.Error("an unset preshared key does not say none")
	}
}
