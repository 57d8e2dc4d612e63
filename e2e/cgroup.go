package e2e

// Every process the testbed starts (the namespace holders, dockerd, containerd,
// shims, daemons under test, and through dockerd's --cgroup-parent the
// containers) is born into the run's cgroup, /tenet-<run>, of the cgroup v2
// hierarchy (CLONE_INTO_CGROUP). Tear-down writes cgroup.kill once and nothing of
// the run survives, not even processes that were reparented or daemonized, and
// no PID of anybody else's is ever signalled. On a hybrid (v1 + v2) machine such
// as this one, Docker also makes per-container cgroups in each v1 hierarchy under
// the same name; those are removed too.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const cgroupFS = "/sys/fs/cgroup"

// cgroupV2Root is the mount point of the cgroup v2 (unified) hierarchy.
func cgroupV2Root() (string, error) {
	for _, dir := range []string{cgroupFS, filepath.Join(cgroupFS, "unified")} {
		if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("testbed needs a cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

// cgroupRoots lists every hierarchy root: v2 first, then any v1 ones.
func cgroupRoots() []string {
	v2, err := cgroupV2Root()
	if err != nil {
		return nil
	}
	roots := []string{v2}
	if v2 == cgroupFS {
		return roots
	}
	entries, _ := os.ReadDir(cgroupFS)
	for _, e := range entries {
		dir := filepath.Join(cgroupFS, e.Name())
		if dir == v2 || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			roots = append(roots, dir)
		}
	}
	return roots
}

// ensureCgroup creates rel (a path like "tenet-x/h0/daemons") in the v2
// hierarchy; no-op if it exists.
func ensureCgroup(rel string) error {
	root, err := cgroupV2Root()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", rel, err)
	}
	return nil
}

// openCgroup opens a v2 cgroup directory for exec's CgroupFD.
func openCgroup(rel string) (*os.File, error) {
	root, err := cgroupV2Root()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", rel, err)
	}
	return f, nil
}

// cgroupPIDs lists the processes in rel and every cgroup below it, in every
// hierarchy.
func cgroupPIDs(rel string) []int {
	seen := map[int]bool{}
	for _, root := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(root, rel), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// killCgroup ends every process in rel and below, and waits until none is left.
// No-op if the cgroup does not exist.
func killCgroup(ctx context.Context, rel string) error {
	root, err := cgroupV2Root()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, rel)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	for {
		pids := cgroupPIDs(rel)
		if len(pids) == 0 {
			return nil
		}
		// cgroup.kill is atomic against forks. Only a process in our cgroup
		// can be hit: a PID in cgroup.procs is in the cgroup at that moment.
		if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
			return fmt.Errorf("kill cgroup %s: %w", rel, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill cgroup %s: pids %v still running: %w", rel, pids, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// removeCgroups removes rel and everything below it in every hierarchy,
// deepest first, and retries while the kernel still calls one busy: a killed
// process stays in its cgroup until its parent reaps it, and orphans are
// reaped by PID 1, which here does so only every so often. No-op if absent.
func removeCgroups(ctx context.Context, rel string) error {
	for {
		err := removeCgroupsOnce(rel)
		if err == nil || !errors.Is(err, syscall.EBUSY) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func removeCgroupsOnce(rel string) error {
	var errs []error
	for _, root := range cgroupRoots() {
		top := filepath.Join(root, rel)
		var dirs []string
		_ = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
