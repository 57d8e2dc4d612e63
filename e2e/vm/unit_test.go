package vm

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests need neither root nor VMs, except the reap test (root).

func TestImageKeyChangesWithEveryInput(t *testing.T) {
	base := imageKey("bookworm", DefaultMirror, []byte("script"), []byte("pkgs"))
	if base != imageKey("bookworm", DefaultMirror, []byte("script"), []byte("pkgs")) {
		t.Fatal("the key of the same inputs differs")
	}
	for name, k := range map[string]string{
		"release":  imageKey("trixie", DefaultMirror, []byte("script"), []byte("pkgs")),
		"mirror":   imageKey("bookworm", "http://other/debian", []byte("script"), []byte("pkgs")),
		"script":   imageKey("bookworm", DefaultMirror, []byte("script2"), []byte("pkgs")),
		"packages": imageKey("bookworm", DefaultMirror, []byte("script"), []byte("pkgs\nvim")),
		// Moving bytes between inputs is a change too.
		"boundary": imageKey("bookworm", DefaultMirror, []byte("scriptp"), []byte("kgs")),
	} {
		if k == base {
			t.Errorf("changing the %s leaves the image key %s", name, k)
		}
	}
	if len(base) != 12 {
		t.Errorf("key %q: want 12 hex digits", base)
	}
}

