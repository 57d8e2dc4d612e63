package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tenet-net/tenet/ipam"
)

// PluginName is the name Docker knows the driver by: -d tenet.
const PluginName = "tenet"

const maxRequestBody = 1 << 20

// Handler returns the HTTP handler of the plugin protocol. Every call is
// decoded, answered within Config.RequestTimeout, and every failure is a
// JSON {"Err": "..."} saying what was wrong; nothing panics on bad input.
func (d *Driver) Handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	handle := func(path string, fn func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
			if err == nil && len(body) > maxRequestBody {
				err = fmt.Errorf("request body over %d bytes", maxRequestBody)
			}
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("%s: %w", path, err))
				return
			}
			cctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
			defer cancel()
			start := time.Now()
			resp, err := d.bounded(cctx, path, func(c context.Context) (any, error) { return fn(c, body) })
			d.log.Debug("plugin call", "call", path, "took", time.Since(start))
			if err != nil {
				d.log.Warn("plugin call failed", "call", path, "err", err)
				writeError(w, http.StatusInternalServerError, err)
				return
			}
			writeJSON(w, http.StatusOK, resp)
		})
	}
	handle("/Plugin.Activate", func(context.Context, []byte) (any, error) {
		return map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}}, nil
	})
	handle("/IpamDriver.GetCapabilities", func(context.Context, []byte) (any, error) {
		// The MAC option tells a container's address from an aux address;
		// the replay at Docker's start rebuilds pool references.
		return map[string]bool{"RequiresMACAddress": true, "RequiresRequestReplay": true}, nil
	})
	handle("/IpamDriver.GetDefaultAddressSpaces", func(context.Context, []byte) (any, error) {
		return map[string]string{"LocalDefaultAddressSpace": ipam.LocalSpace, "GlobalDefaultAddressSpace": ipam.GlobalSpace}, nil
	})
	handle("/IpamDriver.RequestPool", func(ctx context.Context, b []byte) (any, error) {
		var req requestPoolRequest
		if err := decode("RequestPool", b, &req); err != nil {
			return nil, err
		}
		return d.RequestPool(ctx, req)
	})
	handle("/IpamDriver.ReleasePool", func(ctx context.Context, b []byte) (any, error) {
		var req releasePoolRequest
		if err := decode("ReleasePool", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.ReleasePool(ctx, req)
	})
	handle("/IpamDriver.RequestAddress", func(ctx context.Context, b []byte) (any, error) {
		var req requestAddressRequest
		if err := decode("RequestAddress", b, &req); err != nil {
			return nil, err
		}
		return d.RequestAddress(ctx, req)
	})
	handle("/IpamDriver.ReleaseAddress", func(ctx context.Context, b []byte) (any, error) {
		var req releaseAddressRequest
		if err := decode("ReleaseAddress", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.ReleaseAddress(ctx, req)
	})
	handle("/NetworkDriver.GetCapabilities", func(context.Context, []byte) (any, error) {
		// Docker 20.10 refuses Scope "global" outside swarm.
		return capabilitiesResponse{Scope: "local", ConnectivityScope: "global"}, nil
	})
	handle("/NetworkDriver.CreateNetwork", func(ctx context.Context, b []byte) (any, error) {
		var req createNetworkRequest
		if err := decode("CreateNetwork", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.CreateNetwork(ctx, req)
	})
	handle("/NetworkDriver.DeleteNetwork", func(ctx context.Context, b []byte) (any, error) {
		var req networkRequest
		if err := decode("DeleteNetwork", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.DeleteNetwork(ctx, req)
	})
	handle("/NetworkDriver.CreateEndpoint", func(ctx context.Context, b []byte) (any, error) {
		var req createEndpointRequest
		if err := decode("CreateEndpoint", b, &req); err != nil {
			return nil, err
		}
		return d.CreateEndpoint(ctx, req)
	})
	handle("/NetworkDriver.EndpointOperInfo", func(ctx context.Context, b []byte) (any, error) {
		var req endpointRequest
		if err := decode("EndpointOperInfo", b, &req); err != nil {
			return nil, err
		}
		v, err := d.EndpointInfo(req)
		return infoResponse{Value: v}, err
	})
	handle("/NetworkDriver.DeleteEndpoint", func(ctx context.Context, b []byte) (any, error) {
		var req endpointRequest
		if err := decode("DeleteEndpoint", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.DeleteEndpoint(ctx, req)
	})
	handle("/NetworkDriver.Join", func(ctx context.Context, b []byte) (any, error) {
		var req joinRequest
		if err := decode("Join", b, &req); err != nil {
			return nil, err
		}
		return d.Join(ctx, req)
	})
	handle("/NetworkDriver.Leave", func(ctx context.Context, b []byte) (any, error) {
		var req endpointRequest
		if err := decode("Leave", b, &req); err != nil {
			return nil, err
		}
		return struct{}{}, d.Leave(ctx, req)
	})
	// Calls Tenet has no work for. Swarm's AllocateNetwork/FreeNetwork and
	// the Discover* node events come only in swarm mode, which Tenet does
	// not use; external connectivity has nothing to program yet.
	for _, call := range []string{"AllocateNetwork", "FreeNetwork", "DiscoverNew", "DiscoverDelete",
		"ProgramExternalConnectivity", "RevokeExternalConnectivity"} {
		handle("/NetworkDriver."+call, func(ctx context.Context, b []byte) (any, error) {
			var req map[string]any
			if err := decode(call, b, &req); err != nil {
				return nil, err
			}
			return struct{}{}, nil
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown call %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// bounded runs fn and returns its result, or an error once ctx is done:
// Docker must get an answer in bounded time even if the kernel is slow.
func (d *Driver) bounded(ctx context.Context, call string, fn func(context.Context) (any, error)) (any, error) {
	type result struct {
		v   any
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: no answer within %v: %w", call, d.cfg.RequestTimeout, ctx.Err())
	}
}

// decode parses a request body; an empty body is an empty request.
func decode(call string, b []byte, v any) error {
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: malformed request: %w", call, err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, errorResponse{Err: err.Error()})
}

// Serve answers the plugin protocol on the unix socket at path (Docker
// discovers /run/docker/plugins/tenet.sock) until ctx is done. The socket
// is created root-only and removed on return.
func (d *Driver) Serve(ctx context.Context, path string) error {
	return d.serveUnix(ctx, path, 0o755, "docker plugin", d.Handler(ctx))
}

// serveUnix serves h on a root-only unix socket at path (its directory
// made with dirMode) until ctx is done, then removes the socket.
func (d *Driver) serveUnix(ctx context.Context, path string, dirMode os.FileMode, what string, h http.Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return fmt.Errorf("driver: %s socket: %w", what, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("driver: remove stale %s socket: %w", what, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("driver: %s socket: %w", what, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("driver: %s socket: %w", what, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	d.log.Info("serving "+what, "socket", path)
	select {
	case err := <-errc:
		return fmt.Errorf("driver: serve %s: %w", path, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	_ = os.Remove(path)
	return nil
}
