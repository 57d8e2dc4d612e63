package driver

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
)

// fakeEngine answers the engine API calls the Namer makes, over a unix
// socket: container and network inspection from its maps, and an event
// stream the test feeds (and may cut).
type fakeEngine struct {
	sock string

	mu         sync.Mutex
	containers map[string]EngineContainer
	networks   map[string]map[string]json.RawMessage // network ID -> container ID -> {}
	inspected  map[string]int
	events     chan EngineEvent
	cut        chan struct{}
	streams    int
}

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	f := &fakeEngine{sock: filepath.Join(t.TempDir(), "docker.sock"), containers: map[string]EngineContainer{},
		networks: map[string]map[string]json.RawMessage{}, inspected: map[string]int{},
		events: make(chan EngineEvent, 16), cut: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1.41/containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		c, ok := f.containers[r.PathValue("id")]
		f.inspected[r.PathValue("id")]++
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(c)
	})
	mux.HandleFunc("GET /v1.41/networks/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		cs, ok := f.networks[r.PathValue("id")]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"message":"no such network"}`, http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(EngineNetwork{ID: r.PathValue("id"), Containers: cs})
	})
	mux.HandleFunc("GET /v1.41/events", func(w http.ResponseWriter, r *http.Request) {
		var filters map[string][]string
		if err := json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters); err != nil || !slices.Contains(filters["type"], "network") {
			http.Error(w, "bad filters", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.streams++
		cut := f.cut
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-f.events:
				_ = json.NewEncoder(w).Encode(ev)
				w.(http.Flusher).Flush()
			case <-cut:
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeEngine) put(c EngineContainer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[c.ID] = c
	for _, ep := range c.NetworkSettings.Networks {
		if f.networks[ep.NetworkID] == nil {
			f.networks[ep.NetworkID] = map[string]json.RawMessage{}
		}
		f.networks[ep.NetworkID][c.ID] = json.RawMessage(`{}`)
	}
}

func (f *fakeEngine) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams
}

// cutStreams ends the event streams, as an engine restart does.
func (f *fakeEngine) cutStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.cut)
	f.cut = make(chan struct{})
}

func container(id, name string, eps map[string]EngineEndpoint) EngineContainer {
	c := EngineContainer{ID: id, Name: "/" + name}
	c.NetworkSettings.Networks = eps
	return c
}

func connect(container string) EngineEvent {
	ev := EngineEvent{Type: "network", Action: "connect"}
	ev.Actor.ID = "n1"
	ev.Actor.Attributes = map[string]string{"container": container}
	return ev
}

