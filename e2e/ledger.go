package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// DefaultBaseDir holds one directory per testbed run: its ledger, the hosts'
// scratch directories and the engines' data roots.
const DefaultBaseDir = "/var/tmp/tenet-testbed"

// runPattern matches the names of testbed runs: "tb", six hex digits chosen
// once per process, then a sequence number. Namespaces of a run are named
// "tenet-<run>-...", so other Tenet namespaces ("tenet-t-...") never match.
var runPattern = regexp.MustCompile(`^tb[0-9a-f]{6}[0-9]{1,2}$`)

// ledger is the on-disk record of one run. It is written before each object
// is created, so that a run killed at any point can be removed by whoever
// reads the ledger next (Reap).
type ledger struct {
	Run        string       `json:"run"`
	Owner      proc         `json:"owner"`      // the process that made it; ignored if Persistent
	Persistent bool         `json:"persistent"` // made by "testbed up": lives until "testbed down"
	Created    time.Time    `json:"created"`
	Namespaces []string     `json:"namespaces"` // in creation order
	Cgroup     string       `json:"cgroup"`     // relative to each hierarchy root
	Hosts      []hostRecord `json:"hosts"`
}

type hostRecord struct {
	Name       string `json:"name"`
	Netns      string `json:"netns"`
	Dir        string `json:"dir"`
	Underlay   string `json:"underlay"`
	Holder     proc   `json:"holder"`
	DockerSock string `json:"docker_sock,omitempty"`
	// Daemons in start order; a restarted daemon appears again, and the
	// last record of a name is the current one.
	Daemons []daemonRecord `json:"daemons,omitempty"`
	Killed  bool           `json:"killed,omitempty"` // killed for good (KillHost)
}

type daemonRecord struct {
	Name string   `json:"name"`
	Proc proc     `json:"proc"`
	Log  string   `json:"log"`
	Argv []string `json:"argv,omitempty"` // to start it again from another process
}

// lastDaemon is the current record of the daemon called name, if any.
func (r hostRecord) lastDaemon(name string) (daemonRecord, bool) {
	for i := len(r.Daemons) - 1; i >= 0; i-- {
		if r.Daemons[i].Name == name {
			return r.Daemons[i], true
		}
	}
	return daemonRecord{}, false
}

func ledgerPath(base, run string) string { return filepath.Join(base, run, "ledger.json") }

func (l *ledger) save(base string) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	path := ledgerPath(base, l.Run)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write ledger: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
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

// stale reports whether nobody owns the run any more: it is not persistent and
// the process that made it is gone.
func (l *ledger) stale() bool {
	return !l.Persistent && !l.Owner.alive()
}

// RunInfo describes a testbed run found on this machine.
type RunInfo struct {
	Run        string
	Persistent bool
	Stale      bool // its owner is gone: Reap removes it
	Hosts      []string
	Created    time.Time
}

// Runs lists the testbed runs recorded under base.
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
			// A directory without a readable ledger is debris of a run
			// killed while it started, unless it is being made right now
			// (the ledger follows the directory within milliseconds).
			info, serr := e.Info()
			young := serr == nil && time.Since(info.ModTime()) < time.Minute
			runs = append(runs, RunInfo{Run: e.Name(), Stale: !young})
			continue
		}
		info := RunInfo{Run: l.Run, Persistent: l.Persistent, Stale: l.stale(), Created: l.Created}
		for _, h := range l.Hosts {
			info.Hosts = append(info.Hosts, h.Name)
		}
		runs = append(runs, info)
	}
	return runs, nil
}
