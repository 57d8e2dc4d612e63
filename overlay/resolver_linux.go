package overlay

// The name resolver's sockets. tenetd answers DNS queries of a tenant's
// containers in the tenant's own namespace, so that no other tenant can
// reach it: ResolverAddr/32 sits on the namespace's lo (the kernel answers
// ARP for it on every bridge, as for any local address), and one UDP socket
// bound to ResolverAddr:53 receives the queries of all the tenant's
// networks. The address on lo is not part of the planned state: Observe
// never reads lo, so no reconcile removes it, and it goes away with the
// namespace. It stays when tenetd stops, so that queries then meet a
// closed port (ICMP port unreachable: Docker's embedded DNS tries its
// next server at once) rather than a timeout.
//
// A non-egress network's bridge has no address and the namespace has no
// route to its containers: replies leave by the interface their query came
// in on (IP_PKTINFO's ifindex), which the kernel takes as on-link. TCP has
// no such per-packet choice, so each such network gets a TCP socket of its
// own bound to its bridge (SO_BINDTODEVICE): the kernel then sends the
// connection's packets out of that bridge, taking the container as on-link
// too. The namespace-wide TCP socket (for networks with egress, whose
// gateway subnet is the route back) and the per-bridge ones share the port
// by SO_REUSEPORT; a connection goes to the socket bound to the bridge it
// came in on, where there is one.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TenantNSID returns the identity of tenant's namespace; ok is false when
// it has none.
func (d *Datapath) TenantNSID(tenant string) (NSID, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(netnsDir, d.netnsName(tenant)), &st); err != nil {
		return 0, false
	}
	return NSID(st.Ino), true
}

// ResolverSockets are the resolver's sockets in one tenant's namespace,
// bound to ResolverAddr:53, and the namespace they live in.
type ResolverSockets struct {
	UDP *net.UDPConn
	TCP net.Listener
	NS  NSID
}

// ListenResolver opens the resolver's UDP and TCP sockets in tenant's
// namespace (which must exist), bound to ResolverAddr:53, after putting
// ResolverAddr on the namespace's lo (no-op if already so). It also turns
// off reverse path filtering there: a non-egress tenant namespace has no
// route back to its containers, and port guards already pin each
// container's source address. (Its TCP answers need a route back: they
// reach containers of networks with egress only; see ListenResolverOn.)
// The caller owns the sockets;
// they keep working only as long as the namespace they were made in
// (compare TenantNSID).
func (d *Datapath) ListenResolver(ctx context.Context, tenant string) (ResolverSockets, error) {
	path := filepath.Join(netnsDir, d.netnsName(tenant))
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ResolverSockets{}, fmt.Errorf("resolver for tenant %s: open namespace %s: %w", tenant, path, err)
	}
	defer ns.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(ns), &st); err != nil {
		return ResolverSockets{}, fmt.Errorf("resolver for tenant %s: %w", tenant, err)
	}
	c, l, err := listenResolverIn(ctx, ns, true)
	if err != nil {
		return ResolverSockets{}, fmt.Errorf("resolver for tenant %s: %w", tenant, err)
	}
	return ResolverSockets{UDP: c, TCP: l, NS: NSID(st.Ino)}, nil
}

// ListenHostResolver opens the resolver's UDP socket in the host namespace
// (ResolverAddr on its lo, no-op if already so), where containers on
// Docker's own networks and host-network containers reach it once the
// engine names ResolverAddr as its DNS server.
func (d *Datapath) ListenHostResolver(ctx context.Context) (*net.UDPConn, error) {
	ns, err := netns.GetFromPath(filepath.Join("/proc/self/fd", fmt.Sprint(int(d.host.ns))))
	if err != nil {
		return nil, fmt.Errorf("host resolver: %w", err)
	}
	defer ns.Close()
	c, _, err := listenResolverIn(ctx, ns, false)
	if err != nil {
		return nil, fmt.Errorf("host resolver: %w", err)
	}
	return c, nil
}