func TestNamerLearnsNamesAndAliasesFromTheEngine(t *testing.T) {
	dp, cl := &coretest.Datapath{MTU: 1450}, coretest.NewCluster("h0")
	ccfg := core.DefaultConfig()
	ccfg.Host, ccfg.VTEP, ccfg.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
	c, err := core.New(ccfg, dp, cl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	coreDone := make(chan error, 1)
	go func() { coreDone <- c.Run(ctx) }()
	defer func() { cancel(); <-coreDone }()
	for _, n := range []core.NetworkSpec{
		{Tenant: "acme", Name: "web", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Ref: "n1"},
		{Tenant: "acme", Name: "db", Subnet: netip.MustParsePrefix("10.2.0.0/24"), Ref: "n2"},
	} {
		if _, err := c.CreateNetwork(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []core.EndpointSpec{
		{ID: "e-old", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.4/24")},
		{ID: "e-web", Network: "acme/web", IP: netip.MustParsePrefix("10.1.0.5/24")},
		{ID: "e-db", Network: "acme/db", IP: netip.MustParsePrefix("10.2.0.5/24")},
	} {
		if _, err := c.CreateEndpoint(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	names := func(id string) []string {
		e, _ := c.Endpoint(id)
		return e.Names
	}
	await := func(what, id string, want []string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Equal(names(id), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: names of %s are %q, want %q", what, id, names(id), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	eng := newFakeEngine(t)
	// A container that ran before tenetd started: found by the first round.
	eng.put(container("c0aaaaaaaaaaaaaaaa", "old", map[string]EngineEndpoint{"acme.web": {NetworkID: "n1", EndpointID: "e-old"}}))
	var logs strings.Builder
	var logMu sync.Mutex
	n := &Namer{Engine: NewEngine(eng.sock), Core: c, Interval: time.Hour, MaxBackoff: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return logs.Write(p)
		}), nil))}
	nctx, ncancel := context.WithCancel(ctx)
	namerDone := make(chan error, 1)
	go func() { namerDone <- n.Run(nctx) }()
	defer func() { ncancel(); <-namerDone }()
	await("at start", "e-old", []string{"old"})

	// docker run --name web1 --network acme.web --network-alias www --network-alias www,
	// then docker network connect --alias pg acme.db web1. Docker adds the
	// short ID to the aliases of user-defined networks; it is no name.
	id := "c1bbbbbbbbbbbbbbbbbbbbbb"
	eng.put(container(id, "web1", map[string]EngineEndpoint{
		"acme.web": {NetworkID: "n1", EndpointID: "e-web", Aliases: []string{"www", "web1", "www", id[:12], "bad name!"}},
		"acme.db":  {NetworkID: "n2", EndpointID: "e-db", Aliases: []string{"pg", id[:12]}},
		"other":    {NetworkID: "n9", EndpointID: "e-other", Aliases: []string{"x"}},
	}))
	eng.events <- connect(id)
	await("after connect", "e-web", []string{"web1", "www"})
	await("after connect", "e-db", []string{"web1", "pg"})
	logMu.Lock()
	if !strings.Contains(logs.String(), "bad name!") {
		t.Errorf("a refused alias was not logged:\n%s", logs.String())
	}
	logMu.Unlock()

	// docker rename web1 web2.
	eng.put(container(id, "web2", map[string]EngineEndpoint{
		"acme.web": {NetworkID: "n1", EndpointID: "e-web", Aliases: []string{"www", id[:12]}},
		"acme.db":  {NetworkID: "n2", EndpointID: "e-db", Aliases: []string{"pg", id[:12]}},
	}))
	ev := EngineEvent{Type: "container", Action: "rename"}
	ev.Actor.ID = id
	eng.events <- ev
	await("after rename", "e-web", []string{"web2", "www"})
	await("after rename", "e-db", []string{"web2", "pg"})

	// The engine restarts: the stream breaks, the Namer reconnects and
	// makes up for what it missed (a rename while it was away).
	eng.put(container("c0aaaaaaaaaaaaaaaa", "older", map[string]EngineEndpoint{"acme.web": {NetworkID: "n1", EndpointID: "e-old"}}))
	before := eng.streamCount()
	eng.cutStreams()
	deadline := time.Now().Add(5 * time.Second)
	for eng.streamCount() == before {
		if time.Now().After(deadline) {
			t.Fatal("the Namer never reconnected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	await("after reconnecting", "e-old", []string{"older"})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestPluginCallsAreObservedAndProbed(t *testing.T) {
	type call struct {
		name string
		err  bool
	}
	var mu sync.Mutex
	var calls []call
	cfg := DefaultConfig()
	cfg.Host = "h0"
	cfg.ObserveCall = func(name string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{name, err != nil})
	}
	c, err := core.New(func() core.Config {
		cc := core.DefaultConfig()
		cc.Host, cc.VTEP, cc.StateDir = "h0", netip.MustParseAddr("198.51.100.10"), t.TempDir()
		return cc
	}(), &coretest.Datapath{}, coretest.NewCluster("h0"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "tenet.sock")
	if err := Probe(t.Context(), sock); err == nil {
		t.Error("a probe of a socket nobody serves succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, sock) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := Probe(t.Context(), sock)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Post("http://plugin/NetworkDriver.CreateNetwork", "application/json", strings.NewReader(`{"NetworkID":`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(calls, call{"Plugin.Activate", false}) || !slices.Contains(calls, call{"NetworkDriver.CreateNetwork", true}) {
		t.Errorf("observed %v", calls)
	}
}
