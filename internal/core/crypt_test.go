package core_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/overlay"
)

var vtep2 = netip.MustParseAddr("198.51.100.12")

func secret() core.NetworkSpec {
	return core.NetworkSpec{Tenant: "acme", Name: "secret", Subnet: netip.MustParsePrefix("10.3.0.0/24"), Ref: "docker-s1", Encrypted: true}
}

func pubKey(b byte) overlay.PublicKey {
	var k overlay.PrivateKey
	k[7] = b
	return k.Public()
}

// psks fills in the preshared key h0 derives with each peer (h1 at vtep1,
// h2 at vtep2, h3): from its own published share and the peer's, all zero
// in these tests' entries unless a test sets one.
func psks(t *testing.T, h *harness, peers []overlay.CryptPeer) []overlay.CryptPeer {
	t.Helper()
	v, ok := h.cl.OwnKV(crypt.HostKey)
	if !ok {
		return peers // not published yet: no peer either
	}
	self, err := crypt.DecodeHost(v)
	if err != nil {
		t.Fatal(err)
	}
	names := map[netip.Addr]string{vtep1: "h1", vtep2: "h2", netip.MustParseAddr("198.51.100.13"): "h3"}
	out := slices.Clone(peers)
	for i := range out {
		out[i].PSK = crypt.PresharedKey("h0", self.Share, names[out[i].VTEP], crypt.Share{})
	}
	return out
}

// lastWith waits for a datapath state that satisfies ok.
func lastWith(t *testing.T, h *harness, what string, ok func(overlay.State) bool) overlay.State {
	t.Helper()
	var s overlay.State
	eventually(t, what, func() bool {
		var found bool
		s, found = h.dp.Last()
		return found && ok(s)
	})
	return s
}

