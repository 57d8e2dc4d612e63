package overlay

// The crypt namespace and its WireGuard device (crypt.go says why). The
// device is configured over WireGuard's generic netlink family
// (golang.zx2c4.com/wireguard/wgctrl), through a socket opened inside the
// crypt namespace; its links, addresses and routes through rtnetlink as
// everywhere else.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// cryptNS is the open crypt namespace, with a WireGuard client whose
// socket lives in it (opened on first use, once the device exists).
type cryptNS struct {
	*nsNet
	wg *wgctrl.Client
}

func (c *cryptNS) Close() {
	if c.wg != nil {
		_ = c.wg.Close()
	}
	c.nsNet.Close()
}

// client returns the WireGuard client of the namespace. It must be made
// after the module is loaded (a device made), as it looks the family up
// once.
func (c *cryptNS) client() (*wgctrl.Client, error) {
	if c.wg != nil {
		return c.wg, nil
	}
	var cl *wgctrl.Client
	err := nsDo(c.ns, func() error {
		var err error
		cl, err = wgctrl.New()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wireguard netlink: %w", err)
	}
	c.wg = cl
	return cl, nil
}

func (d *Datapath) cryptNetnsName() string { return d.cfg.NetnsPrefix + cryptNetnsSuffix }

// cryptLocked opens (once) the crypt namespace: nil if there is none. A
// handle to a namespace that is no longer the pinned one is dropped.
func (d *Datapath) cryptLocked() (*cryptNS, error) {
	path := netnsDir + "/" + d.cryptNetnsName()
	if d.crypt != nil {
		cur, err := netns.GetFromPath(path)
		same := err == nil && cur.Equal(d.crypt.ns)
		if err == nil {
			cur.Close()
		}
		if same {
			return d.crypt, nil
		}
		d.forgetCryptLocked()
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("overlay: crypt namespace: %w", err)
	}
	n, err := openNS(path)
	if err != nil {
		return nil, fmt.Errorf("overlay: open crypt namespace %s: %w", d.cryptNetnsName(), err)
	}
	d.crypt = &cryptNS{nsNet: n}
	return d.crypt, nil
}

func (d *Datapath) forgetCryptLocked() {
	if d.crypt != nil {
		d.crypt.Close()
		d.crypt = nil
	}
}

// probeWireGuard creates and deletes a WireGuard device (never brought up)
// in the host namespace to learn whether this kernel has WireGuard.
func (d *Datapath) probeWireGuard() error {
	name := fmt.Sprintf("tnwgprobe%d", rand.Uint32()%100000)
	err := d.host.h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("wireguard: %w", ErrNotSupported)
		}
		return fmt.Errorf("overlay: probe wireguard: %w", err)
	}
	return delByName(d.host, name)
}

// CryptSupport says whether this kernel can carry encrypted networks: nil,
// or an error wrapping ErrNotSupported ("wireguard: not supported by this
// kernel"). Probed once, by New.
func (d *Datapath) CryptSupport() error { return d.cryptErr }

// WireGuardPort is Config.WireGuardPort: where this host's encrypted
// traffic arrives.
func (d *Datapath) WireGuardPort() uint16 { return d.cfg.WireGuardPort }

// ObserveCrypt reads the crypt namespace alone: nil if there is none. An
// earlier run's key and peers are there, for the next run to keep.
func (d *Datapath) ObserveCrypt(ctx context.Context) (*CryptObjects, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("overlay: datapath is closed")
	}
	return d.observeCryptLocked()
}

