package overlay

// Tenet's nf_tables rules, over netlink (google/nftables; a few reads with
// raw messages, nftraw_linux.go). The layout keeps every per-object change
// small: an endpoint has none (its port guard is a tc filter), a network
// is two set elements, an infrastructure member at most one; nothing ever
// rewrites a table with many rules (which, with 45 networks or 30
// endpoints of one tenant, overflowed the netlink socket with the echoes
// of one huge batch). Tables are made anew only when their layout changes.
//
// In a tenant's namespace, per local endpoint, a guard on the ingress of
// its port (the bridge's veth end), before the bridge sees the frame: not
// an nf_tables chain but a BPF program in a tc filter of the port's own
// (guard_linux.go says why), which drops
//
//	any frame with a VLAN tag (802.1Q or 802.1ad, whatever it carries)
//	ether saddr != <its MAC>
//	ether type not in { ip, arp, ip6 }
//	ip saddr != <its IPv4>
//	arp: sender MAC != <its MAC> or sender address != <its IPv4>
//	# without an IPv4 address: ip and arp
//
// so a container sends frames only as itself: no forged MAC, no forged IPv4
// source, no ARP claiming another's address, no VLAN tag (the kernel takes
// a tag off into the packet's metadata before tc sees the frame, so a check
// of the inner headers alone would pass a tagged frame, which then reaches
// the other ports still tagged). IPv6 sources are not checked yet (the
// driver offers IPv4 only). The filter is named "tenet-guard-v2 <port>
// <mac> <ip>", which is how Observe reads a guard back.
//
// With egress (an uplink), the tenant's router:
//
//	table ip tenet {
//	    set pairs { type ifname . ifname }   # br<vni> . br<vni> for every network,
//	                                         # br<vni> . up0 for each with egress
//	    map pub { type inet_proto . inet_service : ipv4_addr . inet_service }
//	                                         # published ports: proto . host port :
//	                                         # container address . port
//	    chain pre-<d> { type nat hook prerouting priority dstnat;
//	        iifname "up0" dnat ip to meta l4proto . th dport map @pub }
//	    chain fwd-<d> { type filter hook forward priority 0; policy drop;
//	        ct state established,related accept
//	        iifname "up0" ct status dnat accept            # a published port
//	        iifname . oifname @pairs accept }
//	    chain in-<d> { type filter hook input priority 0; policy drop;
//	        ct state established,related accept
//	        iifname "br*" fib daddr . iif type local accept   # its own network's gateway
//	        iifname "br*" ip daddr <ResolverAddr> udp dport 53 accept   # the name resolver
//	        iifname "br*" ip daddr <ResolverAddr> tcp dport 53 accept }
//	    chain nat-<d> { type nat hook postrouting priority 100; oifname "up0" masquerade }
//	}
//
// so it forwards only from egress networks out to the host, never between
// networks, and in from the host only to a published port; and answers a
// container only on the gateway address of the bridge the packet came in
// on, and on the name resolver's port (ListenResolver). br<vni> . br<vni> lets bridged frames pass should br_netfilter send
// them through the router (bridge-nf-call-iptables is off in tenant
// namespaces, but a host may turn it on).
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
//	    map pubany { type inet_proto . inet_service : ipv4_addr }  # a published port on every
//	                                                    # host address : its tenant's uplink end
//	    map pubip { type inet_proto . ipv4_addr . inet_service : ipv4_addr }  # ... on one
//	    chain pre-<d> { type nat hook prerouting priority dstnat;
//	        iifname "tnu*" return                          # tenants reach no host port
//	        fib daddr type local dnat ip to meta l4proto . th dport map @pubany
//	        dnat ip to meta l4proto . ip daddr . th dport map @pubip }
//	    chain out-<d> { type nat hook output priority dstnat;  # the host's own connections
//	        fib daddr type local dnat ip to meta l4proto . th dport map @pubany
//	        dnat ip to meta l4proto . ip daddr . th dport map @pubip }
//	    chain fwd-<d> { type filter hook forward priority 0; policy accept;
//	        oifname "tnu*" iifname != "tnu*" ct state established,related accept
//	        oifname "tnu*" iifname != "tnu*" ct status dnat accept  # published ports
//	        oifname "tnu*" iifname != "tnu*" drop           # nothing else into a tenant
//	        iifname != "tnu*" accept
//	        ct direction reply ct status dnat accept        # a published port answers
//	        ip daddr @allow4 accept
//	        ct status dnat drop                             # the host's own published
//	                                                        # ports (Docker's -p)
//	        oifname "docker0" drop                          # Docker's bridge networks
//	        oifname "br-*" drop
//	        ip daddr 169.254.169.254 drop                   # no cloud metadata
//	        ip daddr @deny4 drop                            # no underlay address
//	        meta l4proto . th dport @ports drop             # no VXLAN or gossip anywhere
//	        oifname "tnu*" drop }                           # never tenant to tenant
//	    chain in-<d> { type filter hook input priority 0; policy accept;
//	        iifname != "tnu*" accept
//	        ct state established,related accept
//	        ip daddr @allow4 accept
//	        drop }                                        # the host itself: nothing
//	    chain nat-<d> { type nat hook postrouting priority 100;
//	        ip saddr <uplink net> oifname != "tnu*" masquerade
//	        oifname "tnu*" ip saddr 127.0.0.0/8 masquerade }  # the host's own, to a
//	                                                    # published port on 127.0.0.1
//	}
//
// so tenants reach nothing of the cluster's own (its members, its underlay
// subnets, a VXLAN socket, which would decapsulate a forged datagram into
// any VNI, gossip, where a NATed packet arrives as a trusted host, the
// host's services and Docker's containers) unless an operator allows the
// destination, and from outside only published ports reach a tenant. A
// member joining or leaving is one element of deny4, a published port one
// element of a host map and one of its tenant's (ports.go). Beside these,
// the host's iptables filter table gets Tenet's accepts (hostports_linux.go):
// a FORWARD policy of drop would drop tenants' traffic otherwise.
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
	maxElemsPerMsg = 200   // set elements per netlink message
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

