package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BuildPackage builds Tenet's Debian package with scripts/package/deb.sh
// into dir and returns its path.
func BuildPackage(ctx context.Context, dir string) (string, error) {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" || strings.TrimSpace(string(mod)) == os.DevNull {
		return "", fmt.Errorf("find module root (run from the Tenet repository): %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "package", "deb.sh"), dir)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("scripts/package/deb.sh: %w: %s", err, tail(stderr, 2000))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	deb := lines[len(lines)-1]
	if !filepath.IsAbs(deb) {
		deb = filepath.Join(root, deb)
	}
	return deb, nil
}

// InstallTenet installs and starts Tenet on every VM as the README tells an
// admin to: dpkg -i the project's package; one cluster key made with
// `tenetd genkey` on the first host and copied to the others; in
// /etc/default/tenetd the host's underlay address, the other hosts to join
// and all hosts as IPAM seeds (the name is the host name), and
// EgressTarget as the one underlay address tenants may reach, and
// WireGuardRotate as the preshared keys' rotation (short, so that the
// suite sees many); then
// `systemctl enable --now tenetd` (whose unit puts tenetd's resolver first
// in /etc/docker/daemon.json's "dns"), and `systemctl restart docker` for
// the engine to read it. It returns once every tenetd serves Docker's
// plugin socket and every engine runs again.
func (tb *Testbed) InstallTenet(ctx context.Context) error {
	deb, err := BuildPackage(ctx, tb.Dir)
	if err != nil {
		return err
	}
	tb.logf("package %s", filepath.Base(deb))
	guestDeb := GuestDir + "/" + filepath.Base(deb)
	if err := tb.each(func(h *Host) error {
		if err := h.Upload(ctx, deb, guestDeb); err != nil {
			return err
		}
		_, err := h.Run(ctx, "dpkg", "-i", guestDeb)
		return err
	}); err != nil {
		return err
	}
	key, err := tb.Hosts[0].Run(ctx, "tenetd", "genkey")
	if err != nil {
		return err
	}
	var names []string
	for _, h := range tb.Hosts {
		names = append(names, h.Name())
	}
	return tb.each(func(h *Host) error {
		if err := h.WriteFile(ctx, "/etc/tenet/key", []byte(key), 0o600); err != nil {
			return err
		}
		var join []string
		for _, o := range tb.Hosts {
			if o != h {
				join = append(join, o.Underlay().Addr().String())
			}
		}
		// Tenants reach no address of the underlay network but those
		// listed: the testbed's bridge stands for a server beyond it.
		opts := fmt.Sprintf("TENETD_OPTS=\"--vtep %s --join %s --ipam-seeds %s --allow-egress %s --wireguard-rotate %s\"\n", h.Underlay().Addr(),
			strings.Join(join, ","), strings.Join(names, ","), EgressTarget, WireGuardRotate)
		if err := h.WriteFile(ctx, "/etc/default/tenetd", []byte(opts), 0o644); err != nil {
			return err
		}
		if _, err := h.Run(ctx, "systemctl", "enable", "--now", "tenetd"); err != nil {
			st, _ := h.Run(ctx, "journalctl", "-u", "tenetd", "--no-pager", "-n", "50")
			return fmt.Errorf("%w\n%s", err, st)
		}
		if err := h.awaitUnit(ctx, "tenetd", time.Minute); err != nil {
			return err
		}
		if _, err := h.Run(ctx, "systemctl", "restart", "docker"); err != nil {
			st, _ := h.Run(ctx, "journalctl", "-u", "docker", "--no-pager", "-n", "50")
			return fmt.Errorf("restart docker: %w\n%s", err, st)
		}
		return h.awaitUnit(ctx, "docker", time.Minute)
	})
}

// awaitUnit waits until unit is active.
func (h *Host) awaitUnit(ctx context.Context, unit string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := h.Run(ctx, "systemctl", "is-active", unit)
		if err == nil && strings.TrimSpace(out) == "active" {
			return nil
		}
		if time.Now().After(deadline) {
			st, _ := h.Run(ctx, "journalctl", "-u", unit, "--no-pager", "-n", "50")
			return fmt.Errorf("%s: %s not active after %v (%q)\n%s", h.name, unit, limit, strings.TrimSpace(out), st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