// familyOf is netlink's family of a.
func familyOf(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func defaultDst(a netip.Addr) *net.IPNet {
	if familyOf(a) == netlink.FAMILY_V4 {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// observeCryptLocked reads the crypt namespace: nil if there is none.
func (d *Datapath) observeCryptLocked() (*CryptObjects, error) {
	c, err := d.cryptLocked()
	if err != nil || c == nil {
		return nil, err
	}
	out := &CryptObjects{Peers: map[PublicKey]WGPeer{}}
	l, err := linkByName(c.nsNet, wgName)
	if err != nil {
		return nil, fmt.Errorf("overlay: crypt namespace: %w", err)
	}
	if l == nil || l.Type() != "wireguard" {
		return out, nil
	}
	dev := WGDevice{MTU: l.Attrs().MTU, Up: l.Attrs().Flags&net.FlagUp != 0}
	family := familyOf(d.cfg.VTEP)
	addrs, err := c.h.AddrList(l, family)
	if err != nil {
		return nil, fmt.Errorf("overlay: addresses of %s: %w", wgName, err)
	}
	var global []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixFrom(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			global = append(global, p)
		}
	}
	if len(global) == 1 {
		dev.Addr = global[0] // else left unset: made right by OpCryptSet
	}
	routes, err := c.h.RouteList(l, family)
	if err != nil {
		return nil, fmt.Errorf("overlay: routes of %s: %w", wgName, err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == defaultDst(d.cfg.VTEP).String() {
			dev.Route = true
		}
	}
	cl, err := c.client()
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	wd, err := cl.Device(wgName)
	if err != nil {
		return nil, fmt.Errorf("overlay: read wireguard device %s: %w", wgName, err)
	}
	dev.Key, dev.Port = PrivateKey(wd.PrivateKey), uint16(wd.ListenPort)
	out.Device = dev
	for _, p := range wd.Peers {
		peer := WGPeer{Key: PublicKey(p.PublicKey), PSK: PresharedKey(p.PresharedKey)}
		if p.Endpoint != nil {
			if ip, ok := netipFrom(p.Endpoint.IP); ok {
				peer.Endpoint = netip.AddrPortFrom(ip, uint16(p.Endpoint.Port))
			}
		}
		if len(p.AllowedIPs) == 1 {
			peer.Allowed, _ = prefixFrom(&p.AllowedIPs[0]) // else unset: set anew
		}
		out.Peers[peer.Key] = peer
	}
	return out, nil
}

// cryptSocketCheck returns whether a VXLAN device of namespace t, by the
// netns ID of its socket's namespace (IFLA_LINK_NETNSID, as listed), has
// its socket in the crypt namespace. Call it after listing the devices:
// listing them assigns the ID.
func (d *Datapath) cryptSocketCheck(t *nsNet) (func(nsid int) bool, error) {
	c, err := d.cryptLocked()
	if err != nil || c == nil {
		return func(int) bool { return false }, err
	}
	var id int
	known := false
	return func(nsid int) bool {
		if nsid < 0 {
			return false
		}
		if !known {
			id, err = t.h.GetNetNsIdByFd(int(c.ns))
			if err != nil {
				id = -1
			}
			known = true
		}
		return id >= 0 && nsid == id
	}, nil
}

// cryptSet makes the crypt namespace and its WireGuard device as w says.
// The device is made in the host namespace, so that WireGuard's socket is
// on the underlay, then moved in.
func (a *applier) cryptSet(w WGDevice) error {
	d := a.d
	if d.cryptErr != nil {
		return fmt.Errorf("set up the crypt namespace: %w", d.cryptErr)
	}
	c, err := d.cryptLocked()
	if err != nil {
		return err
	}
	if c == nil {
		name := d.cryptNetnsName()
		if err := createNamedNS(name); err != nil {
			return fmt.Errorf("create crypt namespace %s: %w", name, err)
		}
		a.undo = append(a.undo, func() {
			d.forgetCryptLocked()
			_ = deleteNamedNS(name)
		})
		if c, err = d.cryptLocked(); err != nil {
			return err
		}
		if c == nil {
			return fmt.Errorf("crypt namespace %s vanished as it was made", name)
		}
		if err := nsDo(c.ns, func() error {
			return netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}})
		}); err != nil {
			return fmt.Errorf("set lo up in crypt namespace: %w", err)
		}
	}
	l, err := linkByName(c.nsNet, wgName)
	if err != nil {
		return err
	}
	if l != nil && l.Type() != "wireguard" {
		if err := delByName(c.nsNet, wgName); err != nil {
			return fmt.Errorf("delete %s (a %s, not wireguard): %w", wgName, l.Type(), err)
		}
		l = nil
	}
	if l == nil {
		host := d.host
		err := host.h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: wgName, MTU: w.MTU, Alias: ownerAlias}})
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("wireguard: %w", ErrNotSupported)
		}
		if err != nil {
			return fmt.Errorf("create %s: %w", wgName, err)
		}
		hl, err := host.h.LinkByName(wgName)
		if err == nil {
			err = host.h.LinkSetNsFd(hl, int(c.ns))
		}
		if err != nil {
			_ = delByName(host, wgName)
			return fmt.Errorf("move %s into the crypt namespace: %w", wgName, err)
		}
		a.undo = append(a.undo, func() { _ = delByName(c.nsNet, wgName) })
		if l, err = c.h.LinkByName(wgName); err != nil {
			return err
		}
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	key, port := wgtypes.Key(w.Key), int(w.Port)
	if err := cl.ConfigureDevice(wgName, wgtypes.Config{PrivateKey: &key, ListenPort: &port}); err != nil {
		return fmt.Errorf("set key and listen port %d of %s: %w", w.Port, wgName, err)
	}
	if l.Attrs().MTU != w.MTU {
		if err := c.h.LinkSetMTU(l, w.MTU); err != nil {
			return fmt.Errorf("set %s mtu %d: %w", wgName, w.MTU, err)
		}
	}
	if err := setOnlyAddrOf(c.nsNet, l, w.Addr); err != nil {
		return fmt.Errorf("set %s address %s: %w", wgName, w.Addr, err)
	}
	if err := c.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", wgName, err)
	}
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: defaultDst(w.Addr.Addr()), Scope: netlink.SCOPE_LINK}
	if err := c.h.RouteReplace(r); err != nil {
		return fmt.Errorf("default route through %s: %w", wgName, err)
	}
	return nil
}

