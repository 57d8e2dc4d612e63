package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// GuestDir is the scratch directory on every VM (Host.Dir); it goes with the
// VM's disk.
const GuestDir = "/var/tmp/tenet-e2e"

// Host is one VM of a run, reached over ssh from inside the run's namespace.
type Host struct {
	name    string
	addr    netip.Prefix
	netns   string
	key     string // ssh private key
	console string // serial console log, on this machine
	control string // ssh control socket, on this machine
	qemu    *exec.Cmd
	exited  chan struct{} // closed when QEMU has exited
	// onProc records a process started for the VM (an ssh master) in the
	// run's ledger before the VM is used through it.
	onProc func(proc) error

	mu         sync.Mutex    // guards the field below
	masterDone chan struct{} // closed when the current ssh master has exited
}

var _ e2e.Host = (*Host)(nil)

func (h *Host) Name() string           { return h.name }
func (h *Host) Underlay() netip.Prefix { return h.addr }
func (h *Host) Dir() string            { return GuestDir }

// ConsoleLog is the path, on this machine, of the VM's serial console log.
func (h *Host) ConsoleLog() string { return h.console }

// ssh is the command line of ssh to the VM, run through nsenter in the
// run's namespace, with extra options. Every VM of every run has the image's
// host keys, so they are not recorded. Commands go through the VM's ssh
// master when one runs (a command then starts in 0.1 s instead of 1 s under
// TCG), else straight to the VM.
func (h *Host) ssh(extra ...string) []string {
	args := []string{"nsenter", "--net=/run/netns/" + h.netns, "--", "ssh",
		"-i", h.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
		"-o", "ControlPath=" + h.control}
	args = append(args, extra...)
	return append(args, "root@"+h.addr.Addr().String())
}

func (h *Host) sshArgs(argv []string) []string {
	return append(h.ssh("-o", "ControlMaster=no"), "--", shellQuote(argv))
}

// startMaster starts the VM's ssh master (one connection that later
// commands share) unless one runs, and waits until it serves. The master
// ends when the VM goes down (or reboots), and with this process.
func (h *Host) startMaster(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.masterDone != nil {
		select {
		case <-h.masterDone:
		default:
			return nil
		}
	}
	_ = os.Remove(h.control) // left by a master that died with its VM
	a := h.ssh("-M", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no")
	cmd := exec.Command(a[0], a[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start ssh master: %w", h.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	h.masterDone = done
	if p, err := procOf(cmd.Process.Pid); err == nil && h.onProc != nil {
		if err := h.onProc(p); err != nil {
			return err
		}
	}
	check := h.ssh("-O", "check")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if exec.CommandContext(ctx, check[0], check[1:]...).Run() == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s: ssh master exited", h.name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: ssh master not serving after 20s", h.name)
		}
	}
}

// shellQuote joins argv into one line the remote shell splits back into argv.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@%+") == "" {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// errUnreachable marks a command that never ran because ssh could not reach
// the VM (ssh's exit code 255).
var errUnreachable = errors.New("vm unreachable over ssh")

// Run runs argv on the VM as root and returns its combined output.
func (h *Host) Run(ctx context.Context, argv ...string) (string, error) {
	return h.run(ctx, nil, argv)
}

func (h *Host) run(ctx context.Context, stdin *os.File, argv []string) (string, error) {
	if len(argv) == 0 {
		return "", fmt.Errorf("%s: empty command", h.name)
	}
	a := h.sshArgs(argv)
	cmd := exec.CommandContext(ctx, a[0], a[1:]...)
	cmd.Stdin = stdin
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 255 {
			err = fmt.Errorf("%w: %w", errUnreachable, err)
		}
		return string(out), fmt.Errorf("%s: %s: %w: %s", h.name, strings.Join(argv, " "), err, tail(string(out), 2000))
	}
	return string(out), nil
}

// Upload copies the local file src to dst on the VM.
func (h *Host) Upload(ctx context.Context, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = h.run(ctx, f, []string{"sh", "-c", `cat > "$1"`, "upload", dst})
	return err
}

// WriteFile writes data to path on the VM with mode perm.
func (h *Host) WriteFile(ctx context.Context, path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp("", "tenet-vm-upload-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if _, err := tmp.Seek(0, 0); err != nil {
		return err
	}
	_, err = h.run(ctx, tmp, []string{"sh", "-c", `umask 077 && cat > "$1.tmp" && chmod "$2" "$1.tmp" && mv "$1.tmp" "$1"`,
		"write", path, strconv.FormatUint(uint64(perm.Perm()), 8)})
	return err
}

