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
		f.calls = append(f.calls, r.Method+" "+r.URL.Path)
		f.body = append(f.body, string(b))
		f.mu.Unlock()
		switch {
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
	code, out, _ := tenetctl("--socket", sock, "network", "inspect", "acme/web", "--json")
	if code != 0 || !strings.Contains(out, `"docker_name":"acme-web"`) {
		t.Errorf("inspect --json: %d %s", code, out)
	}
	if code, _, errOut := tenetctl("--socket", sock, "network", "inspect", "acme/nope"); code != 1 || !strings.Contains(errOut, "no network acme/nope") {
		t.Errorf("inspect of a missing network: %d %s", code, errOut)
	}
	if code, _, errOut := tenetctl("--socket", filepath.Join(t.TempDir(), "none.sock"), "status"); code != 1 || !strings.Contains(errOut, "cannot reach tenetd") {
		t.Errorf("no tenetd: %d %s", code, errOut)
	}
}
