package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Leaks lists everything on this machine that belongs to a testbed run whose
// name starts with prefix: network namespaces, processes (by cgroup), cgroups,
// mounts, directories under base, and links in the root namespace (there
// should never be any). Empty means clean.
func Leaks(base, prefix string) []string {
	var found []string
	tag := "tenet-" + prefix
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tag) {
			found = append(found, "network namespace "+e.Name())
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "/"+tag) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			if st, err := procState(pid); err != nil || st == "Z" {
				// Gone, or dead and waiting for its parent (here PID 1,
				// which reaps late) to collect it: holds nothing.
				continue
			}
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			found = append(found, fmt.Sprintf("process %d (%s)", pid, strings.TrimSpace(string(comm))))
		}
	}
	for _, root := range cgroupRoots() {
		dirs, _ := filepath.Glob(filepath.Join(root, tag+"*"))
		for _, d := range dirs {
			found = append(found, "cgroup "+d)
		}
	}
	for _, m := range mountsMatching(func(mp string) bool {
		return strings.HasPrefix(mp, filepath.Join(base, prefix)) || strings.HasPrefix(mp, "/run/netns/"+tag)
	}) {
		found = append(found, "mount "+m)
	}
	dirs, _ := filepath.Glob(filepath.Join(base, prefix+"*"))
	for _, d := range dirs {
		found = append(found, "directory "+d)
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, prefix) {
			found = append(found, "root-namespace link "+i.Name)
		}
	}
	return found
}

// mountsUnder lists mount points at or below dir in this mount namespace.
func mountsUnder(dir string) []string {
	return mountsMatching(func(mp string) bool {
		return mp == dir || strings.HasPrefix(mp, dir+"/")
	})
}

func mountsMatching(match func(string) bool) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if match(mp) {
			mps = append(mps, mp)
		}
	}
	// Deepest first, so they can be unmounted in order.
	for i, j := 0, len(mps)-1; i < j; i, j = i+1, j-1 {
		mps[i], mps[j] = mps[j], mps[i]
	}
	return mps
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
