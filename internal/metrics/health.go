package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tenet-net/tenet/internal/unixhttp"
)

// Check is one condition of liveness or readiness: nil when it holds, else
// why not.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Health answers /healthz from its Live checks (is the process working:
// restart it if not) and /readyz from its Ready checks (can it do its job:
// send it no work if not).
type Health struct {
	Live  []Check
	Ready []Check
	// Timeout bounds each check (2 s).
	Timeout time.Duration
}

// Result of checks: each check's name with "ok" or its failure, one per
// line, and whether all passed.
func (h *Health) run(ctx context.Context, checks []Check) (string, bool) {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	var b strings.Builder
	ok := true
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Fn(cctx)
		cancel()
		if err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", c.Name, err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.Name)
		}
	}
	return b.String(), ok
}

// LiveNow runs the Live checks.
func (h *Health) LiveNow(ctx context.Context) error {
	if report, ok := h.run(ctx, h.Live); !ok {
		return fmt.Errorf("not live: %s", strings.TrimSpace(strings.ReplaceAll(report, "\n", "; ")))
	}
	return nil
}

// ReadyNow runs the Ready checks.
func (h *Health) ReadyNow(ctx context.Context) error {
	if report, ok := h.run(ctx, h.Ready); !ok {
		return fmt.Errorf("not ready: %s", strings.TrimSpace(strings.ReplaceAll(report, "\n", "; ")))
	}
	return nil
}

func (h *Health) handler(checks func() []Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		report, ok := h.run(r.Context(), checks())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprint(w, report)
	}
}

// Handler serves /metrics (if m is not nil), /healthz and /readyz (if h is
// not nil).
func Handler(m *Metrics, h *Health) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("GET /metrics", m.Handler())
	}
	if h != nil {
		mux.Handle("GET /healthz", h.handler(func() []Check { return h.Live }))
		mux.Handle("GET /readyz", h.handler(func() []Check { return h.Ready }))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "tenetd: try /metrics, /healthz or /readyz", http.StatusNotFound)
	})
	return mux
}

// Serve answers Handler(m, h) on the TCP address addr until ctx is done.
func Serve(ctx context.Context, addr string, m *Metrics, h *Health, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics and health: %w", err)
	}
	return unixhttp.ServeListener(ctx, unixhttp.Config{Name: "metrics and health", Logger: log, MaxConns: 32}, l, Handler(m, h))
}