func TestPackageListNamesWhatTheTestsNeed(t *testing.T) {
	var pkgs []string
	for _, l := range strings.Split(string(packageList), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			pkgs = append(pkgs, l)
		}
	}
	for _, want := range []string{"linux-image-amd64", "openssh-server", "systemd-sysv", "iproute2", "busybox-static"} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("image/packages.txt lacks %s", want)
		}
	}
	// docker.io is installed by build.sh as an admin would, recommends
	// (apparmor) included: never listed here, where they would be skipped.
	if slices.Contains(pkgs, "docker.io") || !strings.Contains(string(buildScript), "-o APT::Install-Recommends=true -o DPkg::Options::=--force-unsafe-io docker.io") {
		t.Error("docker.io must come from build.sh's apt-get install, not the package list")
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, o := range []struct {
		opts Options
		want string
	}{
		{Options{Hosts: 0}, "Hosts"},
		{Options{Hosts: MaxHosts + 1}, "Hosts"},
		{Options{Hosts: 1, Release: "sid"}, `release "sid"`},
		{Options{Hosts: 1, MemoryMB: 100}, "MemoryMB"},
	} {
		if err := o.opts.Validate(); err == nil || !strings.Contains(err.Error(), o.want) {
			t.Errorf("%+v: err %v, want one naming %s", o.opts, err, o.want)
		}
	}
	if err := (Options{Hosts: 3, Release: "trixie"}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestRunNamesFitTapNames(t *testing.T) {
	for range 150 {
		r := newRunName()
		if !runPattern.MatchString(r) {
			t.Fatalf("run %q does not match %v", r, runPattern)
		}
		if tap := r + "h7"; len(tap) > 15 {
			t.Fatalf("tap name %q is over the kernel's 15 bytes", tap)
		}
	}
	for _, bad := range []string{"", "vm", "tb1234560", "vm12345z1", "vm1234561/../x"} {
		if runPattern.MatchString(bad) {
			t.Errorf("run pattern accepts %q", bad)
		}
	}
}

func TestProbeAccel(t *testing.T) {
	sys := t.TempDir()
	dev := filepath.Join(t.TempDir(), "kvm")
	if a := probeAccel(sys, dev); a.KVM || !strings.Contains(a.Reason, "TCG") {
		t.Errorf("no module: %+v, want TCG", a)
	}
	if err := os.Mkdir(filepath.Join(sys, "kvm_pvm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if a := probeAccel(sys, dev); a.KVM || !strings.Contains(a.Reason, "kvm_pvm") {
		t.Errorf("kvm_pvm only: %+v, want TCG naming kvm_pvm", a)
	}
	if err := os.Mkdir(filepath.Join(sys, "kvm_amd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if a := probeAccel(sys, dev); a.KVM {
		t.Errorf("kvm_amd but no %s: %+v, want TCG", dev, a)
	}
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if a := probeAccel(sys, dev); !a.KVM {
		t.Errorf("kvm_amd and %s: %+v, want KVM", dev, a)
	}
}

func TestQEMUArgs(t *testing.T) {
	img := &Image{Kernel: "/c/vmlinuz", Initrd: "/c/initrd.img"}
	v := vmSpec{Name: "h2", Index: 2, Addr: netip.MustParsePrefix("203.0.113.12/24"), Tap: "vm0000001h2",
		Overlay: "/r/h2.qcow2", Console: "/r/h2.console.log", MemoryMB: 1024}
	tcg := strings.Join(qemuArgs(img, Accel{}, v), " ")
	for _, want := range []string{
		"-accel tcg,tb-size=256 -cpu max -smp 1", "-m 1024", "-kernel /c/vmlinuz -initrd /c/initrd.img",
		"tenet.host=h2 tenet.addr=203.0.113.12/24", "file=/r/h2.qcow2,if=virtio,format=qcow2",
		"ifname=vm0000001h2,script=no", "mac=52:54:00:71:00:03", "-serial file:/r/h2.console.log",
	} {
		if !strings.Contains(tcg, want) {
			t.Errorf("qemu args lack %q:\n%s", want, tcg)
		}
	}
	if kvm := strings.Join(qemuArgs(img, Accel{KVM: true}, v), " "); !strings.Contains(kvm, "-accel kvm -cpu host") || strings.Contains(kvm, "tcg") {
		t.Errorf("KVM args: %s", kvm)
	}
}

func TestShellQuoteSurvivesTheRemoteShell(t *testing.T) {
	argv := []string{"printf", "%s|", "plain", "two words", "it's", `$HOME`, "", "a;b", `back\slash`, "*"}
	out, err := exec.Command("sh", "-c", shellQuote(argv)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "plain|two words|it's|$HOME||a;b|back\\slash|*|"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

// TestReapKillsOnlyRecordedProcesses makes a run as a killed test leaves it
// (a namespace, a directory, a ledger naming a dead owner and a running
// "QEMU"), plus a ledger entry whose PID is alive but whose start time is
// another process's: Reap ends the first, spares the second, and leaves
// nothing of the run.
func TestReapKillsOnlyRecordedProcesses(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (creates a network namespace); not in -short mode")
	}
	base := t.TempDir()
	run := newRunName()
	start := func() (*exec.Cmd, proc) {
		cmd := exec.Command("sleep", "600")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		p, err := procOf(cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return cmd, p
	}
	victim, vp := start()
	bystander, bp := start()
	exited := make(chan struct{})
	go func() { _ = victim.Wait(); close(exited) }()
	owner := exec.Command("true")
	if err := owner.Run(); err != nil {
		t.Fatal(err)
	}
	ns := "tenet-" + run
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if err := os.MkdirAll(filepath.Join(base, run), 0o755); err != nil {
		t.Fatal(err)
	}
	l := ledger{Run: run, Owner: proc{PID: owner.Process.Pid, Start: 1}, Netns: ns, VMs: []vmEntry{
		{Name: "h0", QEMU: vp},
		{Name: "h1", QEMU: proc{PID: bp.PID, Start: bp.Start + 1}}, // PID reused by someone else
	}}
	if err := l.save(base); err != nil {
		t.Fatal(err)
	}
	if leaks := Leaks(base, run); len(leaks) != 2 {
		t.Errorf("before reap, Leaks = %q; want the namespace and the directory", leaks)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reaped, err := Reap(ctx, base, t.Logf)
	if err != nil || !slices.Equal(reaped, []string{run}) {
		t.Fatalf("Reap = %v, %v; want [%s]", reaped, err, run)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the recorded process still runs")
	}
	if !bp.alive() {
		t.Error("a process whose PID matched but start time did not was killed")
	}
	_ = bystander
	if leaks := Leaks(base, run); len(leaks) > 0 {
		t.Errorf("after reap: %q", leaks)
	}
}
