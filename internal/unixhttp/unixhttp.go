// Package unixhttp serves HTTP on a unix socket for tenetd's two servers
// (Docker's plugin protocol and the admin API), and on any listener for
// its metrics and health endpoints, with the limits a daemon on
// a shared host needs: a client that connects and sends nothing, or sends
// a body slowly, is dropped after a deadline; the number of connections is
// bounded; request bodies are bounded; and complaints about bad requests
// are logged at most a few times a second (the rest are counted), so a
// misbehaving client cannot fill the disk.
package unixhttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Config of a server. Zero fields take the defaults in Serve.
type Config struct {
	Path    string      // the socket
	DirMode os.FileMode // of the socket's directory if it is made
	Mode    os.FileMode // of the socket (0600: root only)
	Name    string      // for logs: "docker plugin", "admin"
	// HeaderTimeout bounds the wait for a request's headers, including the
	// first request on a new connection.
	HeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends nothing more.
	IdleTimeout time.Duration
	// MaxConns bounds the connections served at once; more wait in the
	// kernel's backlog.
	MaxConns int
	Logger   *slog.Logger
}

func (c *Config) defaults() {
	if c.DirMode == 0 {
		c.DirMode = 0o755
	}
	if c.Mode == 0 {
		c.Mode = 0o600
	}
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxConns == 0 {
		c.MaxConns = 256
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Serve answers h on the socket until ctx is done, then shuts down and
// removes the socket. A stale socket file is replaced.
func Serve(ctx context.Context, cfg Config, h http.Handler) error {
	cfg.defaults()
	if err := os.MkdirAll(filepath.Dir(cfg.Path), cfg.DirMode); err != nil {
		return fmt.Errorf("%s socket: %w", cfg.Name, err)
	}
	if err := os.Remove(cfg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s socket: %w", cfg.Name, err)
	}
	l, err := net.Listen("unix", cfg.Path)
	if err != nil {
		return fmt.Errorf("%s socket: %w", cfg.Name, err)
	}
	if err := os.Chmod(cfg.Path, cfg.Mode); err != nil {
		l.Close()
		return fmt.Errorf("%s socket: %w", cfg.Name, err)
	}
	defer os.Remove(cfg.Path)
	return ServeListener(ctx, cfg, l, h)
}

// ServeListener answers h on l (which it closes) until ctx is done, with
// cfg's limits; cfg.Path is only named in messages.
func ServeListener(ctx context.Context, cfg Config, l net.Listener, h http.Handler) error {
	cfg.defaults()
	where, key := cfg.Path, "socket"
	if where == "" {
		where, key = l.Addr().String(), "addr"
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: cfg.HeaderTimeout, ReadTimeout: cfg.ReadTimeout,
		IdleTimeout: cfg.IdleTimeout, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(limit(l, cfg.MaxConns)) }()
	cfg.Logger.Info("serving "+cfg.Name, key, where)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", where, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// limit makes l hand out at most n connections at once.
func limit(l net.Listener, n int) net.Listener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n)}
}

type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// RateLog logs at most Burst messages per second at its level; the rest
// are counted, and the count is reported with the next message logged.
type RateLog struct {
	Logger *slog.Logger
	Level  slog.Level
	Burst  int

	mu         sync.Mutex // guards the fields below
	window     time.Time
	n          int
	suppressed atomic.Uint64
}

// Log logs msg unless this second's budget is spent.
func (r *RateLog) Log(ctx context.Context, msg string, args ...any) {
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.window) >= time.Second {
		r.window, r.n = now, 0
	}
	r.n++
	ok := r.n <= max(r.Burst, 1)
	r.mu.Unlock()
	if !ok {
		r.suppressed.Add(1)
		return
	}
	if s := r.suppressed.Swap(0); s > 0 {
		args = append(args, "suppressed_since_last", s)
	}
	r.Logger.Log(ctx, r.Level, msg, args...)
}

// Suppressed is how many messages were dropped since the last one logged.
func (r *RateLog) Suppressed() uint64 { return r.suppressed.Load() }
