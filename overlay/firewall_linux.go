package overlay

// Egress firewall and NAT, through nf_tables over netlink (google/nftables).
//
// In a tenant's namespace, table ip tenet:
//
//	chain fwd-<digest> { type filter hook forward priority 0; policy drop;
//	    ct state established,related accept
//	    iifname "br<vni>" oifname "br<vni>" accept  # bridged, via br_netfilter
//	    iifname "br<vni>" oifname "up0" accept   # per network with egress
//	}
//	chain nat-<digest> { type nat hook postrouting priority 100;
//	    oifname "up0" masquerade }
//	chain in-<digest> { type filter hook input priority 0; policy drop;
//	    ct state established,related accept
//	    iifname "br<vni>" ip daddr <gateway> accept  # per network with egress
//	}
//
// so the tenant's router forwards only from its egress networks out to the
// host, never between its networks and never in from the host, and answers
// a container only on its own network's gateway address. In the host
// namespace, table ip tenet:
//
//	chain fwd-<digest> { type filter hook forward priority 0; policy accept;
//	    iifname "tnu*" ip daddr 169.254.169.254 drop  # no cloud metadata
//	    iifname "tnu*" udp dport <vxlan port> drop  # no VXLAN injection
//	    iifname "tnu*" oifname "tnu*" drop }      # never tenant to tenant
//	chain in-<digest> { type filter hook input priority 0; policy accept;
//	    ct state established,related accept
//	    iifname "tnu*" drop }                     # tenants never reach the host itself
//	chain nat-<digest> { type nat hook postrouting priority 100;
//	    ip saddr <uplink net> oifname != "tnu*" masquerade }
//
// The digest of the rule set is part of the chain names, so Observe can tell
// whether the rules in the kernel are the wanted ones by listing chains.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	nftTable       = "tenet"
	uplinkName     = "up0" // the tenant side of the uplink, in the tenant namespace
	hostUplinkPref = "tnu" // host sides: tnu<12 hex>
)

func digest(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:4])
}

// tenantRulesDigest names the tenant rule set that lets bridges out.
func tenantRulesDigest(bridges []string) string {
	return digest(append([]string{"tenant-v3"}, bridges...)...)
}

// hostRulesDigest names the host rule set for uplink net n and VXLAN port.
func hostRulesDigest(n netip.Prefix, port uint16) string {
	return digest("host-v3", n.String(), fmt.Sprint(port))
}

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

func nftConn(ns netns.NsHandle) (*nftables.Conn, error) {
	return nftables.New(nftables.WithNetNSFd(int(ns)))
}

// observeRules returns the digest of Tenet's ip rule set in ns, or "".
func observeRules(ns netns.NsHandle) (string, error) {
	return observeFamily(ns, nftables.TableFamilyIPv4, "fwd-")
}

// observeFamily returns the digest in the name of the chain starting with
// prefix in Tenet's table of family in ns, or "".
func observeFamily(ns netns.NsHandle, family nftables.TableFamily, prefix string) (string, error) {
	c, err := nftConn(ns)
	if err != nil {
		return "", err
	}
	defer c.CloseLasting()
	chains, err := c.ListChainsOfTableFamily(family)
	if err != nil {
		return "", err
	}
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == nftTable {
			if d, ok := strings.CutPrefix(ch.Name, prefix); ok {
				return d, nil
			}
		}
	}
	return "", nil
}

// replaceRules deletes Tenet's ip table in ns, if any, and (unless build is
// nil) creates it anew, in one atomic transaction.
func replaceRules(ns netns.NsHandle, build func(c *nftables.Conn, t *nftables.Table)) error {
	return replaceFamily(ns, nftables.TableFamilyIPv4, build)
}

func replaceFamily(ns netns.NsHandle, family nftables.TableFamily, build func(c *nftables.Conn, t *nftables.Table)) error {
	c, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == nftTable {
			c.DelTable(t)
		}
	}
	if build != nil {
		t := c.AddTable(&nftables.Table{Family: family, Name: nftTable})
		build(c, t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return nil
}

func chains(c *nftables.Conn, t *nftables.Table, d string, policy nftables.ChainPolicy) (fwd, nat *nftables.Chain) {
	fwd = c.AddChain(&nftables.Chain{Name: "fwd-" + d, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	nat = c.AddChain(&nftables.Chain{Name: "nat-" + d, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	return fwd, nat
}

func established() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// tenantRules builds the tenant namespace's rules for the bridges with
// egress, each given as "br<vni>=<gateway>".
func tenantRules(bridges []string) func(c *nftables.Conn, t *nftables.Table) {
	return func(c *nftables.Conn, t *nftables.Table) {
		d := tenantRulesDigest(bridges)
		fwd, nat := chains(c, t, d, nftables.ChainPolicyDrop)
		drop := nftables.ChainPolicyDrop
		in := c.AddChain(&nftables.Chain{Name: "in-" + d, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: established()})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: established()})
		for _, b := range bridges {
			br, gw, _ := strings.Cut(b, "=")
			// Frames bridged within a network come through this hook too
			// when br_netfilter is loaded (Docker loads it) and
			// bridge-nf-call-iptables is on, with the bridge as both their
			// input and output; routed packets never have both equal.
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
			if gw == "" {
				continue // no egress for this network
			}
			if g, err := netip.ParseAddr(gw); err == nil && g.Is4() {
				a := g.As4()
				c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: []expr.Any{
					&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
					&expr.Verdict{Kind: expr.VerdictAccept},
				}})
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(uplinkName)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(uplinkName)},
			&expr.Masq{},
		}})
	}
}

