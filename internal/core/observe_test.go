package core_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/internal/core/coretest"
	"github.com/tenet-net/tenet/overlay"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu        sync.Mutex
	passes    []bool // full?
	errs      int
	converged []time.Duration
	published []time.Time
}

func (r *recorder) Reconciled(full bool, took time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.passes = append(r.passes, full)
	if err != nil {
		r.errs++
	}
}

func (r *recorder) Converged(published []time.Time, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range published {
		r.converged = append(r.converged, at.Sub(p))
		r.published = append(r.published, p)
	}
}

func (r *recorder) snapshot() (passes []bool, errs int, converged []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.passes), r.errs, slices.Clone(r.converged)
}

func TestObserverSeesPassesAndConvergence(t *testing.T) {
	rec := &recorder{}
	cfg := config(t, t.TempDir())
	cfg.Observer = rec
	dp, cl := &coretest.Datapath{}, coretest.NewCluster("h0")
	h := start(t, dp, cl, cfg)
	<-h.c.Started()
	eventually(t, "the start-up pass is observed", func() bool { p, _, _ := rec.snapshot(); return len(p) > 0 })
	if p, _, _ := rec.snapshot(); !p[0] {
		t.Errorf("the first pass is not full: %v", p)
	}
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := rec.snapshot(); p[len(p)-1] {
		t.Errorf("a network's pass was full: %v", p)
	}
	dp.FailNext(errors.New("boom"))
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err == nil {
		t.Fatal("a failing datapath did not fail the call")
	}
	if _, errs, _ := rec.snapshot(); errs != 1 {
		t.Errorf("%d failed passes observed, want 1", errs)
	}

	// A change converges when its pass is done, measured from its
	// version (the owner's clock); one published before this host had the
	// network (a replay, a catch-up) and a hidden entry returning do not
	// count.
	cl.AddHost("h1", vtep1)
	r := remote("r9", 9, "h1")
	r.Version = uint64(time.Now().UnixMicro())
	cl.AddRemote(r)
	eventually(t, "r9 converged", func() bool { _, _, c := rec.snapshot(); return len(c) == 1 })
	rec.mu.Lock()
	if c, p := rec.converged[0], rec.published[0]; c < 0 || c > 5*time.Second || !p.Equal(time.UnixMicro(int64(r.Version))) {
		t.Errorf("convergence %v from %v, want from the version %d", c, p, r.Version)
	}
	rec.mu.Unlock()
	old := remote("r8", 8, "h1")
	old.Version = uint64(time.Now().Add(-time.Hour).UnixMicro())
	cl.AddRemote(old)
	n := len(dp.Calls())
	cl.Emit(gossip.Event{Kind: gossip.EventPut, Table: gossip.TableEndpoints, Key: "r9", Host: "h1", Hidden: true,
		Version: uint64(time.Now().UnixMicro()), Endpoint: &gossip.Endpoint{ID: "r9", Network: "acme/web", MAC: r.MAC, IP: r.IP, VTEP: r.VTEP}})
	marker := remote("r7", 7, "h1")
	marker.Version = uint64(time.Now().UnixMicro())
	cl.AddRemote(marker)
	passAfter(t, dp, n, "the marker's pass", func(c coretest.Call) bool { return hasRemote(c.State, "02:7e:0a:01:00:07") })
	eventually(t, "the marker converged", func() bool { _, _, c := rec.snapshot(); return len(c) >= 2 })
	if _, _, c := rec.snapshot(); len(c) != 2 {
		t.Errorf("convergence samples %v: want r9's and the marker's only", c)
	}
}

func TestWriterStateShowsABusyAndAFailedPass(t *testing.T) {
	h := newHarness(t)
	<-h.c.Started()
	if st := h.c.Writer(); st.Busy != 0 || st.LastErr != nil {
		t.Errorf("idle writer: %+v", st)
	}
	release := h.dp.Block()
	done := make(chan error, 1)
	go func() { _, err := h.c.CreateNetwork(ctx(t), web()); done <- err }()
	eventually(t, "the writer is busy", func() bool { return h.c.Writer().Busy > 0 })
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.dp.Break(errors.New("netlink: boom"))
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err == nil {
		t.Fatal("no error")
	}
	// The undo fails too: a retry is due.
	eventually(t, "a retry is due", func() bool { return !h.c.Writer().RetryAt.IsZero() })
	if st := h.c.Writer(); st.LastErr == nil || !strings.Contains(st.LastErr.Error(), "boom") {
		t.Errorf("after a failed pass: %+v", st)
	}
	h.dp.Break(nil)
	eventually(t, "the retry succeeds", func() bool { st := h.c.Writer(); return st.LastErr == nil && st.RetryAt.IsZero() })
}

