package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readDNS(t *testing.T, path string) (map[string]json.RawMessage, []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	var dns []string
	if v, ok := cfg["dns"]; ok {
		if err := json.Unmarshal(v, &dns); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, dns
}

func TestDockerDNSPutsTheResolverFirstAndKeepsTheRest(t *testing.T) {
	up := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("10.0.0.9:5353"), netip.MustParseAddrPort("10.0.0.2:53")}
	cases := []struct {
		name, before string
		want         []string
		changed      bool
	}{
		{"no file", "", []string{"169.254.53.53", "10.0.0.2"}, true},
		{"empty file", " \n", []string{"169.254.53.53", "10.0.0.2"}, true},
		{"other keys", `{"log-driver":"journald","dns-search":["corp"],"default-address-pools":[{"base":"172.30.0.0/16","size":24}]}`, []string{"169.254.53.53", "10.0.0.2"}, true},
		{"admin's servers kept", `{"dns":["10.9.9.9","10.9.9.8"]}`, []string{"169.254.53.53", "10.9.9.9", "10.9.9.8"}, true},
		{"resolver not first", `{"dns":["10.9.9.9","169.254.53.53"]}`, []string{"169.254.53.53", "10.9.9.9"}, true},
		{"already first", `{"dns":["169.254.53.53","10.9.9.9"]}`, []string{"169.254.53.53", "10.9.9.9"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "docker", "daemon.json")
			if c.name != "no file" {
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, []byte(c.before), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			dns, changed, err := setDockerDNS(path, true, up)
			if err != nil {
				t.Fatal(err)
			}
			if changed != c.changed || !slices.Equal(dns, c.want) {
				t.Fatalf("got %q changed=%v, want %q changed=%v", dns, changed, c.want, c.changed)
			}
			cfg, onDisk := readDNS(t, path)
			if !slices.Equal(onDisk, c.want) {
				t.Errorf("file holds %q, want %q", onDisk, c.want)
			}
			var before map[string]json.RawMessage
			_ = json.Unmarshal([]byte(c.before), &before)
			for k, v := range before {
				if k == "dns" {
					continue
				}
				var a, b any
				json.Unmarshal(v, &a)
				json.Unmarshal(cfg[k], &b)
				if ab, _ := json.Marshal(a); string(ab) != func() string { bb, _ := json.Marshal(b); return string(bb) }() {
					t.Errorf("key %s: %s became %s", k, v, cfg[k])
				}
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			wantMode := os.FileMode(0o640)
			if c.name == "no file" {
				wantMode = 0o644
				if dst, _ := os.Stat(filepath.Dir(path)); dst.Mode().Perm() != 0o755 {
					t.Errorf("made the engine's directory %v, want 0755", dst.Mode().Perm())
				}
			}
			if st.Mode().Perm() != wantMode {
				t.Errorf("mode %v, want %v", st.Mode().Perm(), wantMode)
			}
			if !c.changed {
				if b, _ := os.ReadFile(path); string(b) != c.before {
					t.Errorf("unchanged setting rewrote the file: %q", b)
				}
			}
		})
	}
}

func TestDockerDNSWithNoUsableUpstreamNamesTheResolverAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.json")
	dns, _, err := setDockerDNS(path, true, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("169.254.53.53:53")})
	if err != nil || !slices.Equal(dns, []string{"169.254.53.53"}) {
		t.Fatalf("%q %v", dns, err)
	}
}

func TestDockerDNSUndoTakesOnlyTheResolverOut(t *testing.T) {
	for _, c := range []struct {
		before string
		want   []string
		key    bool
	}{
		{`{"dns":["169.254.53.53","10.9.9.9"],"debug":true}`, []string{"10.9.9.9"}, true},
		{`{"dns":["169.254.53.53"],"debug":true}`, nil, false},
	} {
		path := filepath.Join(t.TempDir(), "daemon.json")
		os.WriteFile(path, []byte(c.before), 0o644)
		if _, changed, err := setDockerDNS(path, false, nil); err != nil || !changed {
			t.Fatalf("%s: changed=%v %v", c.before, changed, err)
		}
		cfg, dns := readDNS(t, path)
		if _, ok := cfg["dns"]; ok != c.key || !slices.Equal(dns, c.want) || string(cfg["debug"]) != "true" {
			t.Errorf("%s became %v", c.before, cfg)
		}
	}
	path := filepath.Join(t.TempDir(), "daemon.json")
	before := `{"dns":["10.9.9.9"]}`
	os.WriteFile(path, []byte(before), 0o644)
	if _, changed, err := setDockerDNS(path, false, nil); err != nil || changed {
		t.Fatalf("undo without the resolver: changed=%v %v", changed, err)
	}
	if b, _ := os.ReadFile(path); string(b) != before {
		t.Errorf("rewrote %q", b)
	}
}

