package metrics

import (
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenet-net/tenet/internal/core"
	"github.com/tenet-net/tenet/ipam"
)

// Local is what the metrics read of this host's core when scraped:
// *core.Core.
type Local interface {
	Networks() []core.Network
	Endpoints() []core.Endpoint
	Writer() core.WriterState
}

// Remotes lists other hosts' endpoints on a network (core.Cluster's).
type Remotes interface {
	Remotes(network string) []core.Remote
}

// Config configures Metrics.
type Config struct {
	Host    string
	Version string
	// Window is what tenetctl status's convergence figures cover (1 min).
	Window time.Duration
	Logger *slog.Logger
}

// Sources are read when the metrics are scraped. Any may be nil.
type Sources struct {
	Local   Local
	Cluster Remotes
	// Gossip reads the ring's statistics (FromGossip).
	Gossip func() GossipStats
	// IPAM reads the pools' statistics (ipam.IPAM.Stats).
	IPAM func() []ipam.PoolStats
}

// Metrics holds tenetd's instruments and its registry.
type Metrics struct {
	cfg         Config
	reg         *prometheus.Registry
	calls       *prometheus.HistogramVec
	passes      *prometheus.HistogramVec
	convergence prometheus.Histogram
	ahead       prometheus.Counter
	window      *window
	detach      atomic.Pointer[func()]
}

var _ core.Observer = (*Metrics)(nil)

// windowCap bounds the convergence samples kept for the window; beyond
// it, Summary.Span says how much the window covers.
const windowCap = 8192

// New makes the instruments and registers them, with Go's runtime and
// process metrics.
func New(cfg Config) *Metrics {
	if cfg.Window == 0 {
		cfg.Window = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{cfg: cfg, reg: prometheus.NewRegistry(), window: newWindow(cfg.Window, windowCap)}
	m.calls = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tenet_plugin_call_duration_seconds",
		Help:    "Time to answer a Docker plugin call, by call (NetworkDriver.CreateEndpoint, ...) and result (ok, error).",
		Buckets: prometheus.ExponentialBucketsRange(0.0005, 10, 16),
	}, []string{"call", "result"})
	m.passes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tenet_reconcile_duration_seconds",
		Help:    "Time of a datapath pass of the core's writer, by kind (full: start-up, repair, retry; scoped: a change) and result (ok, error).",
		Buckets: prometheus.ExponentialBucketsRange(0.0001, 60, 18),
	}, []string{"kind", "result"})
	m.convergence = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "tenet_convergence_seconds",
		Help:    "Time from another host publishing an endpoint change (its gossip version, the owner's clock) to the change being programmed in this host's kernel; as exact as the hosts' clocks agree.",
		Buckets: prometheus.ExponentialBucketsRange(0.0005, 60, 18),
	})
	m.ahead = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tenet_convergence_clock_ahead_total",
		Help: "Changes whose publication time was after the time they were programmed here: the owner's clock is ahead of this host's (counted as 0 s in tenet_convergence_seconds).",
	})
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenet_build_info", Help: "Always 1; labels name this tenetd.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "host": cfg.Host}})
	info.Set(1)
	m.reg.MustRegister(m.calls, m.passes, m.convergence, m.ahead, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch adds the series read from src when scraped: networks and endpoints
// per tenant, the writer, gossip, IPAM. Metrics exist before the core
// does (the core reports to them), so its sources come afterwards.
func (m *Metrics) Watch(src Sources) error {
	return m.reg.Register(&state{host: m.cfg.Host, src: src})
}

// Registry is where the metrics are registered, for callers that add
// collectors of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.cfg.Logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError})
}

// ObserveCall records a plugin call (driver.Config.ObserveCall).
func (m *Metrics) ObserveCall(call string, took time.Duration, err error) {
	m.calls.WithLabelValues(call, result(err)).Observe(took.Seconds())
}

// Reconciled records a writer pass (core.Observer).
func (m *Metrics) Reconciled(full bool, took time.Duration, err error) {
	kind := "scoped"
	if full {
		kind = "full"
	}
	m.passes.WithLabelValues(kind, result(err)).Observe(took.Seconds())
}

// Converged records remote changes programmed here (core.Observer).
func (m *Metrics) Converged(published []time.Time, at time.Time) {
	for _, p := range published {
		d := at.Sub(p)
		if d < 0 {
			m.ahead.Inc()
			d = 0
		}
		m.convergence.Observe(d.Seconds())
		m.window.add(at, d)
	}
}

// Convergence summarises the convergence samples of the last Window.
func (m *Metrics) Convergence() Summary { return m.window.summary(time.Now()) }

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Close detaches memberlist's metrics (AttachMemberlist).
func (m *Metrics) Close() {
	if d := m.detach.Swap(nil); d != nil {
		(*d)()
	}
}

var errAttached = errors.New("metrics: memberlist metrics are already attached")
