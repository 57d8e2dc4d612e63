package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc identifies a process across PID reuse: a PID plus the kernel's record of
// when it started (field 22 of /proc/PID/stat, in clock ticks since boot).
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// procOf reads the identity of a running process.
func procOf(pid int) (proc, error) {
	start, err := procStart(pid)
	if err != nil {
		return proc{}, err
	}
	return proc{PID: pid, Start: start}, nil
}

// alive reports whether the very process p names is still running (not a
// zombie, not a newer process that reused the PID).
func (p proc) alive() bool {
	if p.PID <= 0 {
		return false
	}
	start, err := procStart(p.PID)
	if err != nil || start != p.Start {
		return false
	}
	state, err := procState(p.PID)
	return err == nil && state != "Z" && state != "X"
}

func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name (field 2) may hold spaces and parentheses; fields after
	// the last ')' are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	return strings.Fields(s[i+1:]), nil
}

func procStart(pid int) (uint64, error) {
	f, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	// After the comm field: state is field 3, starttime field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func procState(pid int) (string, error) {
	f, err := procStat(pid)
	if err != nil {
		return "", err
	}
	return f[0], nil
}

// procDaemon is a Daemon backed by a local process. cmd is nil when the daemon
// was started by another process (a testbed attached from its ledger); then it
// is watched by polling.
type procDaemon struct {
	name    string
	p       proc
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

func newProcDaemon(name string, cmd *exec.Cmd, logPath string) (*procDaemon, error) {
	p, err := procOf(cmd.Process.Pid)
	if err != nil {
		// It may already have exited; keep the PID so errors can name it.
		p = proc{PID: cmd.Process.Pid}
	}
	d := &procDaemon{name: name, p: p, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reaps the child; its exit shows in the log
		close(d.done)
	}()
	return d, nil
}

func attachProcDaemon(name string, p proc, logPath string) *procDaemon {
	d := &procDaemon{name: name, p: p, logPath: logPath, done: make(chan struct{})}
	go func() {
		for p.alive() {
			time.Sleep(50 * time.Millisecond)
		}
		close(d.done)
	}()
	return d
}

func (d *procDaemon) Name() string          { return d.name }
func (d *procDaemon) PID() int              { return d.p.PID }
func (d *procDaemon) LogPath() string       { return d.logPath }
func (d *procDaemon) Done() <-chan struct{} { return d.done }

func (d *procDaemon) signal(sig syscall.Signal) error {
	select {
	case <-d.done:
		return nil
	default:
	}
	if d.cmd != nil {
		// The child is not reaped until Wait returns, so its PID is still ours.
		if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %s (pid %d): %w", d.name, d.p.PID, err)
		}
		return nil
	}
	if !d.p.alive() {
		return nil
	}
	if err := syscall.Kill(d.p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", d.name, d.p.PID, err)
	}
	return nil
}

func (d *procDaemon) Stop(ctx context.Context) error {
	if err := d.signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
	}
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Kill(kctx); err != nil {
		return err
	}
	return fmt.Errorf("stop %s (pid %d): killed after %w", d.name, d.p.PID, ctx.Err())
}

func (d *procDaemon) Kill(ctx context.Context) error {
	if err := d.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kill %s (pid %d): still running: %w", d.name, d.p.PID, ctx.Err())
	}
}
