package e2e

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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Underlay addressing: TEST-NET-2, inside the run's own namespaces only. Never
// 192.0.2.0/24: this machine's own eth0 is there.
var (
	underlayNet   = netip.MustParsePrefix("198.51.100.0/24")
	firstHostAddr = netip.MustParseAddr("198.51.100.10")
)

// MaxHosts bounds a testbed; addresses .10 to .59 of the underlay.
const MaxHosts = 50

// UnderlayMTU is the MTU of the underlay bridge and of every host's eth0.
const UnderlayMTU = 1500

// Options configures Up.
type Options struct {
	Hosts int // number of hosts, 1 to MaxHosts
	// Engines starts a Docker engine on every host and imports the test image.
	Engines bool
	// Persistent makes the testbed outlive this process, until Teardown
	// (scripts/testbed.sh up ... down). Otherwise the run belongs to this
	// process and anyone may Reap it once the process is gone.
	Persistent bool
	BaseDir    string                        // default DefaultBaseDir
	Logf       func(format string, a ...any) // told each step; nil for silence
}

// Validate names the first field that is out of range.
func (o Options) Validate() error {
	if o.Hosts < 1 || o.Hosts > MaxHosts {
		return fmt.Errorf("testbed: Hosts %d: must be 1-%d", o.Hosts, MaxHosts)
	}
	return nil
}

// Testbed is one run: an underlay namespace with a bridge, and hosts joined to
// it, each optionally running a Docker engine.
type Testbed struct {
	Run     string
	Dir     string
	Hosts   []*NetnsHost
	Engines []*Engine // one per host when Options.Engines, else nil
	Tenetds []*Tenetd // one per host after StartTenetds, else nil

	base string
	logf func(string, ...any)

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

// ProcessRunPrefix is the prefix of every run this process creates
// ("tb" + its tag); leak checks of one test binary look for it.
func ProcessRunPrefix() string { return "tb" + processTag }

func newRunName() string {
	return fmt.Sprintf("%s%d", ProcessRunPrefix(), runSequence.Add(1)%100)
}

// Up creates a testbed. On error, whatever it created is removed again.
func Up(ctx context.Context, opts Options) (tb *Testbed, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: needs root: creates network namespaces, mounts and cgroups")
	}
	if opts.BaseDir == "" {
		opts.BaseDir = DefaultBaseDir
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	run := newRunName()
	tb = &Testbed{Run: run, Dir: filepath.Join(opts.BaseDir, run), base: opts.BaseDir, logf: logf}
	owner, err := procOf(os.Getpid())
	if err != nil {
		return nil, err
	}
	tb.led = ledger{Run: run, Owner: owner, Persistent: opts.Persistent, Created: time.Now().UTC(),
		Cgroup: "tenet-" + run}
	if err := os.MkdirAll(tb.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if derr := Teardown(cctx, opts.BaseDir, run, logf); derr != nil {
				err = errors.Join(err, derr)
			}
			tb = nil
		}
	}()
	if err := tb.saveLedger(); err != nil {
		return nil, err
	}
	logf("run %s: dir %s", run, tb.Dir)
	if err := ensureCgroup(tb.led.Cgroup); err != nil {
		return nil, err
	}
	if err := tb.makeUnderlay(ctx); err != nil {
		return nil, err
	}
	for i := 0; i < opts.Hosts; i++ {
		if err := tb.addHost(ctx, i); err != nil {
			return nil, err
		}
	}
	if opts.Engines {
		if err := tb.startEngines(ctx); err != nil {
			return nil, err
		}
	}
	return tb, nil
}

func (tb *Testbed) saveLedger() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.led.save(tb.base)
}