func TestDockerDNSRefusesABadFileAndLeavesIt(t *testing.T) {
	for _, bad := range []string{`{"dns":`, `["169.254.53.53"]`, `null`, `{"dns":"10.9.9.9"}`, `{"dns":[1,2]}`} {
		path := filepath.Join(t.TempDir(), "daemon.json")
		os.WriteFile(path, []byte(bad), 0o644)
		_, _, err := setDockerDNS(path, true, nil)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "left as it was") {
			t.Errorf("%s: err %v", bad, err)
		}
		if b, _ := os.ReadFile(path); string(b) != bad {
			t.Errorf("%s: file became %q", bad, b)
		}
		if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
			t.Errorf("%s: left %d files", bad, len(ents))
		}
	}
}

// fakeProc makes a /proc with one process per entry: comm, then argv.
func fakeProc(t *testing.T, procs ...[]string) string {
	t.Helper()
	root := t.TempDir()
	for i, p := range procs {
		dir := filepath.Join(root, string(rune('1'+i)))
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "comm"), []byte(p[0]+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(p[1:], "\x00")+"\x00"), 0o644)
	}
	return root
}

func TestDockerDNSChecksTheRunningEngine(t *testing.T) {
	path := "/etc/docker/daemon.json"
	fine := fakeProc(t, []string{"dockerd", "/usr/sbin/dockerd", "-H", "fd://", "--dns-search", "corp", "--config-file", path},
		[]string{"sleep", "sleep", "--dns", "1.1.1.1"})
	if err := engineTakesFile(fine, path); err != nil {
		t.Errorf("engine without --dns: %v", err)
	}
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"dockerd", "/usr/sbin/dockerd", "--dns", "10.9.9.9"}, "command line (--dns)"},
		{[]string{"dockerd", "/usr/sbin/dockerd", "--dns=10.9.9.9"}, "command line (--dns=10.9.9.9)"},
		{[]string{"dockerd", "/usr/sbin/dockerd", "--config-file", "/srv/docker.json"}, "--daemon-json /srv/docker.json"},
		{[]string{"dockerd", "/usr/sbin/dockerd", "--config-file=/srv/docker.json"}, "--daemon-json /srv/docker.json"},
	} {
		err := engineTakesFile(fakeProc(t, c.argv), path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err %v, want it to say %q", c.argv, err, c.want)
		}
	}
}

func TestDockerDNSCommand(t *testing.T) {
	old := procRoot
	procRoot = fakeProc(t)
	defer func() { procRoot = old }()
	path := filepath.Join(t.TempDir(), "daemon.json")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 10.0.0.2\n"), 0o644)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli(append([]string{"docker-dns", "--daemon-json", path, "--resolv-conf", resolv}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	// tenetd's own flags are taken, as the unit passes $TENETD_OPTS.
	if code, out, errb := run("--vtep", "198.51.100.11", "--ipam-seeds", "h0,h1"); code != 0 || !strings.Contains(out, `"dns" is now ["169.254.53.53","10.0.0.2"]`) || !strings.Contains(out, "restart docker") {
		t.Fatalf("first run: %d %q %q", code, out, errb)
	}
	if code, out, _ := run(); code != 0 || !strings.Contains(out, "already names 169.254.53.53 first") {
		t.Fatalf("second run: %d %q", code, out)
	}
	if code, out, _ := run("--dns=false"); code != 0 || !strings.Contains(out, `"dns" is now ["10.0.0.2"]`) {
		t.Fatalf("--dns=false: %d %q", code, out)
	}
	os.Remove(path)
	if code, out, errb := run("--dns-upstream", "127.0.0.1"); code != 0 || !strings.Contains(out, `["169.254.53.53"]`) || !strings.Contains(errb, "no upstream DNS server") {
		t.Fatalf("no upstream: %d %q %q", code, out, errb)
	}
	if code, _, _ := run("--bogus"); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
	if code, _, _ := run("stray"); code != 2 {
		t.Errorf("stray argument: exit %d", code)
	}
	os.WriteFile(path, []byte("{"), 0o644)
	if code, _, errb := run(); code != 1 || !strings.Contains(errb, path) {
		t.Errorf("bad file: exit %d %q", code, errb)
	}
}
