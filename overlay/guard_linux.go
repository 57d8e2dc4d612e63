package overlay

// Port guards: one chain per local endpoint on the ingress of its port
// (the rule layout is in firewall_linux.go's header), each in a netdev
// table of its own. The kernel checks every rule of a table on each
// change to it: with all of a tenant's guards in one table, adding the
// 1,000th endpoint's guard took 4x the 1st's.

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// guardTablePrefix begins the name of every guard's table; the port's
// name ends it.
const guardTablePrefix = "tenet-"

func guardTable(port string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyNetdev, Name: guardTablePrefix + port}
}

// setGuard makes g's chain on its port, in one transaction: the table if
// it is missing, the chain (its hook bound to the port), its rules replaced.
func setGuard(n *nsNet, g Guard) error {
	c, err := n.tables()
	if err != nil {
		return err
	}
	if err := addGuard(c, g); err != nil {
		return err
	}
	return n.flush(c)
}

// addGuard adds setGuard's messages to c's batch.
func addGuard(c *nftables.Conn, g Guard) error {
	mac, err := net.ParseMAC(g.MAC)
	if err != nil || len(mac) != 6 {
		return fmt.Errorf("guard %s: mac %q: must be 6 bytes", g.Port, g.MAC)
	}
	t := c.AddTable(guardTable(g.Port))
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: g.Port, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter, Policy: &policy, Device: g.Port})
	c.FlushChain(ch)
	tag := []byte(guardTagOf(g))
	etherType := func(op expr.CmpOp, types ...[]byte) []expr.Any {
		es := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}}
		for _, ty := range types {
			es = append(es, &expr.Cmp{Op: op, Register: 1, Data: ty})
		}
		return es
	}
	field := func(base expr.PayloadBase, off, l uint32, want []byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: l},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: want},
		}
	}
	rule := func(parts ...[]expr.Any) {
		var es []expr.Any
		for _, p := range parts {
			es = append(es, p...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(es, drop()), UserData: tag})
	}
	// The frame's own ethertype, as sent: with a VLAN tag it is 802.1Q or
	// 802.1ad whatever the tag carries.
	rule(etherType(expr.CmpOpNeq, etherIPv4, etherARP, etherIPv6))
	rule(field(expr.PayloadBaseLLHeader, 6, 6, mac))
	if g.IPv4.IsValid() {
		ip := g.IPv4.As4()
		rule(etherType(expr.CmpOpEq, etherIPv4), field(expr.PayloadBaseNetworkHeader, 12, 4, ip[:]))
		rule(etherType(expr.CmpOpEq, etherARP), field(expr.PayloadBaseNetworkHeader, 8, 6, mac))
		rule(etherType(expr.CmpOpEq, etherARP), field(expr.PayloadBaseNetworkHeader, 14, 4, ip[:]))
	} else {
		rule(etherType(expr.CmpOpEq, etherIPv4))
		rule(etherType(expr.CmpOpEq, etherARP))
	}
	return nil
}

// guardRules is how many rules a guard has.
func guardRules(g Guard) int {
	if g.IPv4.IsValid() {
		return 5
	}
	return 4
}

func guardTagOf(g Guard) string {
	return fmt.Sprintf("%s %s %s %s", guardTag, g.Port, g.MAC, ipOrNone(g.IPv4))
}

func ipOrNone(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "none"
}

// parseGuard reads a guard chain back from its rules' user data: every
// rule must carry the same tag, and the count must be the guard's. A chain
// that does not read back yields a guard that matches no wanted one.
func parseGuard(port string, tags []string) Guard {
	broken := Guard{Port: port, MAC: "unreadable"}
	if len(tags) == 0 {
		return broken
	}
	f := strings.Fields(tags[0])
	if len(f) != 4 || f[0] != guardTag || f[1] != port {
		return broken
	}
	g := Guard{Port: port, MAC: f[2]}
	if f[3] != "none" {
		ip, err := netip.ParseAddr(f[3])
		if err != nil {
			return broken
		}
		g.IPv4 = ip
	}
	if len(tags) != guardRules(g) || slices.ContainsFunc(tags, func(t string) bool { return t != tags[0] }) {
		return broken
	}
	return g
}

