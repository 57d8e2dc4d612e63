package vm

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The image's inputs. Their hash names the cached image, so changing either
// file (or the release or mirror) builds a new one.
var (
	//go:embed image/build.sh
	buildScript []byte
	//go:embed image/packages.txt
	packageList []byte
)

// Releases are the Debian releases the testbed builds images of: 12
// (bookworm: kernel 6.1, docker.io 20.10) and 13 (trixie: kernel 6.12,
// docker.io 26.1), as of 2025.
var Releases = []string{"bookworm", "trixie"}

// DefaultCacheDir holds the built images, one directory per release and
// input hash.
const DefaultCacheDir = "/var/cache/tenet-vm"

// DefaultMirror is where images get their packages: the Debian mirror apt
// uses on this machine kind.
const DefaultMirror = "http://deb.debian.org/debian"

// Image is a built VM image. Its files are never written after the build.
type Image struct {
	Release string
	Dir     string
	Kernel  string // vmlinuz, booted with qemu -kernel
	Initrd  string
	Rootfs  string // raw ext4 of the whole disk; VMs get qcow2 overlays of it
	Key     string // ssh private key root logs in with
	// Versions lists the kernel and Docker versions in the image.
	Versions string
}

// imageKey hashes everything an image is built from.
func imageKey(release, mirror string, script, packages []byte) string {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(release), []byte(mirror), script, packages} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func validRelease(release string) error {
	if !slices.Contains(Releases, release) {
		return fmt.Errorf("vm: release %q: must be one of %s", release, strings.Join(Releases, ", "))
	}
	return nil
}

// EnsureImage returns the image of release in cacheDir, building it first
// (a few minutes) unless one built from the same inputs is there. Builds of
// one release are serialised by a lock file; after a build, images of the
// release built from other inputs are removed unless a testbed uses them.
func EnsureImage(ctx context.Context, cacheDir, release, mirror string, logf func(string, ...any)) (*Image, error) {
	if err := validRelease(release); err != nil {
		return nil, err
	}
	if mirror == "" {
		mirror = DefaultMirror
	}
	key := imageKey(release, mirror, buildScript, packageList)
	dir := filepath.Join(cacheDir, release+"-"+key)
	if img, err := loadImage(release, dir); err == nil {
		return img, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, release+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock image cache: %w", err)
	}
	if img, err := loadImage(release, dir); err == nil {
		return img, nil // built by someone else while we waited
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("vm: build image: %s not found (apt-get install mmdebstrap e2fsprogs openssh-client): %w", tool, err)
		}
	}
	start := time.Now()
	logf("image %s: building %s from %s (a few minutes; log %s.log)", release, dir, mirror, dir)
	if err := buildImage(ctx, release, mirror, dir); err != nil {
		return nil, err
	}
	img, err := loadImage(release, dir)
	if err != nil {
		return nil, err
	}
	logf("image %s: built in %v: %s", release, time.Since(start).Round(time.Second), strings.ReplaceAll(strings.TrimSpace(img.Versions), "\n", ", "))
	pruneImages(cacheDir, release, dir, logf)
	return img, nil
}

// buildImage runs build.sh into dir+".tmp" and renames it to dir once
// complete, so that a half-built image is never used.
func buildImage(ctx context.Context, release, mirror, dir string) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	script, packages := filepath.Join(tmp, "build.sh"), filepath.Join(tmp, "packages.txt")
	if err := os.WriteFile(script, buildScript, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(packages, packageList, 0o644); err != nil {
		return err
	}
	logPath := dir + ".log"
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.CommandContext(ctx, "sh", script, release, packages, tmp)
	cmd.Env = append(os.Environ(), "MIRROR="+mirror)
	cmd.Dir = tmp
	cmd.Stdout, cmd.Stderr = log, log
	// mmdebstrap and apt run below the shell: end the whole group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(logPath)
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("vm: build image %s: %w: %s", release, err, tail(string(b), 3000))
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), nil, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func loadImage(release, dir string) (*Image, error) {
	if _, err := os.Stat(filepath.Join(dir, "complete")); err != nil {
		return nil, err
	}
	v, err := os.ReadFile(filepath.Join(dir, "versions"))
	if err != nil {
		return nil, err
	}
	return &Image{Release: release, Dir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img"),
		Rootfs: filepath.Join(dir, "rootfs.img"), Key: filepath.Join(dir, "id_ed25519"), Versions: string(v)}, nil
}

// hold takes a shared lock on the image for as long as the returned file is
// open, so that pruneImages leaves it alone.
func (img *Image) hold() (*os.File, error) {
	f, err := os.Open(filepath.Join(img.Dir, "complete"))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// pruneImages removes images of release other than keep, and debris of
// killed builds, unless a testbed holds them.
func pruneImages(cacheDir, release, keep string, logf func(string, ...any)) {
	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(cacheDir, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), release+"-") || path == keep {
			continue
		}
		if f, err := os.Open(filepath.Join(path, "complete")); err == nil {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			f.Close()
			if err != nil {
				continue // in use
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		logf("image %s: removing %s (built from other inputs)", release, path)
		_ = os.RemoveAll(path)
		_ = os.Remove(path + ".log")
	}
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
