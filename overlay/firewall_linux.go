package overlay

// Tenet's nf_tables rules, over netlink (google/nftables; a few reads with
// raw messages, nftraw_linux.go). The layout keeps every per-object change
// small: an endpoint is one chain of five rules on its own port, a network
// is two set elements, an infrastructure member at most one; nothing ever
// rewrites a table with many rules (which, with 45 networks or 30
// endpoints of one tenant, overflowed the netlink socket with the echoes
// of one huge batch). Tables are made anew only when their layout changes.
//
// In a tenant's namespace, per local endpoint, a guard on the ingress of
// its port (the bridge's veth end), before the bridge sees the frame:
//
//	table netdev tenet {
//	    chain tv<hash> { type filter hook ingress device tv<hash> priority 0; policy accept;
//	        ether type != { ip, arp, ip6 } drop   # read as sent: an 802.1Q or 802.1ad tag
//	                                              # shows here, whatever is inside it
//	        ether saddr != <its MAC> drop
//	        ether type ip ip saddr != <its IPv4> drop
//	        ether type arp arp saddr ether != <its MAC> drop
//	        ether type arp arp saddr ip != <its IPv4> drop
//	    }   # without an IPv4 address: ether type { ip, arp } drop
//	}
//
// so a container sends frames only as itself: no forged MAC, no forged IPv4
// source, no ARP claiming another's address, no VLAN tag (the kernel takes
// a tag off into the packet's metadata before any hook, so a check of the
// inner headers alone would pass a tagged frame, which then reaches the
// other ports still tagged). IPv6 sources are not checked yet (the driver
// offers IPv4 only). Each rule carries "tenet-guard-v1 <port> <mac> <ip>"
// as user data, which is how Observe reads a guard back.
//
// With egress (an uplink), the tenant's router:
//
//	table ip tenet {
//	    set pairs { type ifname . ifname }   # br<vni> . br<vni> for every network,
//	                                         # br<vni> . up0 for each with egress
//	    chain fwd-<d> { type filter hook forward priority 0; policy drop;
//	        ct state established,related accept
//	        iifname . oifname @pairs accept }
//	    chain in-<d> { type filter hook input priority 0; policy drop;
//	        ct state established,related accept
//	        iifname "br*" fib daddr . iif type local accept }  # its own network's gateway
//	    chain nat-<d> { type nat hook postrouting priority 100; oifname "up0" masquerade }
//	}
//
// so it forwards only from egress networks out to the host, never between
// networks and never in from the host, and answers a container only on the
// gateway address of the bridge the packet came in on. br<vni> . br<vni>
// lets bridged frames pass should br_netfilter send them through the router
// (bridge-nf-call-iptables is off in tenant namespaces, but a host may turn
// it on).
//
// In the host namespace, when it has any network:
//
//	table ip tenet {
//	    chain raw-pre-<d> { type filter hook prerouting priority raw; policy accept;
//	        udp dport <vxlan port> fib daddr type local notrack }
//	    chain raw-out-<d> { type filter hook output priority raw; policy accept;
//	        udp dport <vxlan port> notrack }
//
// so the tunnels never go through conntrack (which the egress NAT below,
// or Docker's, turns on for every packet of the namespace); and when any
// tenant has egress, also:
//
//	    set deny4 { type ipv4_addr; flags interval }    # State.Infra.Deny
//	    set allow4 { type ipv4_addr; flags interval }   # State.Infra.Allow
//	    set ports { type inet_proto . inet_service }    # udp . <vxlan port>, State.Infra.Ports
//	    chain fwd-<d> { type filter hook forward priority 0; policy accept;
//	        iifname != "tnu*" accept
//	        ip daddr @allow4 accept
//	        ip daddr 169.254.169.254 drop                 # no cloud metadata
//	        ip daddr @deny4 drop                          # no underlay address
//	        meta l4proto . th dport @ports drop           # no VXLAN or gossip anywhere
//	        oifname "tnu*" drop }                         # never tenant to tenant
//	    chain in-<d> { type filter hook input priority 0; policy accept;
//	        iifname != "tnu*" accept
//	        ct state established,related accept
//	        ip daddr @allow4 accept
//	        drop }                                        # the host itself: nothing
//	    chain nat-<d> { type nat hook postrouting priority 100;
//	        ip saddr <uplink net> oifname != "tnu*" masquerade }
//	}
//
// so tenants reach nothing of the cluster's own (its members, its underlay
// subnets, a VXLAN socket, which would decapsulate a forged datagram into
// any VNI, or gossip, where a NATed packet arrives as a trusted host) unless
// an operator allows the destination. A member joining or leaving is one
// element of deny4.
//
// <d> is a digest of the layout (with, on the host, the uplink net, the
// VXLAN port and whether there is egress), so Observe can tell whether a
// table has the wanted layout by listing chains; set elements are read one by one in a scoped reconcile,
// and dumped in a full one.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const (
	nftTable       = "tenet"
	uplinkName     = "up0" // the tenant side of the uplink, in the tenant namespace
	hostUplinkPref = "tnu" // host sides: tnu<12 hex>
	guardTag       = "tenet-guard-v1"
	maxElemsPerMsg = 200 // set elements per netlink message
)

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

