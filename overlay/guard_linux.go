package overlay

// Port guards: a small BPF program per local endpoint, a tc filter on the
// ingress of its port (clsact), which drops every frame the endpoint does
// not send as itself (the rules are in firewall_linux.go's header). The
// filter belongs to the port: it costs the same on the 1,000th port as on
// the 1st, and it goes when the port goes. Guards in nf_tables did
// neither: each message of a guard's transaction looked its table up in a
// list of every table of the namespace, every device event there walked
// every netdev chain (the 1,000th endpoint cost about twice the 1st), and
// Debian 12's kernel left a guard's table behind when the port went first.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// guardName names a guard's filter: "tenet-guard-v2 <port> <mac>
	// <ipv4|none>", which is how Observe reads it back.
	guardName = "tenet-guard-v2"
	// guardPrio and guardHandle place the guard's filter on its port.
	guardPrio   = 1
	guardHandle = 1

	// legacyGuardPrefix begins the names of the nf_tables tables in which
	// tenetd kept guards before: one table "tenet" for all of a
	// namespace's guards, later "tenet-<port>" per port.
	legacyGuardPrefix = nftTable

	actOK   = 0 // TC_ACT_OK: the frame goes on
	actShot = 2 // TC_ACT_SHOT: dropped

	// Offsets in struct __sk_buff.
	skbVlanPresent = 20
	skbData        = 76
	skbDataEnd     = 80
)

// guardFilterName is g's filter's name.
func guardFilterName(g Guard) string {
	return fmt.Sprintf("%s %s %s %s", guardName, g.Port, g.MAC, ipOrNone(g.IPv4))
}

func ipOrNone(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return "none"
}

// parseGuardName reads a guard back from its filter's name; ok is false
// for a name that is not a guard of port.
func parseGuardName(port, name string) (Guard, bool) {
	f := strings.Fields(name)
	if len(f) != 4 || f[0] != guardName || f[1] != port {
		return Guard{}, false
	}
	if mac, err := net.ParseMAC(f[2]); err != nil || len(mac) != 6 || mac.String() != f[2] {
		return Guard{}, false
	}
	g := Guard{Port: port, MAC: f[2]}
	if f[3] != "none" {
		ip, err := netip.ParseAddr(f[3])
		if err != nil || !ip.Is4() {
			return Guard{}, false
		}
		g.IPv4 = ip
	}
	return g, true
}

// brokenGuard is what a port's filters that are not a guard read back as:
// a guard that matches no wanted one, so the reconcile makes it anew.
func brokenGuard(port string) Guard { return Guard{Port: port, MAC: "unreadable"} }

// guardProgram is g's program. It reads the frame as sent: a VLAN tag,
// which the kernel has taken off into the packet's metadata before tc
// sees the frame, is dropped whatever it carries; then the source MAC;
// then by ethertype: IPv4 from its address only, ARP only with its MAC
// and address as the sender, IPv6 (MAC checked), nothing else. Without an
// IPv4 address only IPv6 passes.
func guardProgram(g Guard) (asm.Instructions, error) {
	mac, err := net.ParseMAC(g.MAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("guard %s: mac %q: must be 6 bytes", g.Port, g.MAC)
	}
	if g.IPv4.IsValid() && !g.IPv4.Is4() {
		return nil, fmt.Errorf("guard %s: %s is not an IPv4 address", g.Port, g.IPv4)
	}
	// A load from the packet reads bytes in the machine's order; the
	// constants compared with them are read the same way.
	ne := binary.NativeEndian
	word := func(b []byte) int32 { return int32(ne.Uint32(b)) }
	half := func(b []byte) int32 { return int32(ne.Uint16(b)) }
	ether := func(t uint16) int32 { return half(binary.BigEndian.AppendUint16(nil, t)) }
	macHi, macLo := word(mac[:4]), half(mac[4:])
	var addr int32
	if g.IPv4.IsValid() {
		ip := g.IPv4.As4()
		addr = word(ip[:])
	}

	// frame loads the frame's start into R2 and end into R3.
	frame := func() []asm.Instruction {
		return []asm.Instruction{
			asm.LoadMem(asm.R2, asm.R6, skbData, asm.Word),
			asm.LoadMem(asm.R3, asm.R6, skbDataEnd, asm.Word),
		}
	}
	// atLeast drops a frame shorter than n bytes.
	atLeast := func(n int32) []asm.Instruction {
		return []asm.Instruction{
			asm.Mov.Reg(asm.R5, asm.R2),
			asm.Add.Imm(asm.R5, n),
			asm.JGT.Reg(asm.R5, asm.R3, "drop"),
		}
	}
	const headers = 32 // the most any check reads: an ARP sender's address ends at 32
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R4, asm.R6, skbVlanPresent, asm.Word),
		asm.JNE.Imm(asm.R4, 0, "drop"),
	}
	ins = append(ins, frame()...)
	// Headers not all in the linear part are pulled in first (a frame
	// shorter than that fails its own checks below).
	ins = append(ins,
		asm.Mov.Reg(asm.R5, asm.R2),
		asm.Add.Imm(asm.R5, headers),
		asm.JLE.Reg(asm.R5, asm.R3, "linear"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, headers),
		asm.FnSkbPullData.Call(),
	)
	ins = append(ins, frame()...)
	eth := atLeast(14)
	eth[0] = eth[0].WithSymbol("linear")
	ins = append(ins, eth...)
	ins = append(ins,
		asm.LoadMem(asm.R4, asm.R2, 6, asm.Word),
		asm.JNE.Imm32(asm.R4, macHi, "drop"),
		asm.LoadMem(asm.R4, asm.R2, 10, asm.Half),
		asm.JNE.Imm32(asm.R4, macLo, "drop"),
		asm.LoadMem(asm.R4, asm.R2, 12, asm.Half),
		asm.JEq.Imm32(asm.R4, ether(unix.ETH_P_IPV6), "pass"),
	)
	if g.IPv4.IsValid() {
		ins = append(ins,
			asm.JEq.Imm32(asm.R4, ether(unix.ETH_P_ARP), "arp"),
			asm.JNE.Imm32(asm.R4, ether(unix.ETH_P_IP), "drop"),
		)
		ins = append(ins, atLeast(30)...)
		ins = append(ins,
			asm.LoadMem(asm.R4, asm.R2, 26, asm.Word), // IPv4 source
			asm.JNE.Imm32(asm.R4, addr, "drop"),
			asm.Ja.Label("pass"),
		)
		arp := atLeast(headers)
		arp[0] = arp[0].WithSymbol("arp")
		ins = append(ins, arp...)
		ins = append(ins,
			asm.LoadMem(asm.R4, asm.R2, 22, asm.Word), // sender's MAC
			asm.JNE.Imm32(asm.R4, macHi, "drop"),
			asm.LoadMem(asm.R4, asm.R2, 26, asm.Half),
			asm.JNE.Imm32(asm.R4, macLo, "drop"),
			asm.LoadMem(asm.R4, asm.R2, 28, asm.Word), // sender's address
			asm.JNE.Imm32(asm.R4, addr, "drop"),
		)
	} else {
		ins = append(ins, asm.Ja.Label("drop"))
	}
	ins = append(ins,
		asm.Mov.Imm(asm.R0, actOK).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, actShot).WithSymbol("drop"),
		asm.Return(),
	)
	return ins, nil
}

