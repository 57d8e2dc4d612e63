package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/crypt"
)

var errNotSupported = errors.New("not supported by this kernel")

// fakeKV is an in-memory gossip key-value table shared by several hosts;
// each host writes through its own view.
type fakeKV struct {
	mu      *sync.Mutex
	entries map[string]gossip.KVEntry // key|host
	host    string
}

func newKV(host string) *fakeKV {
	return &fakeKV{mu: &sync.Mutex{}, entries: map[string]gossip.KVEntry{}, host: host}
}

// as is the same table seen from another host.
func (f *fakeKV) as(host string) *fakeKV { return &fakeKV{mu: f.mu, entries: f.entries, host: host} }

func (f *fakeKV) Put(key string, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.entries[key+"|"+f.host]
	f.entries[key+"|"+f.host] = gossip.KVEntry{Key: key, Host: f.host, Value: value, Version: old.Version + 1}
	return nil
}

func (f *fakeKV) List(prefix string) []gossip.KVEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gossip.KVEntry
	for _, e := range f.entries {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	return out
}

type fakeCluster struct {
	nets []gossip.Network
	eps  map[string][]gossip.Endpoint
}

func (f *fakeCluster) Networks() []gossip.Network                 { return f.nets }
func (f *fakeCluster) Endpoints(network string) []gossip.Endpoint { return f.eps[network] }

