package overlay

// Raw nfnetlink and rtnetlink reads that the libraries lack: getting one
// set element, one FDB entry or one neighbour by key (not a dump), and the
// user data of a table's rules in one dump. A scoped reconcile reads its
// objects with these, so its cost does not grow with the rest of the table.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dialRaw opens a netlink socket of family (NETLINK_NETFILTER or
// NETLINK_ROUTE) in ns.
func dialRaw(ns netns.NsHandle, family int) (*mnl.Conn, error) {
	return mnl.Dial(family, &mnl.Config{NetNS: int(ns)})
}

// nfgen is the nfgenmsg header of every nf_tables message.
func nfgen(family byte) []byte { return []byte{family, unix.NFNETLINK_V0, 0, 0} }

// nftGetElem reports whether set of table (family) holds key. A missing
// table or set is an error.
func nftGetElem(c *mnl.Conn, family byte, table, set string, key []byte) (bool, error) {
	ae := mnl.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(l *mnl.AttributeEncoder) error {
		l.Nested(unix.NFTA_LIST_ELEM, func(e *mnl.AttributeEncoder) error {
			e.Nested(unix.NFTA_SET_ELEM_KEY, func(k *mnl.AttributeEncoder) error {
				k.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	ok, err := nftGet(c, unix.NFT_MSG_GETSETELEM, family, ae)
	if err != nil {
		return false, fmt.Errorf("get element of set %s: %w", set, err)
	}
	return ok, nil
}

// nftGet sends one nf_tables get request (not a dump) of msgType with the
// attributes of ae, and reports whether the object exists.
func nftGet(c *mnl.Conn, msgType int, family byte, ae *mnl.AttributeEncoder) (bool, error) {
	data, err := ae.Encode()
	if err != nil {
		return false, err
	}
	_, err = c.Execute(mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType), Flags: mnl.Request},
		Data:   append(nfgen(family), data...),
	})
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// nftRuleTags dumps rules of family in one request: those of table (of
// its chain if chain is not ""), or, if table is "", those of every table
// whose name starts with prefix. It returns each chain's rules' user data
// in order. A missing table or chain yields nil, no error.
func nftRuleTags(c *mnl.Conn, family byte, table, prefix, chain string) (map[string][]string, error) {
	ae := mnl.NewAttributeEncoder()
	if table != "" {
		ae.String(unix.NFTA_RULE_TABLE, table)
		if chain != "" {
			ae.String(unix.NFTA_RULE_CHAIN, chain)
		}
	}
	data, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msgs, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: mnl.Request | mnl.Dump},
		Data: append(nfgen(family), data...),
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list rules of table %s: %w", table, err)
	}
	out := map[string][]string{}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := mnl.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, err
		}
		var tbl, ch, tag string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_TABLE:
				tbl = ad.String()
			case unix.NFTA_RULE_CHAIN:
				ch = ad.String()
			case unix.NFTA_RULE_USERDATA:
				tag = string(ad.Bytes())
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		if table == "" && !strings.HasPrefix(tbl, prefix) {
			continue
		}
		out[ch] = append(out[ch], tag)
	}
	return out, nil
}

// fdbGet returns the destination of the forwarding entry for mac on the
// VXLAN device index (its first, for a MAC with several), ok false if there
// is none.
func fdbGet(c *mnl.Conn, index int, mac net.HardwareAddr) (netip.Addr, bool, error) {
	ae := mnl.NewAttributeEncoder()
	ae.Bytes(unix.NDA_LLADDR, mac)
	n, ok, err := neighGet(c, unix.AF_BRIDGE, index, netlink.NTF_SELF, ae)
	if err != nil || !ok {
		return netip.Addr{}, false, err
	}
	dst, ok := netipFrom(n.IP)
	return dst, ok, nil
}

