package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// DefaultSocket is where tenetd serves the admin API.
const DefaultSocket = "/run/tenet/admin.sock"

// maxBody bounds an answer the client reads.
const maxBody = 64 << 20

// Client calls the admin API of the tenetd at Socket.
type Client struct {
	Socket  string
	Timeout time.Duration // per call; zero: 15 s
}

// Error is a call tenetd answered with an error.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return "tenetd: " + e.Msg }

// Unreachable is a call that never got an answer.
type Unreachable struct{ Err error }

func (e *Unreachable) Error() string {
	return fmt.Sprintf("cannot reach tenetd: %v (is it running? tenetctl needs root)", e.Err)
}
func (e *Unreachable) Unwrap() error { return e.Err }

// Do makes one call: method and path, an optional JSON body, decoding the
// answer into out (unless nil). It returns the raw answer too.
func (c Client) Do(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tenetd"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", c.Socket)
	}}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &Unreachable{err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &Unreachable{err}
	}
	if resp.StatusCode >= 300 {
		var e ErrorBody
		if json.Unmarshal(raw, &e) != nil || e.Err == "" {
			e.Err = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return raw, &Error{Status: resp.StatusCode, Msg: e.Err}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("tenetd answered %s %s with something unreadable: %w", method, path, err)
		}
	}
	return raw, nil
}

func (c Client) get(ctx context.Context, path string, out any) error {
	_, err := c.Do(ctx, http.MethodGet, path, nil, out)
	return err
}

// Status, Hosts, Tenants, Networks, Definitions and Endpoints read.
func (c Client) Status(ctx context.Context) (s Status, err error) {
	return s, c.get(ctx, "/v1/status", &s)
}
func (c Client) Hosts(ctx context.Context) (h []Host, err error) {
	return h, c.get(ctx, "/v1/hosts", &h)
}
func (c Client) Tenants(ctx context.Context) (t []Tenant, err error) {
	return t, c.get(ctx, "/v1/tenants", &t)
}
func (c Client) Networks(ctx context.Context) (n []Network, err error) {
	return n, c.get(ctx, "/v1/networks", &n)
}
func (c Client) Definitions(ctx context.Context) (d []Definition, err error) {
	return d, c.get(ctx, "/v1/definitions", &d)
}
func (c Client) Endpoints(ctx context.Context) (e []Endpoint, err error) {
	return e, c.get(ctx, "/v1/endpoints", &e)
}

// EndpointFilter selects endpoints; empty fields select all.
type EndpointFilter struct {
	Tenant  string
	Network string // "tenant/name", or a name in any tenant
	Host    string
}

// Path is the call that lists the endpoints f selects.
func (f EndpointFilter) Path() string {
	q := url.Values{}
	for k, v := range map[string]string{"tenant": f.Tenant, "network": f.Network, "host": f.Host} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if len(q) == 0 {
		return "/v1/endpoints"
	}
	return "/v1/endpoints?" + q.Encode()
}

// Network reads one network with the hosts that have it.
func (c Client) Network(ctx context.Context, tenant, name string) (n NetworkDetail, err error) {
	return n, c.get(ctx, "/v1/networks/"+url.PathEscape(tenant)+"/"+url.PathEscape(name), &n)
}

// Diagnose asks tenetd what is wrong on its host.
func (c Client) Diagnose(ctx context.Context) (d Diagnosis, err error) {
	return d, c.get(ctx, "/v1/diagnose", &d)
}

// CreateTenant, RemoveTenant, CreateNetwork, RemoveNetwork and RemoveHost
// change the cluster.
func (c Client) CreateTenant(ctx context.Context, name string) (d Done, err error) {
	_, err = c.Do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(name), nil, &d)
	return d, err
}
func (c Client) RemoveTenant(ctx context.Context, name string) (d Done, err error) {
	_, err = c.Do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(name), nil, &d)
	return d, err
}
func (c Client) CreateNetwork(ctx context.Context, def Definition) (d Done, err error) {
	_, err = c.Do(ctx, http.MethodPost, "/v1/definitions", def, &d)
	return d, err
}
func (c Client) RemoveNetwork(ctx context.Context, tenant, name string) (d Done, err error) {
	_, err = c.Do(ctx, http.MethodDelete, "/v1/definitions/"+url.PathEscape(tenant)+"/"+url.PathEscape(name), nil, &d)
	return d, err
}
func (c Client) RemoveHost(ctx context.Context, name string) (d Done, err error) {
	_, err = c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/remove", nil, &d)
	return d, err
}
