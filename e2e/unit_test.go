package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests need no root: they cover the testbed's pure parts.

func TestRunNamesMatchPatternAndStayShort(t *testing.T) {
	seen := map[string]bool{}
	for range 150 {
		r := newRunName()
		if !runPattern.MatchString(r) {
			t.Fatalf("run name %q does not match %v", r, runPattern)
		}
		if veth := r + "h49"; len(veth) > 15 {
			t.Fatalf("veth name %q is %d bytes, over the kernel's 15", veth, len(veth))
		}
		seen[r] = true
	}
	if len(seen) != 100 {
		t.Errorf("%d distinct run names in 150, want 100 (sequence wraps at 100)", len(seen))
	}
	for _, bad := range []string{"", "tb", "t-abc", "tbXYZ0001", "tb0000001/../x", "tenet-t-1"} {
		if runPattern.MatchString(bad) {
			t.Errorf("run pattern accepts %q", bad)
		}
	}
}

func TestOptionsValidateNamesTheField(t *testing.T) {
	for _, n := range []int{0, -1, MaxHosts + 1} {
		err := Options{Hosts: n}.Validate()
		if err == nil || !strings.Contains(err.Error(), "Hosts") {
			t.Errorf("Hosts %d: err %v, want one naming Hosts", n, err)
		}
	}
	if err := (Options{Hosts: 3}).Validate(); err != nil {
		t.Errorf("Hosts 3: %v", err)
	}
}

func TestLedgerRoundTripAndStaleness(t *testing.T) {
	base := t.TempDir()
	self, err := procOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	l := ledger{Run: "tb00000a1", Owner: self, Created: time.Now().UTC().Truncate(time.Second),
		Namespaces: []string{"tenet-tb00000a1-u"}, Cgroup: "tenet-tb00000a1",
		Hosts: []hostRecord{{Name: "h0", Underlay: "198.51.100.10/24", Holder: proc{PID: 1, Start: 1}}}}
	if err := os.MkdirAll(filepath.Join(base, l.Run), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.save(base); err != nil {
		t.Fatal(err)
	}
	got, err := readLedger(base, l.Run)
	if err != nil {
		t.Fatal(err)
	}
	if got.Run != l.Run || got.Owner != l.Owner || got.Hosts[0].Underlay != "198.51.100.10/24" || !got.Created.Equal(l.Created) {
		t.Errorf("round trip: got %+v, want %+v", got, l)
	}
	if got.stale() {
		t.Error("a run owned by this live process is stale")
	}
	got.Owner.Start++ // same PID, other process: PID reuse
	if !got.stale() {
		t.Error("a run whose owner PID was reused is not stale")
	}
	got.Persistent = true
	if got.stale() {
		t.Error("a persistent run is stale")
	}

	// A directory without a ledger is debris, listed as stale, once it is
	// older than a run takes to write its ledger.
	debris := filepath.Join(base, "tb00000b2")
	if err := os.MkdirAll(debris, 0o755); err != nil {
		t.Fatal(err)
	}
	if runs, _ := Runs(base); len(runs) != 2 || runs[1].Stale {
		t.Errorf("a run directory made just now is stale: %+v", runs)
	}
	old := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(debris, old, old); err != nil {
		t.Fatal(err)
	}
	runs, err := Runs(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Stale || !runs[1].Stale {
		t.Errorf("Runs = %+v, want tb00000a1 live and tb00000b2 stale", runs)
	}
}

func TestLedgerKeepsDaemonArgvAndTheLastRecordWins(t *testing.T) {
	base := t.TempDir()
	l := ledger{Run: "tb00000c3", Hosts: []hostRecord{{Name: "h0", Underlay: "198.51.100.10/24", Daemons: []daemonRecord{
		{Name: "tenetd", Proc: proc{PID: 10, Start: 1}, Argv: []string{"tenetd", "--name", "h0"}},
		{Name: "dockerd", Proc: proc{PID: 11, Start: 1}, Argv: []string{"dockerd", "--live-restore"}},
		{Name: "tenetd", Proc: proc{PID: 12, Start: 2}, Argv: []string{"tenetd", "--name", "h0"}},
	}}}}
	if err := os.MkdirAll(filepath.Join(base, l.Run), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.save(base); err != nil {
		t.Fatal(err)
	}
	got, err := readLedger(base, l.Run)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := got.Hosts[0].lastDaemon("tenetd")
	if !ok || d.Proc.PID != 12 || strings.Join(d.Argv, " ") != "tenetd --name h0" {
		t.Errorf("last tenetd record: %+v, %t; want pid 12 with its argv", d, ok)
	}
	if _, ok := got.Hosts[0].lastDaemon("probe"); ok {
		t.Error("a daemon never started has a record")
	}
	tb, err := Attach(base, l.Run, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Tenetds) != 1 || tb.Tenetds[0].Daemon.PID() != 12 || tb.Tenetds[0].argv[0] != "tenetd" {
		t.Errorf("Attach rebuilt tenetds %+v, want the one with pid 12", tb.Tenetds)
	}
	if _, err := tb.HostIndex("h3"); err == nil || !strings.Contains(err.Error(), "hosts: h0") {
		t.Errorf("HostIndex(h3): %v, want an error listing h0", err)
	}
}

func TestProcAliveRejectsDeadAndReusedPIDs(t *testing.T) {
	self, err := procOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !self.alive() {
		t.Error("this process is not alive")
	}
	if (proc{PID: self.PID, Start: self.Start + 1}).alive() {
		t.Error("a reused PID counts as alive")
	}
	if (proc{}).alive() {
		t.Error("PID 0 counts as alive")
	}
}

func TestHolderScriptMountsEveryPrivateDir(t *testing.T) {
	s := holderScript("/var/tmp/x/h0")
	for _, want := range []string{
		"mount -t sysfs sysfs /sys",
		"mount --move '/var/tmp/x/h0/mnt/cgroup-hold' /sys/fs/cgroup",
		"mount --bind '/var/tmp/x/h0/mnt/run-docker' /run/docker",
		"mount --bind '/var/tmp/x/h0/mnt/etc-docker' /etc/docker",
		"echo ready\nexec sleep infinity",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("holder script lacks %q:\n%s", want, s)
		}
	}
	if strings.Index(s, "--rbind /sys/fs/cgroup") > strings.Index(s, "-t sysfs") {
		t.Error("cgroups must be moved aside before sysfs is mounted over them")
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", "/plain": "/plain", `/t\011x`: "/t\tx"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSharedLibsFindsLoader(t *testing.T) {
	libs, err := sharedLibs("/bin/sh")
	if err != nil {
		t.Skipf("no dynamic /bin/sh here: %v", err)
	}
	found := false
	for _, l := range libs {
		if !strings.HasPrefix(l, "/") {
			t.Errorf("relative library path %q", l)
		}
		if strings.Contains(l, "ld-linux") {
			found = true
		}
	}
	if !found {
		t.Errorf("no dynamic loader in %v", libs)
	}
}
