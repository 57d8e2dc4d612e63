package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// Underlay addressing: TEST-NET-3, only inside the run's namespace. The
// bridge has .1 (where ssh comes from); VM hN has .(10+N).
var (
	underlayNet = netip.MustParsePrefix("203.0.113.0/24")
	bridgeAddr  = netip.MustParseAddr("203.0.113.1")
	// WireGuardRotate is how often each VM's tenetd replaces the
	// preshared keys of encrypted networks (--wireguard-rotate).
	WireGuardRotate = 20 * time.Second
	// EgressTarget is the testbed bridge's address: a server outside
	// the cluster, on the underlay network, that InstallTenet lets
	// tenants reach (--allow-egress).
	EgressTarget  = bridgeAddr
	firstHostAddr = netip.MustParseAddr("203.0.113.10")
)

// MaxHosts bounds a run: each VM takes about 1 GiB of this machine's memory.
const MaxHosts = 8

// DockerSocket is where Debian's docker.service serves the engine's API.
const DockerSocket = "/var/run/docker.sock"

// Options configures Up.
type Options struct {
	Hosts    int    // number of VMs, 1 to MaxHosts
	Release  string // a Debian release of Releases; default bookworm
	MemoryMB int    // per VM; default 1024
	// BootLimit bounds the wait for every VM to answer over ssh; default 15
	// minutes under TCG (75 s on an idle 2-core machine, over 6 minutes on
	// a busy one), 2 with KVM.
	BootLimit time.Duration
	BaseDir   string // default DefaultBaseDir
	CacheDir  string // default DefaultCacheDir
	Mirror    string // default TENET_VM_MIRROR, else DefaultMirror
	Logf      func(format string, a ...any)
}

// Validate names the first field that is out of range.
func (o Options) Validate() error {
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		return fmt.Errorf("vm: Hosts %d: must be 1-%d", o.Hosts, MaxHosts)
	}
	if o.Release != "" {
		if err := validRelease(o.Release); err != nil {
			return err
		}
	}
	if o.MemoryMB != 0 && (o.MemoryMB < 512 || o.MemoryMB > 8192) {
		return fmt.Errorf("vm: MemoryMB %d: must be 512-8192 (Docker needs about 512)", o.MemoryMB)
	}
	return nil
}

// Testbed is one run: a namespace with a bridge and VMs on it, each running
// Debian's docker.service with the test image imported.
type Testbed struct {
	Run     string
	Dir     string
	Image   *Image
	Accel   Accel
	Hosts   []*Host
	Engines []*e2e.Engine // each VM's docker.service, at DockerSocket

	base      string
	logf      func(string, ...any)
	imageHold *os.File

	mu  sync.Mutex // guards led
	led ledger
}

var (
	processTag  = newProcessTag()
	runSequence atomic.Int32
)

func newProcessTag() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// ProcessRunPrefix is the prefix of every run this process makes.
func ProcessRunPrefix() string { return "vm" + processTag }

func newRunName() string {
	return fmt.Sprintf("%s%d", ProcessRunPrefix(), runSequence.Add(1)%100)
}

// Up boots a testbed. On error, whatever it created is removed again.
func Up(ctx context.Context, opts Options) (tb *Testbed, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("vm: needs root: creates a network namespace, taps and QEMU VMs")
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "ssh", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("vm: %s not found (apt-get install qemu-system-x86 qemu-utils openssh-client): %w", tool, err)
		}
	}
	if opts.Release == "" {
		opts.Release = "bookworm"
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 1024
	}
	if opts.BaseDir == "" {
		opts.BaseDir = DefaultBaseDir
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.Mirror == "" {
		opts.Mirror = os.Getenv("TENET_VM_MIRROR")
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	accel := ProbeAccel()
	if opts.BootLimit == 0 {
		opts.BootLimit = 15 * time.Minute
		if accel.KVM {
			opts.BootLimit = 2 * time.Minute
		}
	}
	img, err := EnsureImage(ctx, opts.CacheDir, opts.Release, opts.Mirror, logf)
	if err != nil {
		return nil, err
	}
	hold, err := img.hold()
	if err != nil {
		return nil, fmt.Errorf("vm: hold image %s: %w", img.Dir, err)
	}
	run := newRunName()
	tb = &Testbed{Run: run, Dir: filepath.Join(opts.BaseDir, run), Image: img, Accel: accel, base: opts.BaseDir, logf: logf, imageHold: hold}
	owner, err := procOf(os.Getpid())
	if err != nil {
		hold.Close()
		return nil, err
	}
	tb.led = ledger{Run: run, Owner: owner, Created: time.Now().UTC(), Netns: "tenet-" + run, Release: opts.Release, Image: img.Dir}
	if err := os.MkdirAll(tb.Dir, 0o755); err != nil {
		hold.Close()
		return nil, err
	}
	made := tb
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if derr := made.Down(cctx); derr != nil {
				err = errors.Join(err, derr)
			}
			tb = nil
		}
	}()
	if err := tb.saveLedger(); err != nil {
		return nil, err
	}
	logf("run %s: dir %s, %s image %s; %s", run, tb.Dir, opts.Release, img.Dir, accel.Reason)
	if err := tb.makeNetns(ctx); err != nil {
		return nil, err
	}
	for i := range opts.Hosts {
		if err := tb.startVM(ctx, i, opts.MemoryMB); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if err := tb.each(func(h *Host) error { return h.awaitSSH(ctx, opts.BootLimit) }); err != nil {
		return nil, err
	}
	logf("run %s: %d VMs answer over ssh %v after start", run, len(tb.Hosts), time.Since(start).Round(time.Second))
	if err := tb.startEngines(ctx); err != nil {
		return nil, err
	}
	return tb, nil
}

