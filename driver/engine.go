package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Engine talks to the local Docker engine's API over its unix socket (API
// version 1.41, Docker 20.10 and later).
type Engine struct {
	client *http.Client
}

// NewEngine returns a client of the engine at socket.
func NewEngine(socket string) *Engine {
	return &Engine{client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		}}}}
}

func (e *Engine) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v1.41"+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("docker engine: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("docker engine: %w", err)
	}
	if resp.StatusCode >= 300 {
		var m struct{ Message string }
		if json.Unmarshal(b, &m) != nil || m.Message == "" {
			m.Message = strings.TrimSpace(string(b))
		}
		return resp.StatusCode, fmt.Errorf("docker engine: %s %s: %d %s", method, path, resp.StatusCode, m.Message)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("docker engine: %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// EngineNetwork is a network as the engine lists it.
type EngineNetwork struct {
	ID      string            `json:"Id"`
	Name    string            `json:"Name"`
	Driver  string            `json:"Driver"`
	Options map[string]string `json:"Options"`
	Labels  map[string]string `json:"Labels"`
	IPAM    struct {
		Config []struct {
			Subnet string `json:"Subnet"`
		} `json:"Config"`
	} `json:"IPAM"`
	Containers map[string]json.RawMessage `json:"Containers"`
}

// Networks lists the engine's networks of driver PluginName.
func (e *Engine) Networks(ctx context.Context) ([]EngineNetwork, error) {
	f, _ := json.Marshal(map[string]map[string]bool{"driver": {PluginName: true}})
	var out []EngineNetwork
	_, err := e.do(ctx, http.MethodGet, "/networks?filters="+url.QueryEscape(string(f)), nil, &out)
	return out, err
}

// NetworkByName inspects one network; ok is false if there is none.
func (e *Engine) NetworkByName(ctx context.Context, name string) (n EngineNetwork, ok bool, err error) {
	status, err := e.do(ctx, http.MethodGet, "/networks/"+url.PathEscape(name), nil, &n)
	if status == http.StatusNotFound {
		return n, false, nil
	}
	return n, err == nil, err
}

// CreateNetwork creates a network.
func (e *Engine) CreateNetwork(ctx context.Context, req map[string]any) error {
	_, err := e.do(ctx, http.MethodPost, "/networks/create", req, nil)
	return err
}

// RemoveNetwork removes a network by ID or name; a missing one is not an
// error.
func (e *Engine) RemoveNetwork(ctx context.Context, id string) error {
	status, err := e.do(ctx, http.MethodDelete, "/networks/"+url.PathEscape(id), nil, nil)
	if status == http.StatusNotFound {
		return nil
	}
	return err
}
