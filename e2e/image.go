package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ImageName is the container image every testbed engine has. There is no
// registry here, so it is built from busybox-static and imported.
const ImageName = "tenet-test:latest"

// busyboxApplets are linked into the image's /bin.
var busyboxApplets = []string{
	"sh", "ash", "ping", "ping6", "ip", "nc", "arping", "wget", "sleep", "cat", "echo",
	"hostname", "ls", "ps", "kill", "grep", "sed", "awk", "timeout", "ifconfig", "route",
	"true", "false", "test", "tr", "wc", "head", "tail", "date", "env", "id", "mkdir", "rm",
}

// BuildImage writes the test image's root filesystem as a tar to path:
// busybox with its applets, and iperf3 with the libraries it links against,
// for throughput benchmarks.
func BuildImage(path string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("build image: busybox not found (apt-get install busybox-static): %w", err)
	}
	iperf, err := exec.LookPath("iperf3")
	if err != nil {
		return fmt.Errorf("build image: iperf3 not found (apt-get install iperf3): %w", err)
	}
	if out, err := exec.Command("ldd", busybox).CombinedOutput(); err == nil && !bytes.Contains(out, []byte("not a dynamic")) {
		return fmt.Errorf("build image: %s is not static (apt-get install busybox-static)", busybox)
	}
	libs, err := sharedLibs(iperf)
	if err != nil {
		return fmt.Errorf("build image: %w", err)
	}

	var buf bytes.Buffer
	tw := &imageWriter{Writer: tar.NewWriter(&buf), dirs: map[string]bool{}, mtime: time.Now()}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "usr/bin"} {
		if err := tw.dir(d); err != nil {
			return err
		}
	}
	files := map[string]string{"bin/busybox": busybox, "usr/bin/iperf3": iperf}
	for _, lib := range libs {
		files[strings.TrimPrefix(lib, "/")] = lib
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := tw.file(name, files[name]); err != nil {
			return fmt.Errorf("build image: %w", err)
		}
	}
	now := tw.mtime
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// imageWriter writes a root filesystem tar in which each directory appears
// once (Docker refuses duplicate paths) and before its contents.
type imageWriter struct {
	*tar.Writer
	dirs  map[string]bool
	mtime time.Time
}

// dir writes d and its parents; no-op for those already written.
func (w *imageWriter) dir(d string) error {
	if d == "." || d == "/" || w.dirs[d] {
		return nil
	}
	if err := w.dir(filepath.Dir(d)); err != nil {
		return err
	}
	w.dirs[d] = true
	mode := int64(0o755)
	if d == "tmp" {
		mode = 0o1777
	}
	return w.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: w.mtime})
}

// file stores src's content (following symlinks) as name.
func (w *imageWriter) file(name, src string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := w.dir(filepath.Dir(name)); err != nil {
		return err
	}
	if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(b)), ModTime: w.mtime}); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// sharedLibs lists the absolute paths ldd reports for a binary, the dynamic
// loader included.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"
		f := strings.Fields(sc.Text())
		for i, w := range f {
			if strings.HasPrefix(w, "/") && (i == 0 || f[i-1] == "=>") {
				libs = append(libs, w)
			}
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries found in %q", bin, out)
	}
	return libs, nil
}