// loadGuard loads g's program.
func loadGuard(g Guard) (*ebpf.Program, error) {
	ins, err := guardProgram(g)
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "tenet_guard", Type: ebpf.SchedCLS,
		Instructions: ins, License: "Apache-2.0"})
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, ebpf.ErrNotSupported) {
		return nil, fmt.Errorf("port guards (BPF programs on tc): %w (%w)", ErrNotSupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load a port guard's BPF program: %w", err)
	}
	return prog, nil
}

// probeGuards loads a guard's program once, so that a kernel without BPF
// is found when the datapath starts, not at its first endpoint.
func probeGuards() error {
	prog, err := loadGuard(Guard{Port: "probe", MAC: "02:00:00:00:00:01", IPv4: netip.AddrFrom4([4]byte{10, 0, 0, 1})})
	if err != nil {
		return err
	}
	return prog.Close()
}

// setGuard makes g's filter on its port: the port's clsact qdisc if it is
// missing, the filter replaced in place (the port is never unguarded in
// between), any other filter on the port's ingress removed.
func setGuard(n *nsNet, g Guard) error {
	prog, err := loadGuard(g)
	if err != nil {
		return err
	}
	defer prog.Close()
	l, err := linkByName(n, g.Port)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("guard %s: no such port", g.Port)
	}
	idx := l.Attrs().Index
	q := clsact(idx)
	if err := n.h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add a clsact qdisc to %s: %w", g.Port, err)
	}
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_INGRESS,
		Priority: guardPrio, Handle: guardHandle, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: guardFilterName(g), DirectAction: true}
	if err := n.h.FilterReplace(f); err != nil {
		// Another filter holds the guard's place: start the port's
		// ingress afresh.
		if derr := n.h.QdiscDel(q); derr != nil && ignoreNotFound(derr) != nil {
			return fmt.Errorf("add the guard's filter to %s: %w (and clear its qdisc: %v)", g.Port, err, derr)
		}
		if err := n.h.QdiscAdd(q); err != nil {
			return fmt.Errorf("add a clsact qdisc to %s: %w", g.Port, err)
		}
		if err := n.h.FilterAdd(f); err != nil {
			return fmt.Errorf("add the guard's filter to %s: %w", g.Port, err)
		}
		return nil
	}
	fs, err := n.h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list filters of %s: %w", g.Port, err)
	}
	for _, f := range fs {
		if a := f.Attrs(); a.Priority != guardPrio || a.Handle != guardHandle {
			if err := n.h.FilterDel(f); ignoreNotFound(err) != nil {
				return fmt.Errorf("remove a foreign filter from %s: %w", g.Port, err)
			}
		}
	}
	return nil
}

// clsact is the clsact qdisc of the link with index idx, on whose ingress
// a guard's filter sits.
func clsact(idx int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
}