// delGuard deletes a port's guard table; no-op if there is none.
func delGuard(n *nsNet, port string) error {
	c, err := n.tables()
	if err != nil {
		return err
	}
	c.DelTable(guardTable(port))
	return ignoreNotFound(n.flush(c))
}

// observeGuards reads the guards of ns: of port only, or of every port if
// port is "" (after moving the guards of an older tenetd's single table
// into tables of their own: migrateGuards).
func observeGuards(n *nsNet, port string, into map[string]Guard) error {
	c, err := n.raw(unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	if port == "" {
		if err := migrateGuards(n, c); err != nil {
			return err
		}
	}
	table := ""
	if port != "" {
		table = guardTable(port).Name
	}
	chains, err := nftRuleTags(c, unix.NFPROTO_NETDEV, table, guardTablePrefix, port)
	if err != nil {
		n.dropRaw(unix.NETLINK_NETFILTER)
		return err
	}
	for ch, tags := range chains {
		if tvPattern.MatchString(ch) && (port == "" || ch == port) {
			into[ch] = parseGuard(ch, tags)
		}
	}
	// A guard's table without rules does not show in a dump of rules: a
	// chain left empty by a failed transaction, or no chain at all, which
	// is what Debian 12's kernel (6.1) leaves when the port goes before
	// its guard, a container's namespace taking the veth pair with it: it
	// deletes a netdev chain with its only device, not its table (Debian
	// 13's 6.12 keeps the chain; the VM suite records both). Either reads
	// back as a broken guard, replaced or removed.
	if port != "" {
		if _, ok := into[port]; ok {
			return nil
		}
		ok, err := nftTableExists(c, unix.NFPROTO_NETDEV, table)
		if err != nil {
			n.dropRaw(unix.NETLINK_NETFILTER)
			return err
		}
		if ok {
			into[port] = parseGuard(port, nil)
		}
		return nil
	}
	nc, err := n.tables()
	if err != nil {
		return err
	}
	all, err := nc.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range all {
		p, ok := strings.CutPrefix(t.Name, guardTablePrefix)
		if !ok || !tvPattern.MatchString(p) {
			continue
		}
		if _, ok := into[p]; !ok {
			into[p] = parseGuard(p, nil)
		}
	}
	return nil
}

// migrateGuards replaces the single netdev table in which tenetd before
// per-port tables kept every guard of the namespace by one table per
// guard, in one transaction (no port is unguarded in between). A chain
// that does not read back as a guard is not carried over: the reconcile
// then finds that port's guard missing and makes it.
func migrateGuards(n *nsNet, c *mnl.Conn) error {
	old, err := nftRuleTags(c, unix.NFPROTO_NETDEV, nftTable, "", "")
	if err != nil {
		n.dropRaw(unix.NETLINK_NETFILTER)
		return err
	}
	nc, err := n.tables()
	if err != nil {
		return err
	}
	if len(old) == 0 {
		// No rules: the table may still be there, empty or with empty
		// chains.
		tables, err := nc.ListTablesOfFamily(nftables.TableFamilyNetdev)
		if err != nil {
			return fmt.Errorf("nftables: list tables: %w", err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == nftTable }) {
			return nil
		}
	}
	nc.DelTable(tableOf(nftables.TableFamilyNetdev))
	for port, tags := range old {
		if g := parseGuard(port, tags); tvPattern.MatchString(port) && g.MAC != "unreadable" {
			if err := addGuard(nc, g); err != nil {
				continue // its port's guard is made anew by the reconcile
			}
		}
	}
	if err := n.flush(nc); err == nil {
		return nil
	}
	// One of them cannot be made (its port just went away): drop the old
	// table alone; the reconcile makes every guard still wanted at once.
	nc, err = n.tables()
	if err != nil {
		return err
	}
	nc.DelTable(tableOf(nftables.TableFamilyNetdev))
	if err := ignoreNotFound(n.flush(nc)); err != nil {
		return fmt.Errorf("move guards into a table per port: %w", err)
	}
	return nil
}
