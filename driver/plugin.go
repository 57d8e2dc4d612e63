package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tenet-net/tenet/internal/unixhttp"
	"github.com/tenet-net/tenet/ipam"
)

// PluginName is the name Docker knows the driver by: -d tenet.
const PluginName = "tenet"

const maxRequestBody = 1 << 20

// Handler returns the HTTP handler of the plugin protocol. Every call is
// decoded, answered within Config.RequestTimeout, and every failure is a
// JSON {"Err": "..."} saying what was wrong; nothing panics on bad input.
// Failed calls are logged at most a few times a second.
func (d *Driver) Handler(ctx context.Context) http.Handler {
	failed := &unixhttp.RateLog{Logger: d.log, Level: slog.LevelWarn, Burst: 10}
	mux := http.NewServeMux()
	handle := func(path string, fn func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
			if err == nil && len(body) > maxRequestBody {
				err = fmt.Errorf("request body over %d bytes", maxRequestBody)
			}
			if err != nil {
				failed.Log(r.Context(), "plugin call failed", "call", path, "err", err)
				writeError(w, http.StatusBadRequest, fmt.Errorf("%s: %w", path, err))
				return
			}
			cctx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
			defer cancel()
			start := time.Now()
			resp, err := fn(cctx, body)
			took := time.Since(start)
			d.log.Debug("plugin call", "call", path, "took", took)
			if d.cfg.ObserveCall != nil {
				d.cfg.ObserveCall(path[1:], took, err)
			}
			if err != nil {
				failed.Log(r.Context(), "plugin call failed", "call", path, "err", err)
				writeError(w, http.StatusInternalServerError, err)
				return
			}
			writeJSON(w, http.StatusOK, resp)
		})
	}
	call := func(path string, req func() any, fn func(ctx context.Context, req any) (any, error)) {
		handle(path, func(ctx context.Context, b []byte) (any, error) {
			v := req()
			if err := decode(path, b, v); err != nil {
				return nil, err
			}
			return fn(ctx, v)
		})
	}
	handle("/Plugin.Activate", func(context.Context, []byte) (any, error) {
		return map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}}, nil
	})
	handle("/IpamDriver.GetCapabilities", func(context.Context, []byte) (any, error) {
		// No MAC from Docker: it would be random, and a restarted
		// container would come back with a new one behind its peers' ARP
		// caches; the core derives it from the address instead. The
		// replay at Docker's start rebuilds pool references.
		return map[string]bool{"RequiresMACAddress": false, "RequiresRequestReplay": true}, nil
	})
	handle("/IpamDriver.GetDefaultAddressSpaces", func(context.Context, []byte) (any, error) {
		return map[string]string{"LocalDefaultAddressSpace": ipam.LocalSpace, "GlobalDefaultAddressSpace": ipam.GlobalSpace}, nil
	})
	call("/IpamDriver.RequestPool", func() any { return &requestPoolRequest{} }, func(ctx context.Context, r any) (any, error) {
		return d.RequestPool(ctx, *r.(*requestPoolRequest))
	})
	call("/IpamDriver.ReleasePool", func() any { return &releasePoolRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.ReleasePool(ctx, *r.(*releasePoolRequest))
	})
	call("/IpamDriver.RequestAddress", func() any { return &requestAddressRequest{} }, func(ctx context.Context, r any) (any, error) {
		return d.RequestAddress(ctx, *r.(*requestAddressRequest))
	})
	call("/IpamDriver.ReleaseAddress", func() any { return &releaseAddressRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.ReleaseAddress(ctx, *r.(*releaseAddressRequest))
	})
	handle("/NetworkDriver.GetCapabilities", func(context.Context, []byte) (any, error) {
		// Docker 20.10 refuses Scope "global" outside swarm.
		return capabilitiesResponse{Scope: "local", ConnectivityScope: "global"}, nil
	})
	call("/NetworkDriver.CreateNetwork", func() any { return &createNetworkRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.CreateNetwork(ctx, *r.(*createNetworkRequest))
	})
	call("/NetworkDriver.DeleteNetwork", func() any { return &networkRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.DeleteNetwork(ctx, *r.(*networkRequest))
	})
	call("/NetworkDriver.CreateEndpoint", func() any { return &createEndpointRequest{} }, func(ctx context.Context, r any) (any, error) {
		return d.CreateEndpoint(ctx, *r.(*createEndpointRequest))
	})
	call("/NetworkDriver.EndpointOperInfo", func() any { return &endpointRequest{} }, func(ctx context.Context, r any) (any, error) {
		v, err := d.EndpointInfo(*r.(*endpointRequest))
		return infoResponse{Value: v}, err
	})
	call("/NetworkDriver.DeleteEndpoint", func() any { return &endpointRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.DeleteEndpoint(ctx, *r.(*endpointRequest))
	})
	call("/NetworkDriver.Join", func() any { return &joinRequest{} }, func(ctx context.Context, r any) (any, error) {
		return d.Join(ctx, *r.(*joinRequest))
	})
	call("/NetworkDriver.Leave", func() any { return &endpointRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.Leave(ctx, *r.(*endpointRequest))
	})
	call("/NetworkDriver.ProgramExternalConnectivity", func() any { return &externalConnectivityRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.ProgramExternalConnectivity(ctx, *r.(*externalConnectivityRequest))
	})
	call("/NetworkDriver.RevokeExternalConnectivity", func() any { return &externalConnectivityRequest{} }, func(ctx context.Context, r any) (any, error) {
		return struct{}{}, d.RevokeExternalConnectivity(ctx, *r.(*externalConnectivityRequest))
	})
	// Calls Tenet has no work for. Swarm's AllocateNetwork/FreeNetwork and
	// the Discover* node events come only in swarm mode, which Tenet does
	// not use.
	for _, name := range []string{"AllocateNetwork", "FreeNetwork", "DiscoverNew", "DiscoverDelete"} {
		call("/NetworkDriver."+name, func() any { return &map[string]any{} }, func(context.Context, any) (any, error) {
			return struct{}{}, nil
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		failed.Log(r.Context(), "unknown plugin call", "call", r.Method+" "+r.URL.Path)
		writeError(w, http.StatusNotFound, fmt.Errorf("unknown call %s %s", r.Method, r.URL.Path))
	})
	return mux
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
// is root-only and removed on return.
func (d *Driver) Serve(ctx context.Context, path string) error {
	return unixhttp.Serve(ctx, unixhttp.Config{Path: path, Name: "docker plugin", Logger: d.log}, d.Handler(ctx))
}
