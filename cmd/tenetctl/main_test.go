package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeTenetd answers the admin API on a unix socket with canned answers
// and records what it was asked.
type fakeTenetd struct {
	mu    sync.Mutex
	calls []string
	body  []string
	// answers, by path: a status code and a body.
	answers map[string]answer
}

type answer struct {
	status int
	body   string
}

func (f *fakeTenetd) serve(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
		f.body = append(f.body, string(b))
		a, ok := f.answers[r.URL.Path]
		f.mu.Unlock()
		switch {
		case ok:
			w.WriteHeader(a.status)
			w.Write([]byte(a.body))
		case r.URL.Path == "/v1/tenants/taken":
			w.WriteHeader(409)
			w.Write([]byte(`{"err":"create tenant taken: already exists"}`))
		case r.URL.Path == "/v1/networks":
			w.Write([]byte(`[{"tenant":"acme","name":"web","vni":5,"subnet":"10.1.0.0/24","docker_name":"acme-web","hosts":["h0"]}]`))
		case r.Method == http.MethodGet:
			w.Write([]byte(`[]`))
		default:
			w.Write([]byte(`{"created":"x"}`))
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func tenetctl(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpExitsZeroAndShowsOnlyTheCommandsOwn(t *testing.T) {
	for _, tt := range []struct {
		args      []string
		want      []string
		forbidden []string
	}{
		{[]string{"--help"}, []string{"network create TENANT/NAME", "host remove NAME"}, nil},
		{[]string{"help"}, []string{"tenant create NAME"}, nil},
		{[]string{"host", "--help"}, []string{"host ls", "host remove NAME"}, []string{"tenant"}},
		{[]string{"tenant", "rm", "--help"}, []string{"tenetctl tenant rm NAME", "-json"}, []string{"-subnet", "-mtu", "-internal", "-vni"}},
		{[]string{"network", "create", "--help"}, []string{"-subnet", "-vni", "-internal", "-mtu"}, nil},
		{[]string{"status", "-h"}, []string{"tenetctl status"}, []string{"-subnet"}},
		{[]string{"version", "--help"}, []string{"usage: tenetctl version"}, nil},
	} {
		code, out, errOut := tenetctl(tt.args...)
		if code != 0 || errOut != "" {
			t.Errorf("%v: exit %d, stderr %q", tt.args, code, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: help lacks %q:\n%s", tt.args, w, out)
			}
		}
		for _, f := range tt.forbidden {
			if strings.Contains(out, f) {
				t.Errorf("%v: help shows %q, which is not this command's:\n%s", tt.args, f, out)
			}
		}
	}
}

func TestBadUsageExitsTwo(t *testing.T) {
	for _, args := range [][]string{
		{}, {"bogus"}, {"host"}, {"host", "frob"}, {"tenant", "create"}, {"tenant", "create", "a", "b"},
		{"network", "create", "acme/web"}, {"network", "create", "acme", "--subnet", "10.1.0.0/24"},
		{"network", "ls", "--nope"}, {"network", "create", "acme/web", "--subnet", "10.1.0.0/24", "--vni", "99999999"},
	} {
		if code, _, errOut := tenetctl(args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errOut)
		}
	}
}

func TestFlagsGoAnywhereAndRefusalsExitOne(t *testing.T) {
	f := &fakeTenetd{}
	sock := f.serve(t)
	for _, args := range [][]string{
		{"--socket", sock, "network", "create", "acme/web", "--subnet", "10.1.0.0/24", "--internal"},
		{"network", "create", "--subnet", "10.1.0.0/24", "acme/web", "--internal", "--socket", sock},
		{"network", "create", "--socket", sock, "--internal", "acme/web", "--subnet=10.1.0.0/24"},
	} {
		code, out, errOut := tenetctl(args...)
		if code != 0 || !strings.Contains(out, "network create acme/web: done") {
			t.Fatalf("%v: exit %d %q %q", args, code, out, errOut)
		}
	}
	f.mu.Lock()
	for _, b := range f.body {
		var d map[string]any
		if err := json.Unmarshal([]byte(b), &d); err != nil || d["subnet"] != "10.1.0.0/24" || d["internal"] != true || d["name"] != "web" {
			t.Errorf("request body %s", b)
		}
	}
	f.mu.Unlock()
	code, _, errOut := tenetctl("--socket", sock, "tenant", "create", "taken")
	if code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("refusal: exit %d %q", code, errOut)
	}
	f.mu.Lock()
	f.answers = map[string]answer{
		"/v1/networks/acme/web":  {200, `{"tenant":"acme","name":"web","vni":5,"subnet":"10.1.0.0/24","docker_name":"acme-web","hosts":["h0"]}`},
		"/v1/networks/acme/nope": {404, `{"err":"network acme/nope: no such network known here"}`},
	}
	f.mu.Unlock()
	code, out, _ := tenetctl("--socket", sock, "network", "inspect", "acme/web", "--json")
	if code != 0 || !strings.Contains(out, `"docker_name":"acme-web"`) {
		t.Errorf("inspect --json: %d %s", code, out)
	}
	if code, _, errOut := tenetctl("--socket", sock, "network", "inspect", "acme/nope"); code != 1 || !strings.Contains(errOut, "no such network") {
		t.Errorf("inspect of a missing network: %d %s", code, errOut)
	}
	if code, _, errOut := tenetctl("--socket", filepath.Join(t.TempDir(), "none.sock"), "status"); code != 1 || !strings.Contains(errOut, "cannot reach tenetd") {
		t.Errorf("no tenetd: %d %s", code, errOut)
	}
}

func TestEndpointLsFiltersAndShowsContainers(t *testing.T) {
	f := &fakeTenetd{answers: map[string]answer{"/v1/endpoints": {200, `[
		{"id":"6f12fcbaa23c0000","name":"web1","aliases":["www"],"tenant":"acme","network":"acme/web","ip":"10.1.0.2","mac":"02:42:95:d4:d0:46","host":"h0","vtep":"198.51.100.10","state":"up"},
		{"id":"7a5f0f8078c7","tenant":"acme","network":"acme/web","ip":"10.1.0.128","mac":"02:42:d2:ac:a9:8b","host":"h2","vtep":"198.51.100.12","state":"host-down"}]`}}}
	sock := f.serve(t)
	code, out, errOut := tenetctl("--socket", sock, "endpoint", "ls", "--tenant", "acme", "--network", "web", "--host", "h0")
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	for _, want := range []string{"CONTAINER  HOST  TENANT  NETWORK  IP", "web1       h0    acme    web      10.1.0.2", "-          h2    acme    web      10.1.0.128  02:42:d2:ac:a9:8b  host-down  7a5f0f8078c7"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	f.mu.Lock()
	last := f.calls[len(f.calls)-1]
	f.mu.Unlock()
	if last != "GET /v1/endpoints?host=h0&network=web&tenant=acme" {
		t.Errorf("asked %s", last)
	}
	tenetctl("--socket", sock, "endpoint", "ls")
	f.mu.Lock()
	last = f.calls[len(f.calls)-1]
	f.mu.Unlock()
	if last != "GET /v1/endpoints" {
		t.Errorf("without filters, asked %s (flags of an earlier run stuck)", last)
	}
	if code, out, _ := tenetctl("--socket", sock, "endpoint", "ls", "--json"); code != 0 || !strings.Contains(out, `"aliases":["www"]`) {
		t.Errorf("--json: %d %s", code, out)
	}
}

func TestDiagnoseExitsOneWhenSomethingIsWrong(t *testing.T) {
	f := &fakeTenetd{answers: map[string]answer{"/v1/diagnose": {200, `{"host":"h0","findings":[]}`}}}
	sock := f.serve(t)
	if code, out, errOut := tenetctl("--socket", sock, "diagnose"); code != 0 || !strings.Contains(out, "h0: nothing wrong found") {
		t.Errorf("healthy: exit %d %q %q", code, out, errOut)
	}
	f.mu.Lock()
	f.answers["/v1/diagnose"] = answer{200, `{"host":"h0","findings":[{"area":"kernel","problem":"missing",
		"object":"fdb 02:7e:0a:01:00:02 dev vx4097 dst 198.51.100.11","tenant":"acme","network":"acme/web",
		"endpoint":"6d6b0d816a14aaaa","host":"h1","fix":"acme: fdb append 02:7e:0a:01:00:02 dev vx4097 dst 198.51.100.11"}]}`}
	f.mu.Unlock()
	code, out, errOut := tenetctl("--socket", sock, "diagnose")
	if code != 1 || errOut != "" {
		t.Errorf("a finding: exit %d, stderr %q; want 1 and the findings on stdout only", code, errOut)
	}
	for _, want := range []string{"h0: 1 thing wrong", "[kernel] missing: fdb 02:7e:0a:01:00:02 dev vx4097 dst 198.51.100.11",
		"network acme/web, endpoint 6d6b0d816a14, host h1", "fix: acme: fdb append"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if code, out, _ := tenetctl("--socket", sock, "diagnose", "--json"); code != 1 || !strings.Contains(out, `"problem":"missing"`) {
		t.Errorf("--json: exit %d %s", code, out)
	}
	f.mu.Lock()
	f.answers["/v1/diagnose"] = answer{500, `{"err":"diagnose: netlink: boom"}`}
	f.mu.Unlock()
	if code, _, errOut := tenetctl("--socket", sock, "diagnose"); code != 1 || !strings.Contains(errOut, "boom") {
		t.Errorf("a failed diagnosis: exit %d %q", code, errOut)
	}
}

func TestStatusShowsRingConvergenceAndDatapath(t *testing.T) {
	f := &fakeTenetd{answers: map[string]answer{"/v1/status": {200, `{"host":"h2","vtep":"198.51.100.12","hosts_up":2,"hosts_down":1,
		"networks":2,"local_endpoints":1,"endpoints":5,"key_in_use":"39e5d66b","warnings":["host h3 is down"],
		"ring":{"health":"degraded","members":{"alive":2,"down":1},"messages_sent":120,"messages_received":98,"send_errors":0,"dropped":{"ownership":2}},
		"convergence":{"window":"1m0s","samples":12,"p50_ms":1.25,"p99_ms":31.5,"max_ms":40},
		"datapath":{"queued":0,"busy_ms":0}}`}}}
	sock := f.serve(t)
	code, out, _ := tenetctl("--socket", sock, "status")
	if code != 0 {
		t.Fatal(code)
	}
	for _, want := range []string{"ring         degraded: 2 up, 1 down, cluster key 39e5d66b",
		"gossip       120 messages sent, 98 received, 0 send errors, 2 dropped (ownership 2)",
		"convergence  p99 32ms (p50 1.25ms, max 40ms) over 12 changes from other hosts in the last 1m0s",
		"datapath     idle", "warning      host h3 is down"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

func TestNetworkInspectShowsHosts(t *testing.T) {
	f := &fakeTenetd{answers: map[string]answer{
		"/v1/networks/acme/web": {200, `{"tenant":"acme","name":"web","vni":11520630,"subnet":"10.1.0.0/24","gateway":"10.1.0.1","local":true,
			"defined":true,"docker_name":"acme.web","hosts":["h0","h1"],"effective_mtu":1450,"endpoints_known":true,
			"host_endpoints":[{"host":"h0","state":"up","self":true,"endpoints":2},{"host":"h1","state":"up","endpoints":1}]}`},
		"/v1/networks/acme/db": {200, `{"tenant":"acme","name":"db","vni":7,"subnet":"10.2.0.0/24","local":false,"hosts":["h1"],
			"endpoints_known":false,"host_endpoints":[{"host":"h1","state":"up","endpoints":0}]}`},
	}}
	sock := f.serve(t)
	_, out, _ := tenetctl("--socket", sock, "network", "inspect", "acme/web")
	for _, want := range []string{"gateway      10.1.0.1", "mtu          1450 (the underlay's less 50)", "vni          11520630",
		"HOST            STATE  ENDPOINTS", "h0 (this host)  up     2", "h1              up     1"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	_, out, _ = tenetctl("--socket", sock, "network", "inspect", "acme/db")
	if !strings.Contains(out, "h1    up     ?") || !strings.Contains(out, "known on the hosts that have the network") {
		t.Errorf("a network this host lacks:\n%s", out)
	}
}
