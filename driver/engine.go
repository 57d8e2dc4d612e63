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
	stream *http.Client // no overall timeout: the event stream lasts
}

// NewEngine returns a client of the engine at socket.
func NewEngine(socket string) *Engine {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		}}
	return &Engine{client: &http.Client{Timeout: 20 * time.Second, Transport: tr}, stream: &http.Client{Transport: tr}}
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

// EngineContainer is a container as the engine inspects it.
type EngineContainer struct {
	ID              string `json:"Id"`
	Name            string `json:"Name"` // "/name"
	NetworkSettings struct {
		Networks map[string]EngineEndpoint `json:"Networks"` // by network name
	} `json:"NetworkSettings"`
}

// EngineEndpoint is a container's endpoint on one network.
type EngineEndpoint struct {
	NetworkID  string   `json:"NetworkID"`
	EndpointID string   `json:"EndpointID"`
	Aliases    []string `json:"Aliases"`
}

// Container inspects a container by ID or name; ok is false if there is
// none.
func (e *Engine) Container(ctx context.Context, id string) (c EngineContainer, ok bool, err error) {
	status, err := e.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", nil, &c)
	if status == http.StatusNotFound {
		return c, false, nil
	}
	return c, err == nil, err
}

// EngineEvent is one event of the engine's stream.
type EngineEvent struct {
	Type   string `json:"Type"`
	Action string `json:"Action"`
	Actor  struct {
		ID         string            `json:"ID"`
		Attributes map[string]string `json:"Attributes"`
	} `json:"Actor"`
}

// Events follows the engine's events of the given types and actions,
// calling fn for each, until ctx is done (nil) or the stream breaks (its
// error). connected is called once the engine has accepted the request.
func (e *Engine) Events(ctx context.Context, types, actions []string, connected func(), fn func(EngineEvent)) error {
	f, _ := json.Marshal(map[string][]string{"type": types, "event": actions})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/v1.41/events?filters="+url.QueryEscape(string(f)), nil)
	if err != nil {
		return err
	}
	resp, err := e.stream.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("docker engine: events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("docker engine: events: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	connected()
	dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<40))
	for {
		var ev EngineEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("docker engine: events: %w", err)
		}
		fn(ev)
	}
}