func TestDiagnoseNamesNetworksEndpointsAndHosts(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	e1, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e2", "10.1.0.6")); err != nil {
		t.Fatal(err)
	}
	fs, err := h.c.Diagnose(ctx(t))
	if err != nil || len(fs) != 0 {
		t.Fatalf("a healthy host: findings %+v, err %v", fs, err)
	}
	if d := h.dp.Diagnosed(); len(d) != 1 || len(d[0].Endpoints) != 2 {
		t.Errorf("the datapath was asked about %+v, want the desired state with 2 endpoints", d)
	}

	h.cl.AddHost("h1", vtep1)
	r := remote("r9", 9, "h1")
	h.cl.AddRemote(r)
	thief := remote("thief", 5, "h1")
	h.cl.AddRemote(thief)
	h.dp.SetFindings([]overlay.Finding{
		{Problem: overlay.Missing, Tenant: "acme", Object: "fdb 02:7e:0a:01:00:09 dev vx", VNI: vni, MAC: r.MAC.String(), Fix: "fdb append"},
		{Problem: overlay.Differs, Tenant: "acme", Object: "guard", Port: overlay.BridgeVeth("e1"), Fix: "guard"},
	})
	h.cl.DeleteEndpoint("e2")                                                // lost from the ring
	h.cl.PutOwn(gossip.Endpoint{ID: "ghost", Network: "acme/web", IP: r.IP}) // in the ring, not here
	h.cl.Detach("acme/web")
	h.cl.AddHost("h2", vtep1)
	h.cl.HostDown("h2", time.Now())

	fs, err = h.c.Diagnose(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ area, problem, network, endpoint, host, object string }
	for _, w := range []want{
		{core.AreaKernel, overlay.Missing, "acme/web", "r9", "h1", "fdb"},
		{core.AreaKernel, overlay.Differs, "acme/web", "e1", "", "guard"},
		{core.AreaCluster, "conflict", "acme/web", "thief", "h1", "claims ip 10.1.0.5"},
		{core.AreaGossip, overlay.Missing, "acme/web", "e2", "", "not in the ring"},
		{core.AreaGossip, overlay.Stale, "acme/web", "ghost", "", "has no such endpoint"},
		{core.AreaGossip, overlay.Missing, "acme/web", "", "", "attachment"},
		{core.AreaCluster, "down", "", "", "h2", "host h2 is down since"},
	} {
		if !slices.ContainsFunc(fs, func(f core.Finding) bool {
			return f.Area == w.area && f.Problem == w.problem && f.Network == w.network && f.Endpoint == w.endpoint &&
				f.Host == w.host && strings.Contains(f.Object, w.object) && f.Fix != ""
		}) {
			t.Errorf("no finding %+v in:\n%+v", w, fs)
		}
	}
	if len(fs) != 7 {
		t.Errorf("%d findings, want 7: %+v", len(fs), fs)
	}
	_ = e1

	// Every other host down: this one is cut off.
	h.cl.HostDown("h1", time.Now())
	fs, err = h.c.Diagnose(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fs, func(f core.Finding) bool { return f.Problem == "isolated" }) {
		t.Errorf("all hosts down, yet not isolated: %+v", fs)
	}
}

func TestDiagnoseWaitsForThePassUnderWay(t *testing.T) {
	h := newHarness(t)
	release := h.dp.Block()
	done := make(chan error, 1)
	go func() { _, err := h.c.CreateNetwork(ctx(t), web()); done <- err }()
	eventually(t, "the writer is busy", func() bool { return h.c.Writer().Busy > 0 })
	diag := make(chan []core.Finding, 1)
	go func() {
		fs, err := h.c.Diagnose(ctx(t))
		if err != nil {
			t.Error(err)
		}
		diag <- fs
	}()
	select {
	case fs := <-diag:
		t.Fatalf("diagnose ran during a pass: %+v", fs)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-diag
	if d := h.dp.Diagnosed(); len(d) != 1 || len(d[0].Networks) != 1 {
		t.Errorf("diagnose saw %+v, want the state with the new network", d)
	}
}

// TestDiagnoseReportsAFailingWriter: while passes fail, Diagnose says so,
// with the error and when the retry is due; once one succeeds, it does
// not.
func TestDiagnoseReportsAFailingWriter(t *testing.T) {
	h := newHarness(t)
	if _, err := h.c.CreateNetwork(ctx(t), web()); err != nil {
		t.Fatal(err)
	}
	h.dp.Break(errors.New("netlink: the kernel said no"))
	if _, err := h.c.CreateEndpoint(ctx(t), ep("e1", "10.1.0.5")); err == nil {
		t.Fatal("a create succeeded on a broken datapath")
	}
	eventually(t, "a retry is due", func() bool { return !h.c.Writer().RetryAt.IsZero() })
	fs, err := h.c.Diagnose(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(fs, func(f core.Finding) bool { return f.Area == core.AreaWriter })
	if i < 0 {
		t.Fatalf("no writer finding in %+v", fs)
	}
	if f := fs[i]; f.Problem != "failing" || !strings.Contains(f.Object, "the kernel said no") || !strings.Contains(f.Fix, "retries at") {
		t.Errorf("writer finding: %+v", f)
	}
	h.dp.Break(nil)
	eventually(t, "the retry succeeds", func() bool { st := h.c.Writer(); return st.LastErr == nil && st.RetryAt.IsZero() })
	fs, err = h.c.Diagnose(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(fs, func(f core.Finding) bool { return f.Area == core.AreaWriter }) {
		t.Errorf("a writer finding after a pass succeeded: %+v", fs)
	}
}