// hostRules builds the host namespace's rules for uplink net n.
func hostRules(n netip.Prefix, port uint16) func(c *nftables.Conn, t *nftables.Table) {
	return func(c *nftables.Conn, t *nftables.Table) {
		fwd, nat := chains(c, t, hostRulesDigest(n, port), nftables.ChainPolicyAccept)
		accept := nftables.ChainPolicyAccept
		in := c.AddChain(&nftables.Chain{Name: "in-" + hostRulesDigest(n, port), Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		fromTenant := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(hostUplinkPref)},
		}
		// Tenants have no business with the host itself: not its VXLAN
		// socket (a datagram to it would be decapsulated into any VNI), not
		// its gossip port, nothing; only replies to what the host started.
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: established()})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(slices.Clone(fromTenant), &expr.Verdict{Kind: expr.VerdictDrop})})
		// Nor may they reach the cloud metadata service through the host.
		md := metadataAddr.As4()
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: append(slices.Clone(fromTenant),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: md[:]},
			&expr.Verdict{Kind: expr.VerdictDrop})})
		// A container must not inject VXLAN into the underlay: NATed, its
		// datagrams would come from a real VTEP, into any VNI.
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(hostUplinkPref)},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
		bits := n.Bits()
		mask := netip.PrefixFrom(netip.IPv4Unspecified(), 0).Addr().As4()
		for i := range bits {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		addr := n.Addr().As4()
		c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(hostUplinkPref)},
			&expr.Masq{},
		}})
	}
}

// Anti-spoofing, in each tenant namespace with local endpoints, table
// bridge tenet:
//
//	chain pre-<digest> { type filter hook prerouting priority 0; policy accept;
//	    iifname "tv<hash>" ether saddr != <its MAC> drop
//	    iifname "tv<hash>" ether type ip ip saddr != <its IPv4> drop
//	    iifname "tv<hash>" ether type arp arp saddr ether != <its MAC> drop
//	    iifname "tv<hash>" ether type arp arp saddr ip != <its IPv4> drop
//	    iifname "tv<hash>" ether type != { ip, arp, ip6 } drop  # no VLAN tags etc.
//	}
//
// so a container sends frames only as itself: no forged MAC, no forged
// IPv4 source, no ARP claiming another's address. (IPv6 sources are not
// checked yet; the driver offers IPv4 only.)

var (
	etherIPv4 = binaryutil.BigEndian.PutUint16(0x0800)
	etherARP  = binaryutil.BigEndian.PutUint16(0x0806)
	etherIPv6 = binaryutil.BigEndian.PutUint16(0x86dd)
)

func spoofRules(ports []spoofPort) func(c *nftables.Conn, t *nftables.Table) {
	return func(c *nftables.Conn, t *nftables.Table) {
		policy := nftables.ChainPolicyAccept
		pre := c.AddChain(&nftables.Chain{Name: "pre-" + spoofDigest(ports), Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy})
		for _, p := range ports {
			in := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(p.Port)},
			}
			proto := func(ethertype []byte) []expr.Any {
				return []expr.Any{
					&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ethertype},
				}
			}
			field := func(base expr.PayloadBase, off, n uint32, want []byte) []expr.Any {
				return []expr.Any{
					&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n},
					&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: want},
				}
			}
			drop := &expr.Verdict{Kind: expr.VerdictDrop}
			rule := func(parts ...[]expr.Any) {
				var es []expr.Any
				es = append(es, in...)
				for _, x := range parts {
					es = append(es, x...)
				}
				c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append(es, drop)})
			}
			rule(field(expr.PayloadBaseLLHeader, 6, 6, p.MAC[:]))
			// Only IPv4, ARP and IPv6 frames; a VLAN tag would hide a forged
			// inner header from the checks below.
			c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append(slices.Clone(in),
				&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: etherIPv4},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: etherARP},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: etherIPv6},
				drop)})
			if p.IPv4.IsValid() {
				ip := p.IPv4.As4()
				rule(proto(etherIPv4), field(expr.PayloadBaseNetworkHeader, 12, 4, ip[:]))
				rule(proto(etherARP), field(expr.PayloadBaseNetworkHeader, 8, 6, p.MAC[:]))
				rule(proto(etherARP), field(expr.PayloadBaseNetworkHeader, 14, 4, ip[:]))
			} else {
				rule(proto(etherIPv4))
				rule(proto(etherARP))
			}
		}
	}
}