// ip runs one iproute2 command in the root namespace (addressing only our own
// namespaces with -n) and logs it.
func (tb *Testbed) ip(ctx context.Context, args ...string) error {
	tb.logf("ip %s", strings.Join(args, " "))
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// addNetns records a namespace in the ledger, then creates it with lo up.
func (tb *Testbed) addNetns(ctx context.Context, name string) error {
	tb.mu.Lock()
	tb.led.Namespaces = append(tb.led.Namespaces, name)
	tb.mu.Unlock()
	if err := tb.saveLedger(); err != nil {
		return err
	}
	if err := tb.ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	return tb.ip(ctx, "-n", name, "link", "set", "lo", "up")
}

func (tb *Testbed) underlayNetns() string { return "tenet-" + tb.Run + "-u" }

func (tb *Testbed) makeUnderlay(ctx context.Context) error {
	u := tb.underlayNetns()
	if err := tb.addNetns(ctx, u); err != nil {
		return err
	}
	if err := tb.ip(ctx, "-n", u, "link", "add", "br0", "mtu", fmt.Sprint(UnderlayMTU), "type", "bridge"); err != nil {
		return err
	}
	// The underlay namespace also plays "the outside world": an address
	// outside the underlay network, on-link for every host, for tests of
	// tenants' egress (which must reach it, and never the underlay).
	for _, a := range []string{underlayRouterAddr.String(), Outside.String() + "/24"} {
		if err := tb.ip(ctx, "-n", u, "addr", "add", a, "dev", "br0"); err != nil {
			return err
		}
	}
	return tb.ip(ctx, "-n", u, "link", "set", "br0", "up")
}

// Outside is an address outside the cluster's underlay that every host of
// a testbed reaches directly: the rest of the world, for egress tests.
var Outside = netip.MustParseAddr("203.0.113.1")

// underlayRouterAddr is the outside world's address on the underlay
// network, so that its answers find the hosts.
var underlayRouterAddr = netip.MustParsePrefix("198.51.100.1/24")

// addHost creates host i: its namespace, a veth made inside the underlay
// namespace with the peer placed straight into the host (so no interface ever
// appears in the root namespace), its address, cgroup and namespace holder.
func (tb *Testbed) addHost(ctx context.Context, i int) error {
	name := fmt.Sprintf("h%d", i)
	ns := "tenet-" + tb.Run + "-" + name
	addr := firstHostAddr
	for range i {
		addr = addr.Next()
	}
	pfx := netip.PrefixFrom(addr, underlayNet.Bits())
	h := &NetnsHost{name: name, netns: ns, dir: filepath.Join(tb.Dir, name), underlay: pfx,
		cgroup: filepath.Join(tb.led.Cgroup, name, "daemons")}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return err
	}
	if err := tb.addNetns(ctx, ns); err != nil {
		return err
	}
	u, veth := tb.underlayNetns(), tb.Run+name // at most 2+6+2+3 = 13 bytes
	steps := [][]string{
		{"-n", u, "link", "add", veth, "mtu", fmt.Sprint(UnderlayMTU), "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", u, "link", "set", veth, "master", "br0", "up"},
		{"-n", ns, "addr", "add", pfx.String(), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", netip.PrefixFrom(Outside, 24).Masked().String(), "dev", "eth0"},
	}
	for _, s := range steps {
		if err := tb.ip(ctx, s...); err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
	}
	if err := ensureCgroup(h.cgroup); err != nil {
		return err
	}
	holder, err := startHolder(ctx, h.dir, ns, h.cgroup)
	if err != nil {
		return fmt.Errorf("host %s: %w", name, err)
	}
	h.holder = holder
	tb.logf("host %s: netns %s, underlay %s, holder pid %d", name, ns, pfx, holder.PID)
	tb.mu.Lock()
	tb.led.Hosts = append(tb.led.Hosts, hostRecord{Name: name, Netns: ns, Dir: h.dir, Underlay: pfx.String(), Holder: holder})
	tb.mu.Unlock()
	tb.recordDaemons(h, len(tb.led.Hosts)-1)
	tb.Hosts = append(tb.Hosts, h)
	return tb.saveLedger()
}

// recordDaemons makes h write every daemon it starts to the ledger, as host
// record idx, so that another process can find and restart it.
func (tb *Testbed) recordDaemons(h *NetnsHost, idx int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onDaemon = func(d daemonRecord) error {
		tb.mu.Lock()
		tb.led.Hosts[idx].Daemons = append(tb.led.Hosts[idx].Daemons, d)
		tb.mu.Unlock()
		return tb.saveLedger()
	}
}

// containerCgroup is the cgroup parent of host name's containers.
func (tb *Testbed) containerCgroup(name string) string {
	return "/" + filepath.Join(tb.led.Cgroup, name, "containers")
}

func (tb *Testbed) startEngines(ctx context.Context) error {
	image := filepath.Join(tb.Dir, "image.tar")
	if err := BuildImage(image); err != nil {
		return err
	}
	tb.logf("image %s: busybox, iperf3 (%s)", ImageName, image)
	tb.Engines = make([]*Engine, len(tb.Hosts))
	errs := make([]error, len(tb.Hosts))
	var wg sync.WaitGroup
	for i, h := range tb.Hosts {
		wg.Go(func() {
			e, err := StartEngine(ctx, h, EngineConfig{CgroupParent: tb.containerCgroup(h.name), DNS: DefaultDNS})
			if err != nil {
				errs[i] = err
				return
			}
			tb.Engines[i] = e
			if _, err := e.Docker(ctx, "import", image, ImageName); err != nil {
				errs[i] = fmt.Errorf("import image on %s: %w", h.name, err)
				return
			}
			tb.mu.Lock()
			tb.led.Hosts[i].DockerSock = e.Socket()
			tb.mu.Unlock()
			tb.logf("host %s: dockerd pid %d, socket %s", h.name, e.Daemon().PID(), e.Socket())
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return tb.saveLedger()
}

// Down removes everything of the run. Safe to call more than once.
func (tb *Testbed) Down(ctx context.Context) error {
	return Teardown(ctx, tb.base, tb.Run, tb.logf)
}

// Teardown removes run: kills every process of it through its cgroup (which
// also drops the hosts' private mount namespaces), removes its cgroups and
// namespaces (and with them every veth and bridge) and its directory, ledger
// last. Objects are found both from the ledger and by the run's name, so a run
// killed half-way is removed completely. Idempotent.
func Teardown(ctx context.Context, base, run string, logf func(string, ...any)) error {
	if !runPattern.MatchString(run) {
		return fmt.Errorf("teardown: %q is not a testbed run name", run)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var errs []error
	cg := "tenet-" + run
	if pids := cgroupPIDs(cg); len(pids) > 0 {
		logf("run %s: kill cgroup %s (pids %v)", run, cg, pids)
	}
	if err := killCgroup(ctx, cg); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(ctx, cg); err != nil {
		errs = append(errs, err)
	}
	names := map[string]bool{}
	if l, err := readLedger(base, run); err == nil {
		for _, n := range l.Namespaces {
			names[n] = true
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tenet-"+run+"-") {
			names[e.Name()] = true
		}
	}
	for n := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", n)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		logf("ip netns del %s", n)
		if out, err := exec.CommandContext(ctx, "ip", "netns", "del", n).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", n, err, strings.TrimSpace(string(out))))
		}
	}
	dir := filepath.Join(base, run)
	for _, m := range mountsUnder(dir) {
		// Only a host's private mount namespace mounts here, and it died
		// with the cgroup; a mount seen from here is a leak to undo.
		logf("umount %s", m)
		if out, err := exec.CommandContext(ctx, "umount", "-l", m).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w: %s", m, err, strings.TrimSpace(string(out))))
		}
	}
	if _, err := os.Stat(dir); err == nil {
		logf("rm -rf %s", dir)
		// Remove all but the ledger first, so that a failure leaves the
		// record for the next attempt.
		items, _ := os.ReadDir(dir)
		for _, it := range items {
			if it.Name() == "ledger.json" {
				continue
			}
			if err := os.RemoveAll(filepath.Join(dir, it.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown of run %s: %w", run, err)
	}
	return nil
}

// Reap removes every run under base whose owner is gone (a test that was
// killed or timed out) and returns their names. Runs of live processes and
// persistent runs are left alone.
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

// Attach rebuilds a Testbed from a run's ledger, for a process other than the
// one that made it (scripts/testbed.sh exec, restart-tenetd, ...). Daemons
// it starts are recorded in the ledger too. logf is told each step; nil for
// silence. Two processes that change one run at the same time may lose each
// other's ledger records.
func Attach(base, run string, logf func(string, ...any)) (*Testbed, error) {
	l, err := readLedger(base, run)
	if err != nil {
		return nil, fmt.Errorf("attach to run %s: %w", run, err)
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tb := &Testbed{Run: run, Dir: filepath.Join(base, run), base: base, logf: logf, led: *l}
	for i, r := range l.Hosts {
		pfx, err := netip.ParsePrefix(r.Underlay)
		if err != nil {
			return nil, fmt.Errorf("attach to run %s: host %s: %w", run, r.Name, err)
		}
		h := &NetnsHost{name: r.Name, netns: r.Netns, dir: r.Dir, underlay: pfx, holder: r.Holder,
			cgroup: filepath.Join(l.Cgroup, r.Name, "daemons")}
		tb.recordDaemons(h, i)
		tb.Hosts = append(tb.Hosts, h)
		if r.DockerSock != "" {
			e := &Engine{host: h, sock: r.DockerSock, cfg: EngineConfig{CgroupParent: tb.containerCgroup(r.Name)}}
			if d, ok := r.lastDaemon("dockerd"); ok {
				e.daemon = attachProcDaemon(d.Name, d.Proc, d.Log)
				e.cfg.LiveRestore = slices.Contains(d.Argv, "--live-restore")
				for i, a := range d.Argv {
					if a == "--dns" && i+1 < len(d.Argv) {
						e.cfg.DNS = append(e.cfg.DNS, d.Argv[i+1])
					}
				}
			}
			tb.Engines = append(tb.Engines, e)
		}
		if d, ok := r.lastDaemon("tenetd"); ok && len(d.Argv) > 0 {
			if tb.Tenetds == nil {
				tb.Tenetds = make([]*Tenetd, len(l.Hosts))
			}
			tb.Tenetds[i] = &Tenetd{Host: h, Daemon: attachProcDaemon(d.Name, d.Proc, d.Log), argv: d.Argv}
		}
	}
	return tb, nil
}
