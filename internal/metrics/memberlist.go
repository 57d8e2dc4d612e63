package metrics

// memberlist reports its metrics (probe times, messages, queue lengths,
// members by state) to hashicorp/go-metrics' process-wide sink. Tenet sets
// that sink once, to router, which hands each metric to the Metrics
// attached under the metric's "node" label. gossip labels every memberlist
// metric with its node name; a metric without one is counted and dropped,
// so nothing is ever routed by guess.

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// NodeLabel is the go-metrics label naming the node a memberlist metric
// comes from; gossip sets it.
const NodeLabel = "node"

// router is go-metrics' global sink once the first Metrics attaches.
var router = &mlRouter{sinks: map[string]*mlSink{}}

type mlRouter struct {
	install  sync.Once
	unrouted atomic.Uint64
	mu       sync.Mutex // guards sinks
	sinks    map[string]*mlSink
}

// AttachMemberlist makes memberlist's metrics of node (the gossip node
// name) part of these metrics, as memberlist_* series, until Close. A
// second attach of the same node name in one process replaces the first.
func (m *Metrics) AttachMemberlist(node string) error {
	if m.detach.Load() != nil {
		return errAttached
	}
	s := &mlSink{series: map[string]*series{}, shapes: map[string]string{}}
	if err := m.reg.Register(s); err != nil {
		return err
	}
	router.install.Do(func() {
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname, cfg.EnableHostnameLabel, cfg.EnableRuntimeMetrics = false, false, false
		cfg.EnableServiceLabel, cfg.EnableTypePrefix = false, false
		_, _ = gometrics.NewGlobal(cfg, router)
	})
	router.mu.Lock()
	router.sinks[node] = s
	router.mu.Unlock()
	detach := func() {
		router.mu.Lock()
		if router.sinks[node] == s {
			delete(router.sinks, node)
		}
		router.mu.Unlock()
		// An unchecked collector cannot be unregistered: it empties.
		s.mu.Lock()
		s.series, s.detached = map[string]*series{}, true
		s.mu.Unlock()
	}
	m.detach.Store(&detach)
	return nil
}

// route finds the sink of a metric's node and takes the label off.
func (r *mlRouter) route(labels []gometrics.Label) (*mlSink, []gometrics.Label) {
	node, rest := "", make([]gometrics.Label, 0, len(labels))
	for _, l := range labels {
		if l.Name == NodeLabel {
			node = l.Value
		} else {
			rest = append(rest, l)
		}
	}
	r.mu.Lock()
	s := r.sinks[node]
	r.mu.Unlock()
	if s == nil {
		r.unrouted.Add(1)
	}
	return s, rest
}

func (r *mlRouter) SetGauge(key []string, val float32) { r.SetGaugeWithLabels(key, val, nil) }
func (r *mlRouter) SetGaugeWithLabels(key []string, val float32, labels []gometrics.Label) {
	if s, rest := r.route(labels); s != nil {
		s.record(kindGauge, key, rest, float64(val))
	}
}
func (r *mlRouter) EmitKey(key []string, val float32)     {}
func (r *mlRouter) IncrCounter(key []string, val float32) { r.IncrCounterWithLabels(key, val, nil) }
func (r *mlRouter) IncrCounterWithLabels(key []string, val float32, labels []gometrics.Label) {
	if s, rest := r.route(labels); s != nil {
		s.record(kindCounter, key, rest, float64(val))
	}
}
func (r *mlRouter) AddSample(key []string, val float32) { r.AddSampleWithLabels(key, val, nil) }
func (r *mlRouter) AddSampleWithLabels(key []string, val float32, labels []gometrics.Label) {
	if s, rest := r.route(labels); s != nil {
		s.record(kindSample, key, rest, float64(val))
	}
}

type kind int

const (
	kindGauge kind = iota
	kindCounter
	kindSample
)

// series is one metric with one set of label values.
type series struct {
	kind   kind
	name   string
	labels []string // names
	values []string
	value  float64 // gauge: last; counter: sum
	count  uint64  // sample
	sum    float64 // sample
}

// mlSink holds one node's memberlist metrics, as a Prometheus collector:
// counters (name_total), gauges, and samples as summaries without
// quantiles (count and sum; memberlist's timings are in milliseconds).
type mlSink struct {
	mu       sync.Mutex         // guards the fields below
	series   map[string]*series // by name and label values
	shapes   map[string]string  // name -> its kind and label names, as first seen
	dropped  uint64             // metrics whose shape differed from the first seen
	detached bool
}

func (s *mlSink) record(k kind, key []string, labels []gometrics.Label, v float64) {
	name := "memberlist_" + sanitize(strings.Join(trimPrefix(key), "_"))
	if k == kindCounter {
		name += "_total"
	}
	sort.Slice(labels, func(i, j int) bool { return labels[i].Name < labels[j].Name })
	names, values := make([]string, len(labels)), make([]string, len(labels))
	for i, l := range labels {
		names[i], values[i] = sanitize(l.Name), l.Value
	}
	shape := string(rune('0'+k)) + strings.Join(names, ",")
	id := name + "\x00" + strings.Join(values, "\x00")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.detached {
		return
	}
	if old, ok := s.shapes[name]; !ok {
		s.shapes[name] = shape
	} else if old != shape {
		s.dropped++ // Prometheus needs one kind and label set per name
		return
	}
	se := s.series[id]
	if se == nil {
		se = &series{kind: k, name: name, labels: names, values: values}
		s.series[id] = se
	}
	switch k {
	case kindGauge:
		se.value = v
	case kindCounter:
		se.value += v
	case kindSample:
		se.count++
		se.sum += v
	}
}

// trimPrefix drops memberlist's own "memberlist" part of a key, which the
// name gets anyway.
func trimPrefix(key []string) []string {
	if len(key) > 0 && key[0] == "memberlist" {
		return key[1:]
	}
	return key
}

// sanitize makes s a valid Prometheus name part.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func (s *mlSink) Describe(chan<- *prometheus.Desc) {}

func (s *mlSink) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	all := make([]series, 0, len(s.series))
	for _, se := range s.series {
		all = append(all, *se)
	}
	dropped, detached := s.dropped, s.detached
	s.mu.Unlock()
	if detached {
		return
	}
	for _, se := range all {
		d := prometheus.NewDesc(se.name, "memberlist's own metric, as it reports it (hashicorp/go-metrics).", se.labels, nil)
		switch se.kind {
		case kindGauge:
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, se.value, se.values...)
		case kindCounter:
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, se.value, se.values...)
		case kindSample:
			ch <- prometheus.MustNewConstSummary(d, se.count, se.sum, nil, se.values...)
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("tenet_memberlist_metrics_dropped_total",
		"memberlist metrics left out because their kind or labels differed from the first seen under their name.", nil, nil),
		prometheus.CounterValue, float64(dropped))
}