func TestDefinitionsAreValidatedAndBadPeerEntriesIgnored(t *testing.T) {
	kv, cl := newKV("h0"), &fakeCluster{eps: map[string][]gossip.Endpoint{}}
	r := New("h0", kv, cl)
	if err := r.CreateTenant("Acme!"); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"Acme!"`) {
		t.Errorf("bad tenant name: %v", err)
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no tenant") {
		t.Errorf("network of an unknown tenant: %v", err)
	}
	if err := r.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateTenant("acme"); !errors.Is(err, ErrConflict) {
		t.Errorf("tenant twice: %v", err)
	}
	r.MaxMTU = func(enc bool) (int, error) {
		if enc {
			return 1390, nil
		}
		return 1450, nil
	}
	for _, bad := range []struct {
		d    Definition
		want string
	}{
		{Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.300/24"}, "subnet"},
		{Definition{Tenant: "acme", Name: "Web!", Subnet: "10.1.0.0/24"}, `"Web!"`},
		{Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24", MTU: 100}, "mtu 100"},
		{Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24", MTU: 9000}, "mtu 9000: must be 1280-1450"},
		{Definition{Tenant: "acme", Name: "web", Subnet: "0.0.0.0/0"}, "0.0.0.0/0"},
		{Definition{Tenant: "acme", Name: "web", Subnet: "169.254.0.0/20"}, "link-local"},
		{Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24", VNI: 1 << 24}, "vni"},
	} {
		if err := r.CreateNetwork(bad.d); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v; want an error naming %q", bad.d, err, bad.want)
		}
	}
	r.CheckSubnet = func(p netip.Prefix) error {
		if p.Overlaps(netip.MustParsePrefix("198.51.100.0/24")) {
			return errors.New("overlaps the underlay")
		}
		return nil
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "198.51.100.0/26"}); err == nil || !strings.Contains(err.Error(), "underlay") {
		t.Errorf("underlay subnet: %v", err)
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "db", Subnet: "10.1.0.128/25"}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "overlaps network acme/web") {
		t.Errorf("overlap: %v", err)
	}
	// A peer's invalid entry is ignored, not acted on.
	_ = kv.as("h9").Put("network/acme/evil", []byte(`{"tenant":"acme","name":"evil","subnet":"not-a-cidr","vni":5,"gen":99,"origin":"h9"}`))
	_ = kv.as("h9").Put("network/acme/mislabelled", []byte(`{"tenant":"acme","name":"other","subnet":"10.9.0.0/24","vni":5,"gen":99,"origin":"h9"}`))
	if got := r.Networks(); len(got) != 1 || got[0].Name != "web" {
		t.Errorf("defined networks = %+v, want only acme/web", got)
	}
	if err := r.RemoveTenant("acme"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "still has network acme/web") {
		t.Errorf("removing a tenant with a network: %v", err)
	}
}

func TestNetworksMadeByHandCount(t *testing.T) {
	kv := newKV("h0")
	cl := &fakeCluster{eps: map[string][]gossip.Endpoint{},
		nets: []gossip.Network{{ID: "acme/vault", Tenant: "acme", Name: "vault", VNI: 77, Subnet: netip.MustParsePrefix("10.3.0.0/24"), Host: "h2"}}}
	r := New("h0", kv, cl)
	if err := r.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	// The same tenant/name, made by hand on h2 with another subnet.
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "vault", Subnet: "10.4.0.0/24"}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host h2 already has it") {
		t.Errorf("conflicting hand-made network: %v", err)
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "db", Subnet: "10.3.0.0/25"}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "overlaps network acme/vault") {
		t.Errorf("overlap with a hand-made network: %v", err)
	}
	if err := r.RemoveTenant("acme"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host h2 still has network acme/vault") {
		t.Errorf("removing a tenant with a hand-made network: %v", err)
	}
	cl.nets = nil
	if err := r.RemoveTenant("acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveTenant("acme"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing twice: %v", err)
	}
}

func TestRemovalWaitsForEndpointsAndTheLastWriterWins(t *testing.T) {
	kv := newKV("h0")
	cl := &fakeCluster{eps: map[string][]gossip.Endpoint{}}
	r0, r1 := New("h0", kv, cl), New("h1", kv.as("h1"), cl)
	if err := r0.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	if err := r0.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	r1.Sync() // h1 copies the winners
	cl.eps["acme/web"] = []gossip.Endpoint{{ID: "0123456789abcdef", Network: "acme/web", Host: "h1"}}
	if err := r1.RemoveNetwork("acme", "web"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "0123456789ab on host h1") {
		t.Fatalf("removal with an endpoint attached: %v", err)
	}
	delete(cl.eps, "acme/web")
	if err := r1.RemoveNetwork("acme", "web"); err != nil {
		t.Fatal(err)
	}
	// The removal outranks the older definition on every host.
	for _, r := range []*Registry{r0, r1} {
		if _, ok := r.Network("acme", "web"); ok {
			t.Fatal("removed network still defined")
		}
	}
	if err := r0.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.5.0.0/24"}); err != nil {
		t.Fatalf("defining it again: %v", err)
	}
	if d, ok := r1.Network("acme", "web"); !ok || d.Subnet != "10.5.0.0/24" {
		t.Fatalf("redefined network on h1: %+v %v", d, ok)
	}
}

// TestTenantRemovalSaysWhyRightAfterItsLastNetwork: network rm then tenant
// rm at once; a host is still taking the network out of its engine (its
// copy still in gossip). The refusal says so (a hand-made network of the
// same name looks the same to gossip, so it must still count), and the
// tenant goes once the host's copy is gone.
func TestTenantRemovalSaysWhyRightAfterItsLastNetwork(t *testing.T) {
	kv := newKV("h0")
	cl := &fakeCluster{eps: map[string][]gossip.Endpoint{}}
	r := New("h0", kv, cl)
	if err := r.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "web", Subnet: "10.1.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	cl.nets = []gossip.Network{{ID: "d0c4e7", Tenant: "acme", Name: "web", VNI: 5, Subnet: netip.MustParsePrefix("10.1.0.0/24"), Host: "h3"}}
	if err := r.RemoveNetwork("acme", "web"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveTenant("acme"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host h3 still has network acme/web: it is still removing it after network rm") {
		t.Errorf("tenant rm while h3 still has the network: %v", err)
	}
	cl.nets = nil
	if err := r.RemoveTenant("acme"); err != nil {
		t.Errorf("tenant rm once h3 removed it: %v", err)
	}
}

func TestEncryptedDefinitions(t *testing.T) {
	kv, cl := newKV("h0"), &fakeCluster{eps: map[string][]gossip.Endpoint{}}
	r := New("h0", kv, cl)
	if err := r.CreateTenant("acme"); err != nil {
		t.Fatal(err)
	}
	r.MaxMTU = func(enc bool) (int, error) {
		if enc {
			return 1390, nil
		}
		return 1450, nil
	}
	noWireGuard := fmt.Errorf("wireguard: %w", errNotSupported)
	r.CanEncrypt = func() error { return noWireGuard }
	err := r.CreateNetwork(Definition{Tenant: "acme", Name: "secret", Subnet: "10.3.0.0/24", Encrypted: true})
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, errNotSupported) || !strings.Contains(err.Error(), "wireguard: not supported") {
		t.Errorf("encrypted on a host without WireGuard: %v", err)
	}
	if _, ok := r.Network("acme", "secret"); ok {
		t.Error("the refused definition exists")
	}
	r.CanEncrypt = func() error { return nil }
	err = r.CreateNetwork(Definition{Tenant: "acme", Name: "secret", Subnet: "10.3.0.0/24", Encrypted: true, MTU: 1400})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mtu 1400: must be 1280-1390 (the underlay's MTU minus the VXLAN and WireGuard overhead)") {
		t.Errorf("encrypted with mtu 1400: %v", err)
	}
	// A host that has the network with the other setting.
	kv.as("h1").Put(crypt.NetworkKey("acme/secret"), crypt.EncodeNetwork(false))
	err = r.CreateNetwork(Definition{Tenant: "acme", Name: "secret", Subnet: "10.3.0.0/24", Encrypted: true})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "host h1 already has it not encrypted") {
		t.Errorf("encrypted where h1 has it clear: %v", err)
	}
	kv.as("h1").Put(crypt.NetworkKey("acme/secret"), crypt.EncodeNetwork(true))
	if err := r.CreateNetwork(Definition{Tenant: "acme", Name: "secret", Subnet: "10.3.0.0/24", Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	d, ok := r.Network("acme", "secret")
	if !ok || !d.Encrypted {
		t.Errorf("definition %+v, %t: want encrypted", d, ok)
	}
}