var (
	etherIPv4 = binaryutil.BigEndian.PutUint16(0x0800)
	etherARP  = binaryutil.BigEndian.PutUint16(0x0806)
	etherIPv6 = binaryutil.BigEndian.PutUint16(0x86dd)
)

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() *expr.Verdict   { return &expr.Verdict{Kind: expr.VerdictDrop} }

func established() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
		accept(),
	}
}

// ifPrefix matches (or with neq, does not match) an interface name prefix.
func ifPrefix(key expr.MetaKey, op expr.CmpOp, prefix string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)}}
}

func daddr() *expr.Payload {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func lookup(s *nftables.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}
}

// Sets, as their tables declare them.

func tableOf(family nftables.TableFamily) *nftables.Table {
	return &nftables.Table{Family: family, Name: nftTable}
}

func pairsSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: setPairs, KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIFName),
		Concatenation: true}
}

func hostSet(t *nftables.Table, name string) *nftables.Set {
	if name == setPorts {
		return &nftables.Set{Table: t, Name: name, KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			Concatenation: true}
	}
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
}

// setOf returns the set an element of the tenant's (tenant != "") or the
// host's rules belongs to.
func setOf(tenant bool, name string) (*nftables.Set, error) {
	t := tableOf(nftables.TableFamilyIPv4)
	switch {
	case tenant && name == setPairs:
		return pairsSet(t), nil
	case !tenant && (name == setDeny || name == setAllow || name == setPorts):
		return hostSet(t, name), nil
	}
	return nil, fmt.Errorf("no set %q in the rules", name)
}

// elemKeys encodes an element as the kernel holds it: one key, or for an
// interval its start and (unless it runs to the last address) its end.
func elemKeys(e Elem) ([]nftables.SetElement, error) {
	bad := func(err error) ([]nftables.SetElement, error) {
		return nil, fmt.Errorf("element %q of set %s: %w", e.Key, e.Set, err)
	}
	switch e.Set {
	case setPairs:
		a, b, ok := strings.Cut(e.Key, " . ")
		if !ok || len(a) > 15 || len(b) > 15 {
			return bad(fmt.Errorf("want <ifname> . <ifname>"))
		}
		return []nftables.SetElement{{Key: append(ifname(a), ifname(b)...)}}, nil
	case setDeny, setAllow:
		r, err := parseRange(e.Key)
		if err != nil {
			return bad(err)
		}
		els := []nftables.SetElement{{Key: binaryutil.BigEndian.PutUint32(r.lo)}}
		if r.hi != ^uint32(0) {
			els = append(els, nftables.SetElement{Key: binaryutil.BigEndian.PutUint32(r.hi + 1), IntervalEnd: true})
		}
		return els, nil
	case setPorts:
		proto, port, ok := strings.Cut(e.Key, " . ")
		n, err := strconv.ParseUint(port, 10, 16)
		var p byte
		switch proto {
		case "tcp":
			p = byte(TCP)
		case "udp":
			p = byte(UDP)
		default:
			ok = false
		}
		if !ok || err != nil {
			return bad(fmt.Errorf("want tcp|udp . <port>"))
		}
		return []nftables.SetElement{{Key: []byte{p, 0, 0, 0, byte(n >> 8), byte(n), 0, 0}}}, nil
	}
	return bad(fmt.Errorf("unknown set"))
}

