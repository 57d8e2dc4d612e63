// Command probeplugin is a do-nothing Docker network plugin for testbed tests.
// It answers the remote NetworkDriver protocol on a unix socket and prints one
// line per call, naming the host it was started on, so a test can tell which
// engine called which plugin. It never touches the network.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	socket := flag.String("socket", "", "unix socket to serve, e.g. /run/docker/plugins/NAME.sock")
	host := flag.String("host", "", "name of the host this runs on, printed with every call")
	flag.Parse()
	if *socket == "" || *host == "" {
		fmt.Fprintln(os.Stderr, "probeplugin: --socket and --host are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *socket, *host); err != nil {
		log.Printf("probeplugin: %v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, socket, host string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return err
	}
	_ = os.Remove(socket) // a stale socket of an earlier run on this host
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	addrs, _ := net.InterfaceAddrs()
	fmt.Printf("probe host=%s socket=%s addrs=%v\n", host, socket, addrs)
	srv := &http.Server{Handler: handler(host), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func handler(host string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var req struct {
			NetworkID  string
			EndpointID string
		}
		_ = json.Unmarshal(body, &req)
		fmt.Printf("call host=%s path=%s network=%s endpoint=%s\n", host, r.URL.Path, req.NetworkID, req.EndpointID)
		var resp any = struct{}{}
		switch r.URL.Path {
		case "/Plugin.Activate":
			resp = map[string][]string{"Implements": {"NetworkDriver"}}
		case "/NetworkDriver.GetCapabilities":
			resp = map[string]string{"Scope": "local", "ConnectivityScope": "local"}
		}
		w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1+json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}
