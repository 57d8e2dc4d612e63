package vm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseDir holds one directory per VM testbed run: its ledger, the VMs'
// disk overlays and console logs.
const DefaultBaseDir = "/var/tmp/tenet-vm"

// runPattern matches VM run names: "vm", six hex digits chosen once per
// process, then a sequence number. The run's namespace is "tenet-<run>", so
// the namespace testbed's runs ("tenet-tb…") and tests ("tenet-t-…") never
// match, nor do these match theirs.
var runPattern = regexp.MustCompile(`^vm[0-9a-f]{6}[0-9]{1,2}$`)

// ledger is the on-disk record of a run, written before each object is
// created, so that a run killed at any point can be removed by whoever reads
// it next (Reap).
type ledger struct {
	Run     string    `json:"run"`
	Owner   proc      `json:"owner"` // the process that made the run
	Created time.Time `json:"created"`
	Netns   string    `json:"netns"`
	Release string    `json:"release"`
	Image   string    `json:"image"`
	VMs     []vmEntry `json:"vms"`
}

type vmEntry struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
	QEMU proc   `json:"qemu"`          // zero until QEMU has started
	SSH  []proc `json:"ssh,omitempty"` // its ssh masters, one per boot
}

func ledgerPath(base, run string) string { return filepath.Join(base, run, "ledger.json") }

func (l *ledger) save(base string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	path := ledgerPath(base, l.Run)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	return nil
}

func readLedger(base, run string) (*ledger, error) {
	b, err := os.ReadFile(ledgerPath(base, run))
	if err != nil {
		return nil, err
	}
	var l ledger
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("read ledger of run %s: %w", run, err)
	}
	return &l, nil
}

// RunInfo describes a VM testbed run found on this machine.
type RunInfo struct {
	Run   string
	Stale bool // its owner is gone: Reap removes it
	VMs   []string
}

// Runs lists the runs recorded under base.
func Runs(base string) ([]RunInfo, error) {
	entries, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var runs []RunInfo
	for _, e := range entries {
		if !e.IsDir() || !runPattern.MatchString(e.Name()) {
			continue
		}
		l, err := readLedger(base, e.Name())
		if err != nil {
			// No readable ledger: debris of a run killed as it began,
			// unless it is being made right now.
			info, serr := e.Info()
			young := serr == nil && time.Since(info.ModTime()) < time.Minute
			runs = append(runs, RunInfo{Run: e.Name(), Stale: !young})
			continue
		}
		info := RunInfo{Run: l.Run, Stale: !l.Owner.alive()}
		for _, v := range l.VMs {
			info.VMs = append(info.VMs, v.Name)
		}
		runs = append(runs, info)
	}
	return runs, nil
}

// proc names a process across PID reuse: its PID and its start time (field 22
// of /proc/PID/stat, clock ticks since boot).
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func procOf(pid int) (proc, error) {
	f, err := procStat(pid)
	if err != nil {
		return proc{}, err
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return proc{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return proc{PID: pid, Start: start}, nil
}

// alive reports whether the very process p names still runs: same start
// time, not a zombie.
func (p proc) alive() bool {
	if p.PID <= 0 {
		return false
	}
	f, err := procStat(p.PID)
	if err != nil {
		return false
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && start == p.Start && f[0] != "Z" && f[0] != "X"
}

// procStat returns the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses): state first, start time at 19.
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}