// decodeElems turns the elements of a set read from the kernel back into
// Elems.
func decodeElems(set string, els []nftables.SetElement) []Elem {
	var out []Elem
	switch set {
	case setPairs:
		for _, el := range els {
			if len(el.Key) == 32 {
				out = append(out, Elem{Set: set, Key: cstr(el.Key[:16]) + " . " + cstr(el.Key[16:])})
			}
		}
	case setPorts:
		for _, el := range els {
			if len(el.Key) == 8 {
				p := L4Port{Proto: Proto(el.Key[0]), Port: binary.BigEndian.Uint16(el.Key[4:6])}
				out = append(out, Elem{Set: set, Key: p.String()})
			}
		}
	case setDeny, setAllow:
		// Starts and ends of intervals, in any order: sorted, each start
		// runs to the next end (or to the last address).
		type bound struct {
			at  uint32
			end bool
		}
		var bs []bound
		for _, el := range els {
			if len(el.Key) == 4 {
				bs = append(bs, bound{binary.BigEndian.Uint32(el.Key), el.IntervalEnd})
			}
		}
		slices.SortFunc(bs, func(a, b bound) int {
			if a.at != b.at {
				if a.at < b.at {
					return -1
				}
				return 1
			}
			if a.end == b.end {
				return 0
			}
			if a.end {
				return -1
			}
			return 1
		})
		for i, b := range bs {
			if b.end {
				continue
			}
			r := ipRange{lo: b.at, hi: ^uint32(0)}
			if i+1 < len(bs) && bs[i+1].end {
				r.hi = bs[i+1].at - 1
			}
			out = append(out, Elem{Set: set, Key: r.String()})
		}
	}
	return out
}

func cstr(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// addElems queues els into s in messages of at most maxElemsPerMsg.
func addElems(c *nftables.Conn, s *nftables.Set, els []nftables.SetElement, del bool) error {
	for len(els) > 0 {
		n := min(len(els), maxElemsPerMsg)
		var err error
		if del {
			err = c.SetDeleteElements(s, els[:n])
		} else {
			err = c.SetAddElements(s, els[:n])
		}
		if err != nil {
			return err
		}
		els = els[n:]
	}
	return nil
}

// setElem adds (or deletes) one element of the tenant's (tenant true) or
// the host's rules in ns.
func setElem(n *nsNet, tenant bool, e Elem, del bool) error {
	s, err := setOf(tenant, e.Set)
	if err != nil {
		return err
	}
	els, err := elemKeys(e)
	if err != nil {
		return err
	}
	c, err := n.tables()
	if err != nil {
		return err
	}
	if err := addElems(c, s, els, del); err != nil {
		return err
	}
	err = n.flush(c)
	if del {
		err = ignoreNotFound(err)
	}
	return err
}

// rebuild deletes Tenet's table of family in ns, if any, and (unless build
// is nil) makes it anew, in one transaction.
func rebuild(n *nsNet, family nftables.TableFamily, build func(c *nftables.Conn, t *nftables.Table) error) error {
	c, err := n.tables()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(family)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == nftTable {
			c.DelTable(t)
		}
	}
	if build != nil {
		t := c.AddTable(tableOf(family))
		if err := build(c, t); err != nil {
			return err
		}
	}
	return n.flush(c)
}

func baseChain(c *nftables.Conn, t *nftables.Table, name string, hook *nftables.ChainHook, prio *nftables.ChainPriority,
	typ nftables.ChainType, policy nftables.ChainPolicy) *nftables.Chain {
	ch := &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio}
	if typ == nftables.ChainTypeFilter {
		ch.Policy = &policy
	}
	return c.AddChain(ch)
}

// tenantRules builds the tenant router's table with the elements els.
func tenantRules(els []Elem) func(c *nftables.Conn, t *nftables.Table) error {
	return func(c *nftables.Conn, t *nftables.Table) error {
		d := tenantRulesDigest()
		pairs := pairsSet(t)
		if err := c.AddSet(pairs, nil); err != nil {
			return err
		}
		var keys []nftables.SetElement
		for _, e := range els {
			k, err := elemKeys(e)
			if err != nil {
				return err
			}
			keys = append(keys, k...)
		}
		if err := addElems(c, pairs, keys, false); err != nil {
			return err
		}
		fwd := baseChain(c, t, "fwd-"+d, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyDrop)
		in := baseChain(c, t, "in-"+d, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyDrop)
		nat := baseChain(c, t, "nat-"+d, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT, 0)
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: established()})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 2},
			lookup(pairs), accept(),
		}})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: established()})
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpEq, "br"),
			&expr.Fib{Register: 1, FlagDADDR: true, FlagIIF: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			accept())})
		c.AddRule(&nftables.Rule{Table: t, Chain: nat, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(uplinkName)},
			&expr.Masq{},
		}})
		return nil
	}
}