// setOnlyAddrOf makes want the link's only address of its family (IPv6
// ones without duplicate address detection, and link-local ones kept).
func setOnlyAddrOf(n *nsNet, link netlink.Link, want netip.Prefix) error {
	addrs, err := n.h.AddrList(link, familyOf(want.Addr()))
	if err != nil {
		return err
	}
	found := false
	for _, a := range addrs {
		p, ok := prefixFrom(a.IPNet)
		if ok && p == want {
			found = true
			continue
		}
		if ok && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := n.h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
	}
	if found {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), want.Addr().BitLen())}}
	if familyOf(want.Addr()) == netlink.FAMILY_V6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	return n.h.AddrReplace(link, addr)
}

// peerSet adds or changes a peer of the WireGuard device.
func (a *applier) peerSet(p WGPeer) error {
	c, err := a.d.cryptLocked()
	if err == nil && c == nil {
		err = errors.New("no crypt namespace")
	}
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	ep := &net.UDPAddr{IP: p.Endpoint.Addr().AsSlice(), Port: int(p.Endpoint.Port())}
	allowed := net.IPNet{IP: p.Allowed.Addr().AsSlice(), Mask: net.CIDRMask(p.Allowed.Bits(), p.Allowed.Addr().BitLen())}
	psk := wgtypes.Key(p.PSK) // all zero: none
	err = cl.ConfigureDevice(wgName, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: wgtypes.Key(p.Key), Endpoint: ep,
		PresharedKey: &psk, ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{allowed}}}})
	return wrap(err, "set wireguard peer %s (%s)", p.Key, p.Endpoint)
}

// peerDel removes a peer of the WireGuard device; no-op if it has none.
func (a *applier) peerDel(p WGPeer) error {
	c, err := a.d.cryptLocked()
	if err != nil || c == nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	err = cl.ConfigureDevice(wgName, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: wgtypes.Key(p.Key), Remove: true}}})
	return wrap(err, "remove wireguard peer %s", p.Key)
}

// cryptDel deletes the crypt namespace. The WireGuard device goes first,
// at once: the kernel tears an unpinned namespace down asynchronously, and
// until then the device would hold its port on the underlay.
func (a *applier) cryptDel() error {
	d := a.d
	c, err := d.cryptLocked()
	if err != nil {
		return err
	}
	if c != nil {
		if err := delByName(c.nsNet, wgName); err != nil {
			return fmt.Errorf("delete %s: %w", wgName, err)
		}
		d.forgetCryptLocked()
	}
	return wrap(deleteNamedNS(d.cryptNetnsName()), "delete crypt namespace %s", d.cryptNetnsName())
}