func TestEncryptedNetworkRefusedWithoutWireGuard(t *testing.T) {
	dp := &coretest.Datapath{MTU: 1450, NoCrypt: fmt.Errorf("wireguard: %w", overlay.ErrNotSupported)}
	h := start(t, dp, coretest.NewCluster("h0"), config(t, t.TempDir()))
	calls := len(dp.Calls())
	_, err := h.c.CreateNetwork(ctx(t), secret())
	if err == nil {
		t.Fatal("an encrypted network was created on a kernel without WireGuard")
	}
	for _, want := range []string{"create network acme/secret", "wireguard: not supported by this kernel"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if !errors.Is(err, overlay.ErrNotSupported) || !errors.Is(err, core.ErrInvalid) {
		t.Errorf("error %v: want overlay.ErrNotSupported and core.ErrInvalid", err)
	}
	if _, ok := h.c.Network("acme/secret"); ok {
		t.Error("the refused network exists")
	}
	if _, published, attached := h.cl.OwnNetwork("acme/secret"); published || attached {
		t.Error("the refused network was published")
	}
	if _, ok := h.cl.OwnKV(crypt.NetworkKey("acme/secret")); ok {
		t.Error("the refused network's encryption was published")
	}
	if len(dp.Calls()) != calls {
		t.Errorf("the datapath was called for a refused network: %+v", dp.Calls()[calls:])
	}
	if err := h.c.CryptSupport(); !errors.Is(err, overlay.ErrNotSupported) {
		t.Errorf("CryptSupport = %v", err)
	}
	// A clear network beside it is fine.
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	s, _ := dp.Last()
	if len(s.Networks) != 1 || s.Networks[0].Encrypted || !s.Crypt.Key.IsZero() {
		t.Errorf("datapath state %+v", s.Networks)
	}
}

func TestEncryptedNetworkKeysAndPeers(t *testing.T) {
	h := newHarness(t)
	n, err := h.c.CreateNetwork(ctx(t), secret())
	if err != nil {
		t.Fatal(err)
	}
	if !n.Encrypted {
		t.Fatal("created network is not encrypted")
	}
	s, _ := h.dp.Last()
	if len(s.Networks) != 1 || !s.Networks[0].Encrypted || s.Crypt.Key.IsZero() {
		t.Fatalf("datapath after creating an encrypted network: %+v, key set %t", s.Networks, !s.Crypt.Key.IsZero())
	}
	key := s.Crypt.Key
	v, ok := h.cl.OwnKV(crypt.HostKey)
	if !ok {
		t.Fatal("this host's key was not published")
	}
	if id, err := crypt.DecodeHost(v); err != nil || id.Key != key.Public() || id.Port != overlay.DefaultWireGuardPort {
		t.Errorf("published identity %+v, %v; want the datapath key's public half", id, err)
	}
	if v, ok := h.cl.OwnKV(crypt.NetworkKey("acme/secret")); !ok || string(v) != string(crypt.EncodeNetwork(true)) {
		t.Errorf("published encryption of acme/secret: %x %t", v, ok)
	}
	// A clear network beside it gets no key of its own, and the same key
	// stays.
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	s, _ = h.dp.Last()
	if s.Crypt.Key != key || len(s.Networks) != 2 {
		t.Fatalf("after a second network: key changed %t, %d networks", s.Crypt.Key != key, len(s.Networks))
	}
	if v, _ := h.cl.OwnKV(crypt.NetworkKey("acme/web")); string(v) != string(crypt.EncodeNetwork(false)) {
		t.Errorf("published encryption of acme/web: %x", v)
	}

	// h1 joins the encrypted network with its key: it becomes a peer.
	h.cl.AddHost("h1", vtep1)
	h.cl.AddKV("h1", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(1)}))
	h.cl.AddPeer("acme/secret", core.Peer{Host: "h1", VTEP: vtep1})
	want := []overlay.CryptPeer{{VTEP: vtep1, Port: 51820, Key: pubKey(1)}}
	lastWith(t, h, "h1 a wireguard peer", func(s overlay.State) bool { return slices.Equal(s.Crypt.Peers, psks(t, h, want)) })
	// h1's new key (after its reboot) replaces the old one.
	h.cl.AddKV("h1", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(2)}))
	want = []overlay.CryptPeer{{VTEP: vtep1, Port: 51820, Key: pubKey(2)}}
	lastWith(t, h, "h1's new key", func(s overlay.State) bool { return slices.Equal(s.Crypt.Peers, psks(t, h, want)) })
	// h2 has only the clear network: no peer. Then it joins the
	// encrypted one, first without a key (left out), then with h1's key
	// (a second claim of a key: left out), then with its own.
	h.cl.AddHost("h2", vtep2)
	h.cl.AddPeer("acme/web", core.Peer{Host: "h2", VTEP: vtep2})
	h.cl.AddPeer("acme/secret", core.Peer{Host: "h2", VTEP: vtep2})
	h.cl.AddKV("h2", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51821, Key: pubKey(2)}))
	lastWith(t, h, "h2 on the flood list", func(s overlay.State) bool {
		for _, n := range s.Networks {
			if n.Name == "secret" {
				return slices.Contains(n.Peers, vtep2)
			}
		}
		return false
	})
	if s, _ := h.dp.Last(); !slices.Equal(s.Crypt.Peers, psks(t, h, want)) {
		t.Errorf("peers with h2 claiming h1's key: %+v", s.Crypt.Peers)
	}
	h.cl.AddKV("h2", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51821, Key: pubKey(3)}))
	want = append(want, overlay.CryptPeer{VTEP: vtep2, Port: 51821, Key: pubKey(3)})
	lastWith(t, h, "h2 a peer", func(s overlay.State) bool { return slices.Equal(s.Crypt.Peers, psks(t, h, want)) })
	// A malformed identity from a peer is ignored, not fatal.
	h.cl.AddKV("h2", crypt.HostKey, []byte("junk"))
	lastWith(t, h, "h2 dropped", func(s overlay.State) bool { return len(s.Crypt.Peers) == 1 })

	// The key is kept in the kernel only: not in the state file.
	var b []byte
	for _, name := range []string{"state.json", "state.journal"} {
		f, err := os.ReadFile(filepath.Join(h.cfg.StateDir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		b = append(b, f...)
	}
	if !strings.Contains(string(b), `"encrypted":true`) || strings.Contains(strings.ToLower(string(b)), "key") {
		t.Errorf("state.json and state.journal:\n%s", b)
	}
}

func TestEncryptionIsTheSameOnEveryHost(t *testing.T) {
	h := newHarness(t)
	h.cl.AddKV("h1", crypt.NetworkKey("acme/web"), crypt.EncodeNetwork(true))
	_, err := h.c.CreateNetwork(ctx(t), web())
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "not encrypted here, but host h1 has it encrypted") {
		t.Errorf("a clear network encrypted elsewhere: %v", err)
	}
	h.cl.AddKV("h1", crypt.NetworkKey("acme/secret"), crypt.EncodeNetwork(false))
	_, err = h.c.CreateNetwork(ctx(t), secret())
	if !errors.Is(err, core.ErrConflict) || !strings.Contains(err.Error(), "encrypted here, but host h1 has it not encrypted") {
		t.Errorf("an encrypted network clear elsewhere: %v", err)
	}
	if nets := h.c.Networks(); len(nets) != 0 {
		t.Errorf("refused networks exist: %+v", nets)
	}
	h.cl.AddKV("h1", crypt.NetworkKey("acme/secret"), crypt.EncodeNetwork(true))
	if _, err := h.c.CreateNetwork(ctx(t), secret()); err != nil {
		t.Errorf("the same setting as h1: %v", err)
	}
}

