package core

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// memCluster is the least Cluster for tests inside the package.
type memCluster struct {
	mu    sync.Mutex
	eps   map[string]bool
	peers map[string][]Peer // network key -> the other hosts that have it
}

func (m *memCluster) has(id string) bool { m.mu.Lock(); defer m.mu.Unlock(); return m.eps[id] }

func (m *memCluster) PutNetwork(gossip.Network) error { return nil }
func (m *memCluster) DeleteNetwork(string)            {}
func (m *memCluster) PutEndpoint(e gossip.Endpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.eps[e.ID] = true
	return nil
}

func (m *memCluster) DeleteEndpoint(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.eps, id)
}

func (m *memCluster) Attach(string) error                   { return nil }
func (m *memCluster) Detach(string)                         {}
func (m *memCluster) Network(string) (gossip.Network, bool) { return gossip.Network{}, false }
func (m *memCluster) Networks() []gossip.Network            { return nil }
func (m *memCluster) Remotes(string) []Remote               { return nil }
func (m *memCluster) Peers(key string) []Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peers[key]
}
func (m *memCluster) Hosts() []HostInfo  { return nil }
func (m *memCluster) Synced(string) bool { return true }
func (m *memCluster) Subscribe(int) (<-chan gossip.Event, func()) {
	return make(chan gossip.Event), func() {}
}
func (m *memCluster) PutKV(string, []byte) error { return nil }
func (m *memCluster) DeleteKV(string)            {}
func (m *memCluster) KV(string) []gossip.KVEntry { return nil }

type nopDatapath struct{}

func (nopDatapath) Apply(context.Context, overlay.State, Scope) error { return nil }
func (nopDatapath) MaxMTU() (int, error)                              { return 0, nil }

func TestGarbageCollectionTakesOnlyWhatIsGone(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host, cfg.VTEP, cfg.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
	cfg.UnjoinedGrace = time.Hour
	cl := &memCluster{eps: map[string]bool{}}
	c, err := New(cfg, nopDatapath{}, cl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	if _, err := c.CreateNetwork(t.Context(), NetworkSpec{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	alive, gone := filepath.Join(dir, "alive"), filepath.Join(dir, "gone")
	for _, p := range []string{alive, gone} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	notYet := filepath.Join(dir, "not-yet")
	for i, netns := range []string{alive, gone, "", "/no/such/dir/netns", notYet} {
		id := []string{"alive", "gone", "unjoined", "elsewhere", "starting"}[i]
		if _, err := c.CreateEndpoint(t.Context(), EndpointSpec{ID: id, Network: "acme/web", IP: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(5 + i)}), 24)}); err != nil {
			t.Fatal(err)
		}
		if netns != "" {
			if _, _, err := c.AttachEndpoint(t.Context(), id, netns); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A first round sees the namespaces that exist.
	c.collectGarbage(t.Context())
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	c.collectGarbage(t.Context())
	// "starting" was named at Join, but its namespace never appeared yet
	// (Docker makes it when the container's process starts): it stays.
	want := map[string]bool{"alive": true, "unjoined": true, "elsewhere": true, "starting": true}
	for _, e := range c.Endpoints() {
		if !want[e.ID] {
			t.Errorf("endpoint %s survived", e.ID)
		}
		delete(want, e.ID)
	}
	if len(want) > 0 {
		t.Errorf("collected: %v", want)
	}
	if cl.has("gone") {
		t.Error("collected endpoint still published")
	}
	// Past the grace, an endpoint that never joined goes too, and one
	// whose namespace never appeared.
	c.cfg.UnjoinedGrace = time.Nanosecond
	c.collectGarbage(t.Context())
	if _, ok := c.Endpoint("unjoined"); ok {
		t.Error("an endpoint that never joined survived its grace")
	}
	if _, ok := c.Endpoint("starting"); ok {
		t.Error("an endpoint whose namespace never appeared survived its grace")
	}
	if _, ok := c.Endpoint("alive"); !ok {
		t.Error("an endpoint whose namespace exists was collected after the grace")
	}
}