func (tb *Testbed) saveLedger() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.led.save(tb.base)
}

// each runs fn on every host at once and joins the errors.
func (tb *Testbed) each(fn func(h *Host) error) error {
	errs := make([]error, len(tb.Hosts))
	var wg sync.WaitGroup
	for i, h := range tb.Hosts {
		wg.Go(func() { errs[i] = fn(h) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ip runs one iproute2 command in the root namespace, addressing only the
// run's namespace (with -n or netns add).
func (tb *Testbed) ip(ctx context.Context, args ...string) error {
	tb.logf("ip %s", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeNetns creates the run's namespace with its bridge, which has the
// address ssh comes from.
func (tb *Testbed) makeNetns(ctx context.Context) error {
	ns := tb.led.Netns
	for _, s := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "br0", "type", "bridge"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(bridgeAddr, underlayNet.Bits()).String(), "dev", "br0"},
		{"-n", ns, "link", "set", "br0", "up"},
	} {
		if err := tb.ip(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// startVM records VM i in the ledger, makes its disk overlay and tap, and
// starts QEMU in the run's namespace.
func (tb *Testbed) startVM(ctx context.Context, i, memoryMB int) error {
	name := fmt.Sprintf("h%d", i)
	addr := firstHostAddr
	for range i {
		addr = addr.Next()
	}
	pfx := netip.PrefixFrom(addr, underlayNet.Bits())
	tb.mu.Lock()
	tb.led.VMs = append(tb.led.VMs, vmEntry{Name: name, Addr: pfx.String()})
	tb.mu.Unlock()
	if err := tb.saveLedger(); err != nil {
		return err
	}
	spec := vmSpec{Name: name, Index: i, Addr: pfx, Tap: tb.Run + name, MemoryMB: memoryMB,
		Overlay: filepath.Join(tb.Dir, name+".qcow2"), Console: filepath.Join(tb.Dir, name+".console.log")}
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", tb.Image.Rootfs, spec.Overlay).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: qemu-img create: %w: %s", name, err, out)
	}
	ns := tb.led.Netns
	if err := tb.ip(ctx, "-n", ns, "tuntap", "add", "dev", spec.Tap, "mode", "tap"); err != nil {
		return err
	}
	if err := tb.ip(ctx, "-n", ns, "link", "set", spec.Tap, "master", "br0", "up"); err != nil {
		return err
	}
	logPath := filepath.Join(tb.Dir, name+".qemu.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	// nsenter execs QEMU in place: the PID recorded is QEMU's.
	argv := append([]string{"nsenter", "--net=/run/netns/" + ns, "--"}, qemuArgs(tb.Image, tb.Accel, spec)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session, so a terminal's ^C reaches the test, which tears the
	// VMs down; and killed with the test process should that die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start qemu: %w", name, err)
	}
	p, perr := procOf(cmd.Process.Pid)
	if perr != nil {
		p = proc{PID: cmd.Process.Pid}
	}
	h := &Host{name: name, addr: pfx, netns: ns, key: tb.Image.Key, console: spec.Console, qemu: cmd, exited: make(chan struct{}),
		control: filepath.Join(tb.Dir, name+".ssh")}
	h.onProc = func(p proc) error {
		tb.mu.Lock()
		tb.led.VMs[i].SSH = append(tb.led.VMs[i].SSH, p)
		tb.mu.Unlock()
		return tb.saveLedger()
	}
	go func() {
		_ = cmd.Wait()
		close(h.exited)
	}()
	tb.mu.Lock()
	tb.led.VMs[i].QEMU = p
	tb.mu.Unlock()
	tb.Hosts = append(tb.Hosts, h)
	tb.logf("host %s: qemu pid %d, %s on %s, console %s", name, p.PID, pfx, spec.Tap, spec.Console)
	return tb.saveLedger()
}

// startEngines waits for each VM's docker.service and imports the test image
// (e2e.ImageName) into it.
func (tb *Testbed) startEngines(ctx context.Context) error {
	image := filepath.Join(tb.Dir, "image.tar")
	if err := e2e.BuildImage(image); err != nil {
		return err
	}
	tb.Engines = make([]*e2e.Engine, len(tb.Hosts))
	return tb.each(func(h *Host) error {
		i := indexOf(tb.Hosts, h)
		e := e2e.SystemEngine(h, DockerSocket)
		deadline := time.Now().Add(3 * time.Minute)
		for {
			_, err := e.Docker(ctx, "version", "--format", "{{.Server.Version}}")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				st, _ := h.Run(ctx, "systemctl", "status", "--no-pager", "docker")
				return fmt.Errorf("%s: docker.service not answering: %w\n%s", h.name, err, st)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
		if _, err := h.Run(ctx, "mkdir", "-p", GuestDir); err != nil {
			return err
		}
		if err := h.Upload(ctx, image, GuestDir+"/image.tar"); err != nil {
			return err
		}
		if _, err := e.Docker(ctx, "import", GuestDir+"/image.tar", e2e.ImageName); err != nil {
			return fmt.Errorf("import image on %s: %w", h.name, err)
		}
		tb.Engines[i] = e
		return nil
	})
}

func indexOf(hosts []*Host, h *Host) int {
	for i, o := range hosts {
		if o == h {
			return i
		}
	}
	return -1
}

// Down removes everything of the run. Safe to call more than once.
func (tb *Testbed) Down(ctx context.Context) error {
	err := Teardown(ctx, tb.base, tb.Run, tb.logf)
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.imageHold != nil {
		tb.imageHold.Close()
		tb.imageHold = nil
	}
	return err
}

// Teardown removes run: kills its QEMU processes (those recorded in the
// ledger whose start time still matches), deletes its namespace (and with it
// the bridge and taps) and its directory, ledger last. The namespace is also
// found by name, so a run killed half-way goes completely. Idempotent.
func Teardown(ctx context.Context, base, run string, logf func(string, ...any)) error {
	if !runPattern.MatchString(run) {
		return fmt.Errorf("vm teardown: %q is not a VM run name", run)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var errs []error
	l, lerr := readLedger(base, run)
	if lerr == nil {
		for _, v := range l.VMs {
			for j, p := range append([]proc{v.QEMU}, v.SSH...) {
				what := "qemu"
				if j > 0 {
					what = "ssh master"
				}
				if killed, err := kill(ctx, p); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s: %w", v.Name, what, err))
				} else if killed {
					logf("run %s: %s: killed %s (pid %d)", run, v.Name, what, p.PID)
				}
			}
		}
	}
	ns := "tenet-" + run
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
		logf("ip netns del %s", ns)
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", ns, err, strings.TrimSpace(string(out))))
		}
	}
	dir := filepath.Join(base, run)
	if _, err := os.Stat(dir); err == nil && len(errs) == 0 {
		logf("rm -rf %s", dir)
		// All but the ledger first: a failure leaves the record.
		items, _ := os.ReadDir(dir)
		for _, it := range items {
			if it.Name() != "ledger.json" {
				if err := os.RemoveAll(filepath.Join(dir, it.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if len(errs) == 0 {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vm teardown of run %s: %w", run, err)
	}
	return nil
}

// kill ends p if it is still the very process recorded (PID and start time),
// and waits until it is gone. A process of ours is reaped by our Wait; one
// left by a dead test was re-parented and is reaped by init.
func kill(ctx context.Context, p proc) (killed bool, err error) {
	if !p.alive() {
		return false, nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	for p.alive() {
		select {
		case <-ctx.Done():
			return true, fmt.Errorf("pid %d still running: %w", p.PID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true, nil
}

// Reap tears down every run under base whose owner is gone (a test killed or
// timed out) and returns their names.
func Reap(ctx context.Context, base string, logf func(string, ...any)) ([]string, error) {
	runs, err := Runs(base)
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	for _, r := range runs {
		if !r.Stale {
			continue
		}
		if err := Teardown(ctx, base, r.Run, logf); err != nil {
			errs = append(errs, err)
			continue
		}
		reaped = append(reaped, r.Run)
	}
	return reaped, errors.Join(errs...)
}

// Leaks lists what runs whose name starts with prefix left on this machine:
// namespaces, processes whose command line names a run directory (QEMU's
// disk), run directories, and links in the root namespace (there should
// never be any). Empty means clean. It only looks.
func Leaks(base, prefix string) []string {
	var found []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tenet-"+prefix) {
			found = append(found, "network namespace "+e.Name())
		}
	}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	mark := filepath.Join(base, prefix)
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(b), mark) {
			continue
		}
		pid := filepath.Base(filepath.Dir(c))
		if f, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && strings.Contains(string(f), ") Z ") {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		found = append(found, fmt.Sprintf("process %s (%s)", pid, strings.TrimSpace(string(comm))))
	}
	dirs, _ := filepath.Glob(mark + "*")
	for _, d := range dirs {
		found = append(found, "directory "+d)
	}
	links, err := os.ReadDir("/sys/class/net")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		found = append(found, "cannot list links: "+err.Error())
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name(), prefix) {
			found = append(found, "root-namespace link "+l.Name())
		}
	}
	return found
}
