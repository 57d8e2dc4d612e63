package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Published ports hold a socket each, and the host's iptables get Tenet's
// accepts.
//
// A reservation is a socket bound to the published address and port,
// without SO_REUSEADDR, that never listens and is never read: no other
// program can bind the port while Tenet publishes it (Docker's own -p
// binds its ports the same way, so each refuses the other's), and
// publishing a port another program holds fails before any rule leads
// to it. Traffic never reaches the socket: the translation to the
// container comes before local delivery. The sockets live in this
// process; a restarted tenetd binds them again while the rules, in the
// kernel, keep the ports working.
//
// iptables: the host's filter table may drop forwarded packets by default
// (Docker sets FORWARD's policy to DROP when it turns forwarding on, and
// host firewalls do the same). An nf_tables accept in Tenet's own table
// cannot overrule that: every base chain on a hook must accept a packet.
// So Tenet adds its accepts where the filter table's users add theirs,
// through the iptables command (which talks to whichever backend Docker
// uses): a chain TENET-FORWARD that FORWARD jumps to first (right after
// Docker's jump to DOCKER-USER, so an admin's rules there still come
// first, and Docker puts its jump back on top when it rearranges),
// accepting what comes out of an uplink (Tenet's own rules, earlier, drop
// what tenants may not reach), replies into one, and translated published
// ports. It comes and goes with the host's rule set.

// reserve binds a socket to r inside ns.
func reserve(ns netns.NsHandle, r Reservation) (int, error) {
	fd := -1
	err := nsDo(ns, func() error {
		typ := unix.SOCK_STREAM
		if r.Proto == UDP {
			typ = unix.SOCK_DGRAM
		}
		s, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(s, &unix.SockaddrInet4{Port: int(r.Port), Addr: r.IP.As4()}); err != nil {
			unix.Close(s)
			return err
		}
		fd = s
		return nil
	})
	if errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return -1, &PortInUseError{Res: r, NotLocal: errors.Is(err, unix.EADDRNOTAVAIL), Err: err}
	}
	if err != nil {
		return -1, fmt.Errorf("reserve %s: %w", r, err)
	}
	return fd, nil
}

// iptables runs the iptables command in ns and returns its output.
func iptables(ns netns.NsHandle, path string, args ...string) (string, error) {
	var out string
	err := nsDo(ns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, path, append([]string{"-w", "5"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		out = stdout.String()
		if err != nil {
			return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil
	})
	return out, err
}

// observeFilter reads Tenet's accepts: "" if there are none, else a digest
// of what is there (filterDigest() when it is as wanted).
func observeFilter(ns netns.NsHandle, path string) string {
	_, jumpErr := iptables(ns, path, "-C", "FORWARD", "-j", filterChain)
	out, err := iptables(ns, path, "-S", filterChain)
	if err != nil && jumpErr != nil {
		return "" // no chain, no jump
	}
	var rules []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	if err != nil || jumpErr != nil {
		rules = append(rules, "incomplete")
	}
	return digest(append([]string{"filter-v1"}, rules...)...)
}

// setFilter makes Tenet's accepts as wanted (on), or removes them.
func setFilter(ns netns.NsHandle, path string, on bool) error {
	_, err := iptables(ns, path, "-S", filterChain)
	exists := err == nil
	if !exists && !on {
		return nil
	}
	if exists {
		for {
			if _, err := iptables(ns, path, "-D", "FORWARD", "-j", filterChain); err != nil {
				break // no (more) jumps
			}
		}
		if _, err := iptables(ns, path, "-F", filterChain); err != nil {
			return err
		}
		if !on {
			_, err := iptables(ns, path, "-X", filterChain)
			return err
		}
	} else if _, err := iptables(ns, path, "-N", filterChain); err != nil {
		return err
	}
	for _, r := range filterRules {
		if _, err := iptables(ns, path, strings.Fields(r)...); err != nil {
			return err
		}
	}
	_, err = iptables(ns, path, "-I", "FORWARD", fmt.Sprint(jumpPosition(ns, path)), "-j", filterChain)
	return err
}

// jumpPosition is where the jump to Tenet's chain goes in FORWARD: right
// after Docker's jump to DOCKER-USER (an admin's rules come first), else
// first.
func jumpPosition(ns netns.NsHandle, path string) int {
	out, err := iptables(ns, path, "-S", "FORWARD")
	if err != nil {
		return 1
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "-A FORWARD ") {
			continue
		}
		n++
		if strings.TrimSpace(l) == "-A FORWARD -j DOCKER-USER" {
			return n + 1
		}
	}
	return 1
}
