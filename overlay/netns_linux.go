package overlay

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/nftables"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are pinned (as iproute2 does).
const netnsDir = "/run/netns"

// nsNet is an open network namespace and the netlink handle that works in
// it, with nf_tables and raw netlink sockets opened there on first use.
// Close releases them all. Used under Datapath.mu only.
type nsNet struct {
	ns  netns.NsHandle
	h   *netlink.Handle
	nft *nftables.Conn // lasting
	nf  *mnl.Conn      // raw NETLINK_NETFILTER
	rt  *mnl.Conn      // raw NETLINK_ROUTE
}

// tables returns the namespace's nf_tables connection.
func (n *nsNet) tables() (*nftables.Conn, error) {
	if n.nft != nil {
		return n.nft, nil
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(n.ns)), nftables.AsLasting(), nftables.WithSockOptions(forceBuffers))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	n.nft = c
	return c, nil
}

// flush sends c's batch; after a failure the connection is dropped, so
// that no answer left unread in its socket confuses the next request.
func (n *nsNet) flush(c *nftables.Conn) error {
	err := c.Flush()
	if err != nil {
		_ = c.CloseLasting()
		if n.nft == c {
			n.nft = nil
		}
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

// raw returns the namespace's raw netlink socket of family
// (NETLINK_NETFILTER or NETLINK_ROUTE).
func (n *nsNet) raw(family int) (*mnl.Conn, error) {
	p := &n.nf
	if family == unix.NETLINK_ROUTE {
		p = &n.rt
	}
	if *p != nil {
		return *p, nil
	}
	c, err := dialRaw(n.ns, family)
	if err != nil {
		return nil, err
	}
	if err := forceBuffers(c); err != nil {
		_ = c.Close()
		return nil, err
	}
	*p = c
	return c, nil
}

// dropRaw closes the raw socket of family after an error.
func (n *nsNet) dropRaw(family int) {
	p := &n.nf
	if family == unix.NETLINK_ROUTE {
		p = &n.rt
	}
	if *p != nil {
		_ = (*p).Close()
		*p = nil
	}
}

func openNS(path string) (*nsNet, error) {
	var ns netns.NsHandle
	var err error
	if path == "" {
		ns, err = netns.Get()
	} else {
		ns, err = netns.GetFromPath(path)
	}
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	return &nsNet{ns: ns, h: h}, nil
}

func (n *nsNet) Close() {
	if n.nft != nil {
		_ = n.nft.CloseLasting()
	}
	for _, c := range []*mnl.Conn{n.nf, n.rt} {
		if c != nil {
			_ = c.Close()
		}
	}
	n.h.Close()
	n.ns.Close()
}

// onOwnThread runs fn on a fresh OS thread locked for the call, and puts
// the thread back into its original network namespace afterwards (fn may
// leave it elsewhere). If that fails, the thread stays locked so that Go
// discards it rather than reuse a thread in the wrong namespace.
func onOwnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to original namespace: %w", err))
			return // the thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// nsDo runs fn inside ns, on a thread of its own.
func nsDo(ns netns.NsHandle, fn func() error) error {
	return onOwnThread(func() error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		return fn()
	})
}

// CreateNamedNetns creates a network namespace pinned at /run/netns/name,
// as "ip netns add" does, without moving any thread of the caller's into it
// for longer than the call (tests make their namespaces with it too).
func CreateNamedNetns(name string) error { return createNamedNS(name) }

// createNamedNS creates a network namespace pinned at netnsDir/name, without
// moving any thread of ours into it for longer than the call.
func createNamedNS(name string) error {
	return onOwnThread(func() error {
		ns, err := netns.NewNamed(name) // leaves this thread in the new namespace
		if err == nil {
			ns.Close()
		}
		return err
	})
}

// deleteNamedNS unpins netnsDir/name; the namespace and all in it go away
// once nothing else holds it. No-op if it does not exist.
func deleteNamedNS(name string) error {
	err := netns.DeleteNamed(name)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
	}
	return err
}

// writeSysctl writes value to /proc/sys/<key> inside ns. A key the kernel
// lacks (IPv6 compiled out) is not an error.
func writeSysctl(ns netns.NsHandle, key, value string) error {
	return nsDo(ns, func() error {
		err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	})
}

// readSysctl reads /proc/sys/<key> inside ns; "" if the key does not exist.
func readSysctl(ns netns.NsHandle, key string) (string, error) {
	var v string
	err := nsDo(ns, func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// dump retries a netlink dump that the kernel interrupted because the table
// changed under it.
func dump[T any](fn func() ([]T, error)) ([]T, error) {
	var err error
	for range 3 {
		var out []T
		out, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}