// pubSet is the tenant's port map: proto . host port : container ip . port.
func pubSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, Name: setPub, IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
}

func hostSet(t *nftables.Table, name string) *nftables.Set {
	switch name {
	case setPorts:
		return &nftables.Set{Table: t, Name: name, KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			Concatenation: true}
	case setPubAny:
		return &nftables.Set{Table: t, Name: name, IsMap: true, Concatenation: true, DataType: nftables.TypeIPAddr,
			KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)}
	case setPubIP:
		return &nftables.Set{Table: t, Name: name, IsMap: true, Concatenation: true, DataType: nftables.TypeIPAddr,
			KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService)}
	}
	return &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
}

// hostSets are the sets of the host's rules.
var hostSets = []string{setDeny, setAllow, setPorts, setPubAny, setPubIP}

// setOf returns the set an element of the tenant's (tenant != "") or the
// host's rules belongs to.
func setOf(tenant bool, name string) (*nftables.Set, error) {
	t := tableOf(nftables.TableFamilyIPv4)
	switch {
	case tenant && name == setPairs:
		return pairsSet(t), nil
	case tenant && name == setPub:
		return pubSet(t), nil
	case !tenant && slices.Contains(hostSets, name):
		return hostSet(t, name), nil
	}
	return nil, fmt.Errorf("no set %q in the rules", name)
}

// Encodings of a concatenation's fields (each padded to 4 bytes).
func protoField(p Proto) []byte    { return []byte{byte(p), 0, 0, 0} }
func serviceField(n uint16) []byte { return []byte{byte(n >> 8), byte(n), 0, 0} }
func addrField(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

// portFields parses the fields of a port map element's key or value:
// each "tcp"/"udp", a port number or an IPv4 address, as kinds says
// ('p', 'n', 'a').
func portFields(s, kinds string) ([]byte, error) {
	f := strings.Split(s, " . ")
	if len(f) != len(kinds) {
		return nil, fmt.Errorf("want %d fields", len(kinds))
	}
	var out []byte
	for i, k := range kinds {
		switch k {
		case 'p':
			p, ok := parseProto(f[i])
			if !ok {
				return nil, fmt.Errorf("protocol %q: want tcp or udp", f[i])
			}
			out = append(out, protoField(p)...)
		case 'n':
			n, err := strconv.ParseUint(f[i], 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("port %q: want 1-65535", f[i])
			}
			out = append(out, serviceField(uint16(n))...)
		case 'a':
			a, err := netip.ParseAddr(f[i])
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("address %q: want IPv4", f[i])
			}
			out = append(out, addrField(a)...)
		}
	}
	return out, nil
}