// neighIPGet returns the neighbour entry of ip on device index, ok false if
// there is none.
func neighIPGet(c *mnl.Conn, index int, ip netip.Addr) (*netlink.Neigh, bool, error) {
	family := byte(unix.AF_INET)
	if ip.Is6() {
		family = unix.AF_INET6
	}
	ae := mnl.NewAttributeEncoder()
	ae.Bytes(unix.NDA_DST, ip.AsSlice())
	return neighGet(c, family, index, 0, ae)
}

func neighGet(c *mnl.Conn, family byte, index int, flags byte, attrs *mnl.AttributeEncoder) (*netlink.Neigh, bool, error) {
	data, err := attrs.Encode()
	if err != nil {
		return nil, false, err
	}
	hdr := make([]byte, 12) // struct ndmsg
	hdr[0] = family
	binary.NativeEndian.PutUint32(hdr[4:8], uint32(index))
	hdr[10] = flags
	msgs, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: unix.RTM_GETNEIGH, Flags: mnl.Request},
		Data:   append(hdr, data...),
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWNEIGH {
			continue
		}
		n, err := netlink.NeighDeserialize(m.Data)
		if err != nil {
			return nil, false, err
		}
		return n, true, nil
	}
	return nil, false, nil
}

// forceBuffers makes a netlink socket's buffers large (as root, past the
// system's maximum): a batch that echoes its rules, or a large dump, must
// not overflow them (ENOBUFS).
func forceBuffers(c *mnl.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 8<<20); e != nil {
				serr = e
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// linkDelGroup deletes every link of group in one request, so that the
// kernel unregisters them in one batch (one at a time, each VXLAN device
// or bridge takes tens of milliseconds). No-op if the group is empty.
func linkDelGroup(c *mnl.Conn, group uint32) error {
	ae := mnl.NewAttributeEncoder()
	ae.Uint32(unix.IFLA_GROUP, group)
	data, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = c.Execute(mnl.Message{
		Header: mnl.Header{Type: unix.RTM_DELLINK, Flags: mnl.Request | mnl.Acknowledge},
		Data:   append(make([]byte, unix.SizeofIfInfomsg), data...),
	})
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// linkAddrs4 returns the IPv4 addresses of the link with index in t, in
// the kernel's order. It asks the kernel for that link's addresses only
// (a strictly checked dump with the index set); the library's listing
// dumps every link's and filters, a cost that grows with the links in
// the namespace (a tenant's thousand endpoints).
func linkAddrs4(t *nsNet, index int) ([]netip.Prefix, error) {
	c, err := t.raw(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	out, err := addrDump4(c, index)
	if err != nil {
		t.dropRaw(unix.NETLINK_ROUTE)
		return nil, fmt.Errorf("addresses of link %d: %w", index, err)
	}
	return out, nil
}

func addrDump4(c *mnl.Conn, index int) ([]netip.Prefix, error) {
	// Strict checking makes the kernel honour the index in a dump; it is
	// off again after, as the socket's other requests were written
	// without it.
	if err := c.SetOption(mnl.GetStrictCheck, true); err != nil {
		return nil, err
	}
	hdr := make([]byte, 8) // struct ifaddrmsg
	hdr[0] = unix.AF_INET
	binary.NativeEndian.PutUint32(hdr[4:8], uint32(index))
	msgs, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: unix.RTM_GETADDR, Flags: mnl.Request | mnl.Dump},
		Data:   hdr,
	})
	if serr := c.SetOption(mnl.GetStrictCheck, false); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < 8 {
			continue
		}
		// A kernel that ignores the index sends every link's: the
		// family and index are checked here too.
		if m.Data[0] != unix.AF_INET || binary.NativeEndian.Uint32(m.Data[4:8]) != uint32(index) {
			continue
		}
		bits := int(m.Data[1])
		ad, err := mnl.NewAttributeDecoder(m.Data[8:])
		if err != nil {
			return nil, err
		}
		var local, address netip.Addr
		for ad.Next() {
			switch ad.Type() {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(ad.Bytes())
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(ad.Bytes())
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		a := cmp.Or(local, address)
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a.Unmap(), bits))
		}
	}
	return out, nil
}