// listenResolverIn opens the UDP socket, and in a tenant's namespace the
// TCP one too.
func listenResolverIn(ctx context.Context, ns netns.NsHandle, tenant bool) (*net.UDPConn, net.Listener, error) {
	var conn *net.UDPConn
	var ln net.Listener
	err := nsDo(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ResolverAddr.AsSlice()), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrReplace(lo, a); err != nil {
			return fmt.Errorf("add %s to lo: %w", ResolverAddr, err)
		}
		if tenant {
			for _, key := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
				if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("set %s=0: %w", key, err)
				}
			}
			links, err := netlink.LinkList()
			if err != nil {
				return fmt.Errorf("list links: %w", err)
			}
			for _, l := range links {
				if l.Type() == "bridge" {
					key := filepath.Join("/proc/sys/net/ipv4/conf", l.Attrs().Name, "rp_filter")
					if err := os.WriteFile(key, []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
						return fmt.Errorf("set %s=0: %w", key, err)
					}
				}
			}
		}
		var lc net.ListenConfig
		at := netip.AddrPortFrom(ResolverAddr, 53).String()
		pc, err := lc.ListenPacket(ctx, "udp4", at)
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		if tenant {
			tcp := net.ListenConfig{Control: reusePort} // shared with ListenResolverOn's
			if ln, err = tcp.Listen(ctx, "tcp4", at); err != nil {
				conn.Close()
				return err
			}
		}
		return nil
	})
	return conn, ln, err
}

// ListenResolverOn opens a TCP socket bound to ResolverAddr:53 in tenant's
// namespace and to the bridge of network vni (which must exist), for the
// containers of a network without egress: its answers leave by that
// bridge, with no route back needed. ListenResolver must have put
// ResolverAddr in place first. The caller owns the listener; it stays
// bound to the bridge it was made on, not to one made later with the same
// name.
func (d *Datapath) ListenResolverOn(ctx context.Context, tenant string, vni uint32) (net.Listener, error) {
	path := filepath.Join(netnsDir, d.netnsName(tenant))
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("resolver for tenant %s: open namespace %s: %w", tenant, path, err)
	}
	defer ns.Close()
	br := bridgeName(vni)
	var ln net.Listener
	err = nsDo(ns, func() error {
		lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
			if err := reusePort(network, address, c); err != nil {
				return err
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), br) }); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("bind to %s: %w", br, serr)
			}
			return nil
		}}
		ln, err = lc.Listen(ctx, "tcp4", netip.AddrPortFrom(ResolverAddr, 53).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resolver for tenant %s on %s: %w", tenant, br, err)
	}
	return ln, nil
}

// reusePort lets the resolver's TCP sockets of one namespace share port 53
// (each bound to a different bridge, or to none).
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", serr)
	}
	return nil
}

// hostDNSTable is the host namespace's table that sends queries to
// ResolverAddr straight to the host's upstream server.
const hostDNSTable = "tenet-dns"

// RedirectHostResolver makes queries to ResolverAddr:53 (UDP and TCP) in
// the host namespace, from Docker's own networks and the host's processes
// (never from a tenant's uplink), go straight to upstream by DNAT, so that
// the engine's dns setting costs them nothing and keeps working while
// tenetd is down. The table is replaced whole in one transaction (no-op in
// effect if already so); an invalid upstream, or a loopback one (which a
// bridged container cannot be translated to), removes it: the host
// socket (ListenHostResolver) forwards those queries then.
func (d *Datapath) RedirectHostResolver(upstream netip.AddrPort) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.host.tables()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: hostDNSTable}
	c.AddTable(t)
	c.DelTable(t)
	ok := upstream.IsValid() && upstream.Addr().Is4() && !upstream.Addr().IsLoopback() && upstream.Addr() != ResolverAddr
	if ok {
		c.AddTable(t)
		res, up := ResolverAddr.As4(), upstream.Addr().As4()
		pre := baseChain(c, t, "pre", nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT, 0)
		out := baseChain(c, t, "out", nftables.ChainHookOutput, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT, 0)
		for _, ch := range []*nftables.Chain{pre, out} {
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				var es []expr.Any
				if ch == pre {
					es = ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, hostUplinkPref)
				}
				es = append(es, daddr(), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: res[:]},
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
					&expr.Immediate{Register: 1, Data: up[:]},
					&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(upstream.Port())},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es})
			}
		}
	}
	if err := d.host.flush(c); err != nil {
		return fmt.Errorf("host resolver redirect to %v: %w", upstream, err)
	}
	return nil
}