// formatFields is portFields' inverse; ok is false for bytes of the wrong
// length.
func formatFields(b []byte, kinds string) (string, bool) {
	if len(b) != 4*len(kinds) {
		return "", false
	}
	var f []string
	for i, k := range kinds {
		x := b[4*i : 4*i+4]
		switch k {
		case 'p':
			f = append(f, Proto(x[0]).String())
		case 'n':
			f = append(f, strconv.Itoa(int(binary.BigEndian.Uint16(x))))
		case 'a':
			f = append(f, netip.AddrFrom4([4]byte(x)).String())
		}
	}
	return strings.Join(f, " . "), true
}

// mapKinds gives the fields of a port map's key and value.
var mapKinds = map[string][2]string{
	setPub:    {"pn", "an"},
	setPubAny: {"pn", "a"},
	setPubIP:  {"pan", "a"},
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
	case setPub, setPubAny, setPubIP:
		kinds := mapKinds[e.Set]
		key, val, ok := strings.Cut(e.Key, " : ")
		if !ok {
			return bad(fmt.Errorf("want <key> : <value>"))
		}
		k, err := portFields(key, kinds[0])
		if err != nil {
			return bad(err)
		}
		v, err := portFields(val, kinds[1])
		if err != nil {
			return bad(err)
		}
		return []nftables.SetElement{{Key: k, Val: v}}, nil
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
	case setPub, setPubAny, setPubIP:
		kinds := mapKinds[set]
		for _, el := range els {
			k, ok1 := formatFields(el.Key, kinds[0])
			v, ok2 := formatFields(el.Val, kinds[1])
			if ok1 && ok2 {
				out = append(out, Elem{Set: set, Key: k + " : " + v})
			}
		}
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
	if del {
		for i := range els {
			els[i].Val = nil // a map element goes by its key
		}
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

// addSetsWith adds sets to t with the elements of els that belong to each.
func addSetsWith(c *nftables.Conn, sets []*nftables.Set, els []Elem) error {
	keys := map[string][]nftables.SetElement{}
	for _, e := range els {
		k, err := elemKeys(e)
		if err != nil {
			return err
		}
		keys[e.Set] = append(keys[e.Set], k...)
	}
	for _, set := range sets {
		if err := c.AddSet(set, nil); err != nil {
			return err
		}
		if err := addElems(c, set, keys[set.Name], false); err != nil {
			return err
		}
	}
	return nil
}

// ctStatus matches a conntrack status bit.
func ctStatus(bit uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

// ipsDstNAT is conntrack's IPS_DST_NAT: the connection's destination was
// translated.
const ipsDstNAT = 1 << 5

// l4Port loads the transport protocol into register 1 and the destination
// port into reg32 (9, 10: the 32-bit registers after it), the layout of
// a concatenated key; with addr, the destination address comes between.
func l4Port(addr bool) []expr.Any {
	es := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}}
	reg := uint32(9)
	if addr {
		es = append(es, &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
		reg = 10
	}
	return append(es, &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
}

// dnatBy looks the loaded key up in map m and translates the destination
// to its value: an address (register 1), and with port a port after it
// (register 9).
func dnatBy(m *nftables.Set, port bool) []expr.Any {
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}
	if port {
		nat.RegProtoMin = 9
	}
	return []expr.Any{&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID}, nat}
}

func localDaddr() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// tenantRules builds the tenant router's table with the elements els.
func tenantRules(els []Elem) func(c *nftables.Conn, t *nftables.Table) error {
	return func(c *nftables.Conn, t *nftables.Table) error {
		d := tenantRulesDigest()
		pairs, pub := pairsSet(t), pubSet(t)
		if err := addSetsWith(c, []*nftables.Set{pairs, pub}, els); err != nil {
			return err
		}
		pre := baseChain(c, t, "pre-"+d, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT, 0)
		fwd := baseChain(c, t, "fwd-"+d, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyDrop)
		in := baseChain(c, t, "in-"+d, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyDrop)
		nat := baseChain(c, t, "nat-"+d, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT, 0)
		up := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(uplinkName)}}
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: cat(up, l4Port(false), dnatBy(pub, true))})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: established()})
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: cat(up, ctStatus(ipsDstNAT), []expr.Any{accept()})})
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
		res := ResolverAddr.As4()
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpEq, "br"),
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: res[:]},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
				accept())})
		}
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
		rawPre := baseChain(c, t, "raw-pre-"+d, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		c.AddRule(&nftables.Rule{Table: t, Chain: rawPre, Exprs: append(slices.Clone(vxlan[:4]), append(toHost, &expr.Notrack{})...)})
		rawOut := baseChain(c, t, "raw-out-"+d, nftables.ChainHookOutput, nftables.ChainPriorityRaw, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		c.AddRule(&nftables.Rule{Table: t, Chain: rawOut, Exprs: vxlan})
		if !egress {
			return nil
		}
		sets := map[string]*nftables.Set{}
		var list []*nftables.Set
		for _, name := range hostSets {
			sets[name] = hostSet(t, name)
			list = append(list, sets[name])
		}
		if err := addSetsWith(c, list, els); err != nil {
			return err
		}
		pre := baseChain(c, t, "pre-"+d, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT, 0)
		out := baseChain(c, t, "out-"+d, nftables.ChainHookOutput, nftables.ChainPriorityNATDest, nftables.ChainTypeNAT, 0)
		fwd := baseChain(c, t, "fwd-"+d, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		in := baseChain(c, t, "in-"+d, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainTypeFilter, nftables.ChainPolicyAccept)
		nat := baseChain(c, t, "nat-"+d, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainTypeNAT, 0)
		rule := func(ch *nftables.Chain, es ...expr.Any) { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: es}) }
		fromTenant := ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpEq, hostUplinkPref)
		notTenant := append(ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, hostUplinkPref), accept())
		toTenant := cat(ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpEq, hostUplinkPref), ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, hostUplinkPref))
		md := metadataAddr.As4()
		// Published ports: to a port of every host address, or of one;
		// never for what comes from a tenant (it reaches no host port).
		rule(pre, append(fromTenant, &expr.Verdict{Kind: expr.VerdictReturn})...)
		for _, ch := range []*nftables.Chain{pre, out} {
			rule(ch, cat(localDaddr(), l4Port(false), dnatBy(sets[setPubAny], false))...)
			rule(ch, cat(l4Port(true), dnatBy(sets[setPubIP], false))...)
		}
		// Into a tenant: replies, and published ports; nothing else.
		rule(fwd, cat(toTenant, established())...)
		rule(fwd, cat(toTenant, ctStatus(ipsDstNAT), []expr.Any{accept()})...)
		rule(fwd, append(toTenant, drop())...)
		// Forwarded from a tenant: answers from its published ports, and
		// only what no deny rule names, or what the operator allowed.
		rule(fwd, notTenant...)
		rule(fwd, cat([]expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}}}, ctStatus(ipsDstNAT), []expr.Any{accept()})...)
		rule(fwd, daddr(), lookup(sets[setAllow]), accept())
		rule(fwd, append(ctStatus(ipsDstNAT), drop())...) // the host's own published ports (Docker's -p)
		rule(fwd, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("docker0")}, drop())
		rule(fwd, append(ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpEq, "br-"), drop())...)
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
		// The host's own connections to a published port from 127.0.0.0/8
		// leave through an uplink (route_localnet) as its address.
		rule(nat, cat(ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpEq, hostUplinkPref),
			[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}}, &expr.Masq{}})...)
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