// BootID is the kernel's ID of the VM's current boot.
func (h *Host) BootID(ctx context.Context) (string, error) {
	out, err := h.Run(ctx, "cat", "/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(out), err
}

// awaitSSH polls until the VM runs commands over ssh, or QEMU exits, or
// limit passes.
func (h *Host) awaitSSH(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		_, err := h.Run(cctx, "true")
		cancel()
		if err == nil {
			return h.startMaster(ctx)
		}
		select {
		case <-h.exited:
			return fmt.Errorf("%s: qemu exited; console: %s", h.name, h.consoleTail())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", h.name, ctx.Err())
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no ssh after %v: %v; console: %s", h.name, limit, err, h.consoleTail())
		}
	}
}

func (h *Host) consoleTail() string {
	b, err := os.ReadFile(h.console)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 3000)
}

// Reboot reboots the VM the way an admin would (systemctl reboot) and waits
// until it answers over ssh again, from a new boot.
func (h *Host) Reboot(ctx context.Context, limit time.Duration) error {
	before, err := h.BootID(ctx)
	if err != nil {
		return err
	}
	// The connection drops as the VM goes down: ssh's error says nothing.
	_, _ = h.Run(ctx, "systemctl", "reboot")
	deadline := time.Now().Add(limit)
	for {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		id, err := h.BootID(cctx)
		cancel()
		if err == nil && id != before {
			return h.startMaster(ctx)
		}
		select {
		case <-h.exited:
			return fmt.Errorf("%s: qemu exited during reboot; console: %s", h.name, h.consoleTail())
		case <-ctx.Done():
			return fmt.Errorf("%s: reboot: %w", h.name, ctx.Err())
		case <-time.After(time.Second):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not back %v after reboot (boot id %s, last %q, %v); console: %s", h.name, limit, before, id, err, h.consoleTail())
		}
	}
}

// StartDaemon starts spec.Argv on the VM as a transient systemd service
// (systemd-run), its output appended to Dir()/<name>.log. The daemon ends when
// the VM does.
func (h *Host) StartDaemon(ctx context.Context, spec e2e.DaemonSpec) (e2e.Daemon, error) {
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/ ") || len(spec.Argv) == 0 {
		return nil, fmt.Errorf("start daemon on %s: name %q and argv %q: need a word and a command", h.name, spec.Name, spec.Argv)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	unit := "tenet-e2e-" + spec.Name + "-" + hex.EncodeToString(suffix)
	logPath := GuestDir + "/" + spec.Name + ".log"
	argv := append([]string{"systemd-run", "--quiet", "--collect", "--unit=" + unit,
		"-p", "StandardOutput=append:" + logPath, "-p", "StandardError=append:" + logPath, "--"}, spec.Argv...)
	if _, err := h.Run(ctx, "mkdir", "-p", GuestDir); err != nil {
		return nil, err
	}
	if _, err := h.Run(ctx, argv...); err != nil {
		return nil, fmt.Errorf("start %s on %s: %w", spec.Name, h.name, err)
	}
	out, err := h.Run(ctx, "systemctl", "show", "-p", "MainPID", "--value", unit)
	if err != nil {
		return nil, err
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	d := &unitDaemon{host: h, name: spec.Name, unit: unit + ".service", pid: pid, logPath: logPath, done: make(chan struct{})}
	go d.watch()
	return d, nil
}

// unitDaemon is a daemon running as a transient systemd unit on a VM.
type unitDaemon struct {
	host    *Host
	name    string
	unit    string
	pid     int
	logPath string
	once    sync.Once
	done    chan struct{}
}

func (d *unitDaemon) Name() string          { return d.name }
func (d *unitDaemon) PID() int              { return d.pid }
func (d *unitDaemon) LogPath() string       { return d.logPath }
func (d *unitDaemon) Done() <-chan struct{} { return d.done }

// watch closes done when the unit is no longer active, or when the VM can no
// longer be asked (it went down, and the daemon with it).
func (d *unitDaemon) watch() {
	defer d.once.Do(func() { close(d.done) })
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		_, err := d.host.Run(ctx, "sh", "-c", `while systemctl is-active -q "$1"; do sleep 0.5; done`, "watch", d.unit)
		cancel()
		if err == nil || errors.Is(err, errUnreachable) {
			return
		}
		select {
		case <-d.host.exited:
			return
		case <-time.After(time.Second):
		}
	}
}

func (d *unitDaemon) Stop(ctx context.Context) error {
	select {
	case <-d.done:
		return nil
	default:
	}
	if _, err := d.host.Run(ctx, "systemctl", "stop", d.unit); err != nil {
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if kerr := d.Kill(kctx); kerr != nil {
			return errors.Join(err, kerr)
		}
		return err
	}
	return d.wait(ctx)
}

func (d *unitDaemon) Kill(ctx context.Context) error {
	if _, err := d.host.Run(ctx, "systemctl", "kill", "-s", "KILL", d.unit); err != nil {
		select {
		case <-d.done:
			return nil
		default:
			return err
		}
	}
	return d.wait(ctx)
}

func (d *unitDaemon) wait(ctx context.Context) error {
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s on %s: still running: %w", d.name, d.host.name, ctx.Err())
	}
}