// hostRules builds the host's table for uplink net n and VXLAN port: the
// chains that keep VXLAN from conntrack, and with egress the egress chains
// and sets, with the elements els.
func hostRules(n netip.Prefix, port uint16, egress bool, els []Elem) func(c *nftables.Conn, t *nftables.Table) error {
	return func(c *nftables.Conn, t *nftables.Table) error {
		d := hostRulesDigest(n, port, egress)
		vxlan := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Notrack{},
		}
		// Incoming: only datagrams for this host (a container's VXLAN
		// forwarded through, say Docker's, must stay tracked to be NATed).
		toHost := []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		}
		pre := baseChain(c, t, "raw-pre-"+d, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: append(slices.Clone(vxlan[:4]), append(toHost, &expr.Notrack{})...)})
		out := baseChain(c, t, "raw-out-"+d, nftables.ChainHookOutput, nftables.ChainPriorityRaw, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: vxlan})
		if !egress {
			return nil
		}
		sets := map[string]*nftables.Set{}
		for _, name := range []string{setDeny, setAllow, setPorts} {
			s := hostSet(t, name)
			if err := c.AddSet(s, nil); err != nil {
				return err
			}
			sets[name] = s
		}
		keys := map[string][]nftables.SetElement{}
		for _, e := range els {
			k, err := elemKeys(e)
			if err != nil {
				return err
			}
			keys[e.Set] = append(keys[e.Set], k...)
		}
		for name, k := range keys {
			if err := addElems(c, sets[name], k, false); err != nil {
				return err
			}
		}
		fwd := baseChain(c, t, "fwd-"+d, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		in := baseChain(c, t, "in-"+d, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		nat := baseChain(c, t, "nat-"+d, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT, 0)
		rule := func(ch *nftables.Chain, es ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es}) }
		notTenant := append(ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, hostUplinkPref), accept())
		md := metadataAddr.As4()
		// Forwarded from a tenant: only what no deny rule names, or what
		// the operator allowed.
		rule(fwd, notTenant...)
		rule(fwd, daddr(), lookup(sets[setAllow]), accept())
		rule(fwd, daddr(), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: md[:]}, drop())
		rule(fwd, daddr(), lookup(sets[setDeny]), drop())
		rule(fwd, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			lookup(sets[setPorts]), drop())
		rule(fwd, append(ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpEq, hostUplinkPref), drop())...)
		// To the host itself: only replies to what the host started, or
		// what the operator allowed.
		rule(in, notTenant...)
		rule(in, established()...)
		rule(in, daddr(), lookup(sets[setAllow]), accept())
		rule(in, drop())
		mask := net.CIDRMask(n.Bits(), 32)
		addr := n.Addr().As4()
		rule(nat, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(hostUplinkPref)},
			&expr.Masq{})
		return nil
	}
}

// delTable deletes Tenet's table of family in ns; no-op if there is none.
func delTable(n *nsNet, family nftables.TableFamily) error {
	c, err := n.tables()
	if err != nil {
		return err
	}
	c.DelTable(tableOf(family))
	return ignoreNotFound(n.flush(c))
}

// observeLayout returns the digest in the name of the chain starting with
// prefix in Tenet's table of family in ns, or "".
func observeLayout(n *nsNet, family nftables.TableFamily, prefix string) (string, error) {
	c, err := n.tables()
	if err != nil {
		return "", err
	}
	chains, err := c.ListChainsOfTableFamily(family)
	if err != nil {
		return "", fmt.Errorf("nftables: list chains: %w", err)
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

// observeSet dumps the elements of one of Tenet's sets.
func observeSet(n *nsNet, tenant bool, name string, into map[Elem]bool) error {
	s, err := setOf(tenant, name)
	if err != nil {
		return err
	}
	c, err := n.tables()
	if err != nil {
		return err
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("nftables: list set %s: %w", name, err)
	}
	for _, e := range decodeElems(name, els) {
		into[e] = true
	}
	return nil
}

// hasElem reports whether one of Tenet's sets holds e, without reading the
// rest of the set.
func hasElem(n *nsNet, tenant bool, e Elem) (bool, error) {
	els, err := elemKeys(e)
	if err != nil {
		return false, err
	}
	c, err := n.raw(unix.NETLINK_NETFILTER)
	if err != nil {
		return false, err
	}
	ok, err := nftGetElem(c, unix.NFPROTO_IPV4, nftTable, e.Set, els[0].Key)
	if err != nil {
		n.dropRaw(unix.NETLINK_NETFILTER)
	}
	return ok, err
}

// observeLegacy lists tables of an earlier layout in a tenant's namespace.
func observeLegacy(n *nsNet) ([]string, error) {
	c, err := n.tables()
	if err != nil {
		return nil, err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == nftTable {
			return []string{"bridge " + nftTable}, nil
		}
	}
	return nil, nil
}