func TestEncryptedNetworkMTU(t *testing.T) {
	h := newHarness(t)
	s := secret()
	s.MTU = 1391
	_, err := h.c.CreateNetwork(ctx(t), s)
	if !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), "mtu 1391: must be at most 1390 for an encrypted network") {
		t.Errorf("mtu 1391 over a 1450 max: %v", err)
	}
	if m, _ := h.c.MaxMTUFor(true); m != 1390 {
		t.Errorf("MaxMTUFor(encrypted) = %d", m)
	}
	s.MTU = 1390
	if _, err := h.c.CreateNetwork(ctx(t), s); err != nil {
		t.Error(err)
	}
}

func TestRestartKeepsTheKernelsKeyAndPeers(t *testing.T) {
	dir := t.TempDir()
	h := start(t, &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"), config(t, dir))
	if _, err := h.c.CreateNetwork(ctx(t), secret()); err != nil {
		t.Fatal(err)
	}
	h.stop()

	// The kernel holds the old run's key and a peer whose key gossip has
	// not delivered yet.
	kernelKey := overlay.PrivateKey{0, 0, 0, 9}
	old := overlay.CryptPeer{VTEP: vtep1, Port: 51820, Key: pubKey(1)}
	dp := &coretest.Datapath{MTU: 1450, KernelKey: kernelKey, KernelCryptPeers: []overlay.CryptPeer{old},
		KernelPeers: map[uint32][]netip.Addr{}}
	cl := coretest.NewCluster("h0")
	cfg := config(t, dir)
	cfg.SyncWait = 300 * time.Millisecond
	vni := secretVNI(t, dir)
	dp.KernelPeers[vni] = []netip.Addr{vtep1}
	h = start(t, dp, cl, cfg)
	first := h.dp.Calls()[0].State
	if first.Crypt.Key != kernelKey {
		t.Fatal("the restarted core did not keep the kernel's key")
	}
	if !slices.Equal(first.Crypt.Peers, []overlay.CryptPeer{old}) {
		t.Errorf("peers at restart: %+v, want the kernel's", first.Crypt.Peers)
	}
	<-h.c.Started() // the saved networks are published once the first pass is done
	if v, ok := cl.OwnKV(crypt.HostKey); !ok {
		t.Error("key not published after the restart")
	} else if id, _ := crypt.DecodeHost(v); id.Key != kernelKey.Public() {
		t.Error("published key is not the kernel's")
	}
	// After SyncWait, without word from gossip, the adopted peer goes.
	lastWith(t, h, "the adopted peer dropped after SyncWait", func(s overlay.State) bool { return len(s.Crypt.Peers) == 0 })
}

// secretVNI reads acme/secret's VNI from a state dir.
func secretVNI(t *testing.T, dir string) uint32 {
	t.Helper()
	c, err := core.New(config(t, dir), &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Networks() {
		if n.Key() == "acme/secret" {
			if !n.Encrypted {
				t.Fatal("acme/secret not encrypted after a restart")
			}
			return n.VNI
		}
	}
	t.Fatal("acme/secret not in the saved state")
	return 0
}

// TestAPassOverOneEncryptedNetworkKeepsTheOthersPeers: passes read gossip
// for the networks their scope touches only, but the WireGuard peers are
// those of every encrypted network: a change on one (a host attaching, a
// peer's key, a remote endpoint) must not drop the hosts of another.
func TestAPassOverOneEncryptedNetworkKeepsTheOthersPeers(t *testing.T) {
	h := newHarness(t)
	vault := secret()
	vault.Name, vault.Subnet, vault.Ref = "vault", netip.MustParsePrefix("10.4.0.0/24"), "docker-v1"
	for _, s := range []core.NetworkSpec{secret(), vault} {
		if _, err := h.c.CreateNetwork(ctx(t), s); err != nil {
			t.Fatal(err)
		}
	}
	h.cl.AddHost("h1", vtep1)
	h.cl.AddKV("h1", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(1)}))
	h.cl.AddPeer("acme/secret", core.Peer{Host: "h1", VTEP: vtep1})
	one := []overlay.CryptPeer{{VTEP: vtep1, Port: 51820, Key: pubKey(1)}}
	lastWith(t, h, "h1 a peer", func(s overlay.State) bool { return slices.Equal(s.Crypt.Peers, psks(t, h, one)) })

	h.cl.AddHost("h2", vtep2)
	h.cl.AddPeer("acme/vault", core.Peer{Host: "h2", VTEP: vtep2})
	h.cl.AddKV("h2", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(2)}))
	both := append(slices.Clone(one), overlay.CryptPeer{VTEP: vtep2, Port: 51820, Key: pubKey(2)})
	lastWith(t, h, "h1 and h2 peers", func(s overlay.State) bool { return slices.Equal(s.Crypt.Peers, psks(t, h, both)) })

	calls := len(h.dp.Calls())
	// A pass over vault's network: h3, without a key yet, attaches.
	h.cl.AddHost("h3", netip.MustParseAddr("198.51.100.13"))
	h.cl.AddPeer("acme/vault", core.Peer{Host: "h3", VTEP: netip.MustParseAddr("198.51.100.13")})
	h.cl.AddRemote(core.Remote{ID: "r2", Network: "acme/vault", MAC: net.HardwareAddr{2, 0x7e, 10, 4, 0, 9}, IP: netip.MustParseAddr("10.4.0.9"), VTEP: vtep2, Host: "h2"})
	lastWith(t, h, "h2's endpoint", func(s overlay.State) bool {
		return slices.ContainsFunc(s.Remotes, func(r overlay.Remote) bool { return r.VTEP == vtep2 })
	})
	// A pass over a clear network's remote entries alone (a delete that
	// carries no last value), which the datapath takes as the network's.
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	h.cl.Emit(gossip.Event{Kind: gossip.EventDelete, Table: gossip.TableEndpoints, Key: "gone", Host: "h1",
		Endpoint: &gossip.Endpoint{ID: "gone", Network: "acme/web"}})
	eventually(t, "a pass over web's remote entries", func() bool {
		return slices.ContainsFunc(h.dp.Calls()[calls:], func(c coretest.Call) bool { return len(c.Scope.RemoteNets) > 0 })
	})
	for _, c := range h.dp.Calls()[calls:] {
		// The datapath sets the peers on these scopes only (overlay.Scope).
		sets := c.Scope.All || c.Scope.Crypt || len(c.Scope.Tenants) > 0 || len(c.Scope.Networks) > 0 || len(c.Scope.RemoteNets) > 0
		if sets && !slices.Equal(c.State.Crypt.Peers, psks(t, h, both)) {
			t.Errorf("a pass over %+v set peers %+v, want %+v", c.Scope, c.State.Crypt.Peers, both)
		}
	}
}

