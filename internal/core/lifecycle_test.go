package core_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
)

func TestDeletingANetworkTakesItsStaleEndpoints(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2"} {
		if _, err := h.c.CreateEndpoint(ctx(t), ep(id, "10.1.0."+id[1:]+"5")); err != nil {
			t.Fatal(err)
		}
	}
	// Docker deletes a network only without endpoints; these are left by
	// calls that failed half-way, and go with it.
	if err := h.c.DeleteNetwork(ctx(t), "acme/web"); err != nil {
		t.Fatal(err)
	}
	if len(h.c.Endpoints()) != 0 {
		t.Fatal("stale endpoints kept")
	}
	for _, id := range []string{"e1", "e2"} {
		if _, ok := h.cl.Own(id); ok {
			t.Errorf("stale endpoint %s still published", id)
		}
	}
	if s, _ := h.dp.Last(); len(s.Networks)+len(s.Endpoints) != 0 {
		t.Errorf("left in the datapath: %+v", s)
	}
	if err := h.c.DeleteNetwork(ctx(t), "acme/web"); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
}

func TestCallsOnWhatIsNotThereSayWhat(t *testing.T) {
	h := newHarness(t)
	if _, _, err := h.c.AttachEndpoint(ctx(t), "nope", "/x"); !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("attach of an unknown endpoint: %v", err)
	}
	if _, ok := h.c.Network("acme/web"); ok {
		t.Error("Network found a network that is not there")
	}
	if _, ok := h.c.NetworkByRef("docker-n1"); ok {
		t.Error("NetworkByRef found a network that is not there")
	}
	if h.c.HasSubnet("acme", netip.MustParsePrefix("10.1.0.0/24")) {
		t.Error("HasSubnet before any network")
	}
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if !h.c.HasSubnet("acme", netip.MustParsePrefix("10.1.0.0/24")) || h.c.HasSubnet("globex", netip.MustParsePrefix("10.1.0.0/24")) {
		t.Error("HasSubnet does not tell tenants apart")
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	e, n, err := h.c.AttachEndpoint(ctx(t), "e1", "")
	if err != nil || e.Netns != "" || n.Key() != "acme/web" {
		t.Errorf("attach without a namespace: %+v %+v %v", e, n, err)
	}
	if err := h.c.CheckSubnet(netip.MustParsePrefix("127.0.0.0/8")); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("CheckSubnet of loopback: %v", err)
	}
	if m, err := h.c.MaxMTU(); err != nil || m != 1450 {
		t.Errorf("MaxMTU %d %v", m, err)
	}
}

func TestANetworkBeingCreatedTakesNoEndpoints(t *testing.T) {
	h := newHarness(t)
	release := h.dp.Block()
	created := make(chan error, 1)
	go func() { _, err := h.c.CreateNetwork(ctx(t), web()); created <- err }()
	eventually(t, "the network is pending", func() bool {
		return h.c.HasSubnet("acme", netip.MustParsePrefix("10.1.0.0/24"))
	})
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err == nil || !strings.Contains(err.Error(), "still being created") {
		t.Errorf("endpoint on a pending network: %v", err)
	}
	if _, ok := h.c.Network("acme/web"); ok {
		t.Error("a pending network is listed")
	}
	release()
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}

func TestAFailedClusterPassIsRetried(t *testing.T) {
	cfg := config(t, t.TempDir())
	cfg.RetryInterval = 10 * time.Millisecond
	dp, cl := &coretest.Datapath{}, coretest.NewCluster("h0")
	h := start(t, dp, cl, cfg)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	// The pass for another host's endpoint fails: nobody waits for it, so
	// the core retries on its own, with a full pass.
	dp.FailWhen(func(s core.Scope) bool { return len(s.Remotes) > 0 }, errors.New("kernel busy"))
	n := len(dp.Calls())
	cl.AddRemote(remote("r9", 9, "h1"))
	c := passAfter(t, dp, n, "a retry", func(c coretest.Call) bool { return c.Scope.All })
	if !hasRemote(c.State, "02:7e:0a:01:00:09") {
		t.Errorf("the retry lacks the remote: %+v", c.State.Remotes)
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	h := newHarness(t)
	if err := h.c.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v", err)
	}
}

func TestEndpointNamesAreKeptAndChecked(t *testing.T) {
	dir := t.TempDir()
	h := start(t, &coretest.Datapath{}, coretest.NewCluster("h0"), config(t, dir))
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err != nil {
		t.Fatal(err)
	}
	calls := len(h.dp.Calls())
	if err := h.c.SetEndpointNames(ctx(t), "e1", []string{"db", "postgres", "db.acme.web"}); err != nil {
		t.Fatal(err)
	}
	if len(h.dp.Calls()) != calls {
		t.Error("names reached the datapath")
	}
	for _, bad := range [][]string{{"bad name"}, {""}, {strings.Repeat("a", 64)}, make([]string, 33)} {
		if err := h.c.SetEndpointNames(ctx(t), "e1", bad); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("names %q: %v", bad, err)
		}
	}
	if err := h.c.SetEndpointNames(ctx(t), "nope", []string{"x"}); !errors.Is(err, core.ErrNotFound) {
		t.Errorf("names of an unknown endpoint: %v", err)
	}
	h.stop()
	h2 := start(t, &coretest.Datapath{}, coretest.NewCluster("h0"), config(t, dir))
	if e, ok := h2.c.Endpoint("e1"); !ok || strings.Join(e.Names, ",") != "db,postgres,db.acme.web" {
		t.Errorf("names after a restart: %+v", e)
	}
}

// TestCheckNameNamesTheRule: the name rules front ends apply one name at
// a time (a bad container alias is dropped, the others kept), each
// refusal saying which rule the name breaks.
func TestCheckNameNamesTheRule(t *testing.T) {
	for _, ok := range []string{"db", "db-1", "my_db", "db.acme", "A1", strings.Repeat("a", 63), strings.Repeat("a.", 126) + "a"} {
		if err := core.CheckName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, tt := range []struct{ name, want string }{
		{"", "must be 1-253 bytes"},
		{strings.Repeat("a.", 127) + "a", "must be 1-253 bytes"},
		{strings.Repeat("a", 64), "each label must be 1-63 bytes"},
		{"db..acme", "each label must be 1-63 bytes"},
		{".db", "each label must be 1-63 bytes"},
		{"db acme", "only letters, digits"},
		{"dé", "only letters, digits"},
		{"db/1", "only letters, digits"},
	} {
		err := core.CheckName(tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.name)) {
			t.Errorf("%q: got %v, want an error naming it with %q", tt.name, err, tt.want)
		}
	}
}

// TestNewRefusesWhatItCannotStartFrom: a config with a field wrong, a
// state file that is not a file, or one from a newer tenetd: New fails
// naming what is wrong, rather than starting empty and losing the host's
// networks.
func TestNewRefusesWhatItCannotStartFrom(t *testing.T) {
	bad := config(t, t.TempDir())
	bad.Host = ""
	if _, err := core.New(bad, &coretest.Datapath{}, coretest.NewCluster("h0")); err == nil || !strings.Contains(err.Error(), "Host") {
		t.Errorf("a config without Host: %v", err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "state.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := core.New(config(t, dir), &coretest.Datapath{}, coretest.NewCluster("h0")); err == nil || !strings.Contains(err.Error(), "state.json") {
		t.Errorf("state.json a directory: %v", err)
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"version":99,"networks":[],"endpoints":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := core.New(config(t, dir), &coretest.Datapath{}, coretest.NewCluster("h0")); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("a newer format: %v", err)
	}
}