// delGuard removes a port's guard (its clsact qdisc, with every filter on
// it); no-op if the port or its qdisc is gone.
func delGuard(n *nsNet, port string) error {
	l, err := linkByName(n, port)
	if err != nil || l == nil {
		return err
	}
	if err := n.h.QdiscDel(clsact(l.Attrs().Index)); ignoreNotFound(err) != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("remove the clsact qdisc of %s: %w", port, err)
	}
	return nil
}

// readGuard reads l's guard; ok is false if l's ingress has no filter.
// Filters that are not exactly one guard of l read back as brokenGuard.
func readGuard(n *nsNet, l netlink.Link) (Guard, bool, error) {
	port := l.Attrs().Name
	fs, err := n.h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return Guard{}, false, fmt.Errorf("list filters of %s: %w", port, err)
	}
	if len(fs) == 0 {
		return Guard{}, false, nil
	}
	if len(fs) != 1 {
		return brokenGuard(port), true, nil
	}
	f, ok := fs[0].(*netlink.BpfFilter)
	if !ok || !f.DirectAction || f.Priority != guardPrio || f.Handle != guardHandle || f.Protocol != unix.ETH_P_ALL {
		return brokenGuard(port), true, nil
	}
	g, ok := parseGuardName(port, f.Name)
	if !ok {
		return brokenGuard(port), true, nil
	}
	return g, true, nil
}

// observeGuards reads the guards of ns: of port only, or of every port if
// port is "" (with migrate, after moving the guards an older tenetd kept
// in nf_tables onto their ports: migrateGuards).
func observeGuards(n *nsNet, port string, migrate bool, into map[string]Guard) error {
	var links []netlink.Link
	if port != "" {
		l, err := linkByName(n, port)
		if err != nil || l == nil {
			return err
		}
		links = append(links, l)
	} else {
		if migrate {
			if err := migrateGuards(n); err != nil {
				return err
			}
		}
		all, err := n.h.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range all {
			if tvPattern.MatchString(l.Attrs().Name) {
				links = append(links, l)
			}
		}
	}
	for _, l := range links {
		g, ok, err := readGuard(n, l)
		if err != nil {
			return err
		}
		if ok {
			into[l.Attrs().Name] = g
		}
	}
	return nil
}

// legacyGuardTag is what each rule of an older tenetd's guard chain
// carried as user data: "tenet-guard-v1 <port> <mac> <ipv4|none>".
const legacyGuardTag = "tenet-guard-v1"

// parseLegacyGuard reads an older tenetd's guard chain back from its
// rules' user data: every rule must carry the same tag and name the
// chain's port; ok is false otherwise.
func parseLegacyGuard(port string, tags []string) (Guard, bool) {
	if len(tags) == 0 || slices.ContainsFunc(tags, func(t string) bool { return t != tags[0] }) {
		return Guard{}, false
	}
	name, ok := strings.CutPrefix(tags[0], legacyGuardTag+" ")
	if !ok {
		return Guard{}, false
	}
	g, ok := parseGuardName(port, guardName+" "+name)
	if !ok {
		return Guard{}, false
	}
	want := 4
	if g.IPv4.IsValid() {
		want = 5
	}
	return g, len(tags) == want
}

// migrateGuards moves the guards an older tenetd kept in nf_tables (in
// netdev tables "tenet", or "tenet-<port>") onto their ports, then
// deletes those tables in one transaction: a port whose old guard reads
// back gets its filter before the old one goes. One that does not read
// back, or whose port is gone, is not carried over: the reconcile then
// finds the port's guard missing and makes it.
func migrateGuards(n *nsNet) error {
	nc, err := n.tables()
	if err != nil {
		return err
	}
	tables, err := nc.ListTablesOfFamily(nftables.TableFamilyNetdev)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	var old []*nftables.Table
	for _, t := range tables {
		if t.Name == legacyGuardPrefix || strings.HasPrefix(t.Name, legacyGuardPrefix+"-") {
			old = append(old, t)
		}
	}
	if len(old) == 0 {
		return nil
	}
	c, err := n.raw(unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	chains, err := nftRuleTags(c, unix.NFPROTO_NETDEV, "", legacyGuardPrefix, "")
	if err != nil {
		n.dropRaw(unix.NETLINK_NETFILTER)
		return err
	}
	for port, tags := range chains {
		g, ok := parseLegacyGuard(port, tags)
		if !ok || !tvPattern.MatchString(port) {
			continue
		}
		l, err := linkByName(n, port)
		if err != nil {
			return err
		}
		if l == nil {
			continue
		}
		if _, has, err := readGuard(n, l); err != nil {
			return err
		} else if !has {
			// One that cannot be made now is made by the reconcile,
			// which finds it missing.
			_ = setGuard(n, g)
		}
	}
	nc, err = n.tables()
	if err != nil {
		return err
	}
	for _, t := range old {
		nc.DelTable(t)
	}
	if err := ignoreNotFound(n.flush(nc)); err != nil {
		return fmt.Errorf("delete the old guard tables: %w", err)
	}
	return nil
}