// TestPresharedKeysRotate: each peer gets the preshared key of its share
// and this host's; this host replaces its share every PSKRotation (and
// publishes it), a peer's new share replaces the key too, and neither
// touches the private key.
func TestPresharedKeysRotate(t *testing.T) {
	cfg := config(t, t.TempDir())
	cfg.PSKRotation = 100 * time.Millisecond
	h := start(t, &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0"), cfg)
	if _, err := h.c.CreateNetwork(ctx(t), secret()); err != nil {
		t.Fatal(err)
	}
	share1 := crypt.Share{1, 1}
	h.cl.AddHost("h1", vtep1)
	h.cl.AddKV("h1", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(1), Share: share1}))
	h.cl.AddPeer("acme/secret", core.Peer{Host: "h1", VTEP: vtep1})
	own := func() crypt.Share {
		v, _ := h.cl.OwnKV(crypt.HostKey)
		id, err := crypt.DecodeHost(v)
		if err != nil {
			t.Fatal(err)
		}
		return id.Share
	}
	first := lastWith(t, h, "h1 a peer", func(s overlay.State) bool { return len(s.Crypt.Peers) == 1 })
	key, psk := first.Crypt.Key, first.Crypt.Peers[0].PSK
	if psk.IsZero() {
		t.Fatal("no preshared key")
	}
	// Rotations: a new share published, and h1's key follows it.
	seen := map[overlay.PresharedKey]bool{psk: true}
	for len(seen) < 4 {
		s := lastWith(t, h, "a rotation", func(s overlay.State) bool {
			return len(s.Crypt.Peers) == 1 && !seen[s.Crypt.Peers[0].PSK]
		})
		got := s.Crypt.Peers[0].PSK
		seen[got] = true
		if s.Crypt.Key != key {
			t.Fatal("a rotation changed the private key")
		}
		if mine := own(); got != crypt.PresharedKey("h0", mine, "h1", share1) {
			// The share may have moved on again since this state.
			lastWith(t, h, "the key of the published share", func(s overlay.State) bool {
				return len(s.Crypt.Peers) == 1 && s.Crypt.Peers[0].PSK == crypt.PresharedKey("h0", own(), "h1", share1)
			})
		}
	}
	// h1's new share: a new key as well.
	h.cl.AddKV("h1", crypt.HostKey, crypt.EncodeHost(crypt.Host{Port: 51820, Key: pubKey(1), Share: crypt.Share{2, 2}}))
	lastWith(t, h, "h1's new share", func(s overlay.State) bool {
		return len(s.Crypt.Peers) == 1 && s.Crypt.Peers[0].PSK == crypt.PresharedKey("h0", own(), "h1", crypt.Share{2, 2})
	})
}
