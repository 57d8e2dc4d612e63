package overlay

// Diagnosis: the difference between the kernel and a desired state, told as
// findings an admin can act on rather than as ops. A finding is exactly
// one op (or one pair of ops) of the plan Reconcile would run, so what
// diagnose reports is what the next repair fixes, no more and no less.

import (
	"fmt"
	"strconv"
	"strings"
)

// Problems a Finding reports.
const (
	Missing = "missing" // wanted, not in the kernel
	Stale   = "stale"   // Tenet's (by its name or key), not wanted
	Differs = "differs" // in the kernel, with other attributes than wanted
)

// Finding is one difference between the kernel and the desired state.
type Finding struct {
	Problem string // Missing, Stale or Differs
	// Tenant whose namespace holds the object; "" for the host namespace.
	Tenant string
	// Object describes it as ip, bridge or nft would show it, with what
	// differs ("fdb 02:7e:0a:01:00:02 dev vx4097 dst 198.51.100.11").
	Object string
	// VNI of the network the object belongs to (its bridge, VXLAN device
	// or one of their entries); 0 if none.
	VNI uint32
	// MAC of an FDB or neighbour entry, so that a caller can name the
	// remote endpoint.
	MAC string
	// Port is the local endpoint's bridge port (tv<hash>) when the object
	// is its veth or guard.
	Port string
	// Fix is the op Reconcile would run, as it prints.
	Fix string
}

func (f Finding) String() string {
	where := f.Tenant
	if where == "" {
		where = "host"
	}
	return fmt.Sprintf("%s: %s %s (fix: %s)", where, f.Problem, f.Object, f.Fix)
}

// Findings tells the plan from observed to a desired snapshot (Plan's ops)
// as findings, pairing a delete with the add that replaces it (an FDB
// entry to another VTEP, a link made anew) into one Differs. Pure.
func Findings(ops []Op, observed Snapshot) []Finding {
	type key struct {
		tenant, what string
	}
	fdbAdd, linkAdd := map[key]Op{}, map[key]Op{}
	for _, op := range ops {
		switch op.Kind {
		case OpFDBAdd:
			fdbAdd[key{op.Tenant, op.FDB.Dev + " " + op.FDB.MAC}] = op
		case OpLinkAdd:
			linkAdd[key{op.Tenant, op.Link.Name}] = op
		}
	}
	paired := map[key]bool{}
	var out []Finding
	for _, op := range ops {
		f := Finding{Tenant: op.Tenant, Fix: op.String()}
		have := observed.Tenants[op.Tenant]
		switch op.Kind {
		case OpNetnsAdd:
			f.Problem, f.Object = Missing, "namespace of tenant "+op.Tenant
		case OpNetnsDel:
			f.Problem, f.Object = Stale, "namespace of tenant "+op.Tenant+" (with all in it)"
		case OpHostDel:
			f.Problem, f.Object, f.Port = Stale, "link "+op.Link.Name+" in the host namespace", portOf(op.Link.Name)
		case OpLinkDel:
			if _, ok := linkAdd[key{op.Tenant, op.Link.Name}]; ok {
				continue // told with the add that replaces it
			}
			f.Problem, f.Object = Stale, "link "+op.Link.observedString()
			f.VNI, f.Port = vniOf(op.Link.Name), portOf(op.Link.Name)
		case OpLinkAdd:
			f.Problem, f.Object = Missing, "link "+op.Link.String()
			if have != nil {
				if h, ok := have.Links[op.Link.Name]; ok {
					f.Problem, f.Object = Differs, fmt.Sprintf("link %s (must be made anew): %s", h.observedString(), op.Link.observedString())
				}
			}
			f.VNI, f.Port = vniOf(op.Link.Name), portOf(op.Link.Name)
		case OpLinkSet:
			f.Problem, f.Object = Differs, "link "+op.Link.Name+": "+linkDiff(op.Link, have)
			f.VNI, f.Port = vniOf(op.Link.Name), portOf(op.Link.Name)
		case OpFDBDel:
			k := key{op.Tenant, op.FDB.Dev + " " + op.FDB.MAC}
			if add, ok := fdbAdd[k]; ok {
				paired[k] = true
				f.Problem = Differs
				f.Object = fmt.Sprintf("fdb %s dev %s dst %s (want dst %s)", op.FDB.MAC, op.FDB.Dev, op.FDB.Dst, add.FDB.Dst)
				f.Fix = op.String() + "; " + add.String()
			} else {
				f.Problem, f.Object = Stale, fmt.Sprintf("fdb %s dev %s dst %s", op.FDB.MAC, op.FDB.Dev, op.FDB.Dst)
			}
			f.VNI, f.MAC = vniOf(op.FDB.Dev), op.FDB.MAC
		case OpFDBAdd:
			if paired[key{op.Tenant, op.FDB.Dev + " " + op.FDB.MAC}] {
				continue
			}
			f.Problem, f.Object = Missing, fmt.Sprintf("fdb %s dev %s dst %s", op.FDB.MAC, op.FDB.Dev, op.FDB.Dst)
			if op.FDB.MAC == floodMAC {
				f.Object += " (flood entry to a peer)"
			}
			f.VNI, f.MAC = vniOf(op.FDB.Dev), op.FDB.MAC
		case OpNeighDel:
			f.Problem, f.Object = Stale, fmt.Sprintf("neigh %s lladdr %s dev %s", op.Neigh.IP, op.Neigh.MAC, op.Neigh.Dev)
			f.VNI, f.MAC = vniOf(op.Neigh.Dev), op.Neigh.MAC
		case OpNeighSet:
			f.Problem, f.Object = Missing, fmt.Sprintf("neigh %s lladdr %s dev %s", op.Neigh.IP, op.Neigh.MAC, op.Neigh.Dev)
			if have != nil {
				for e := range have.Neigh {
					if e.Dev == op.Neigh.Dev && e.IP == op.Neigh.IP {
						f.Problem = Differs
						f.Object = fmt.Sprintf("neigh %s lladdr %s dev %s (want lladdr %s)", e.IP, e.MAC, e.Dev, op.Neigh.MAC)
						break
					}
				}
			}
			f.VNI, f.MAC = vniOf(op.Neigh.Dev), op.Neigh.MAC
		case OpGuardSet:
			f.Problem, f.Object, f.Port = Missing, op.Guard.String(), op.Guard.Port
			if have != nil {
				if h, ok := have.Guards[op.Guard.Port]; ok {
					if h == op.Guard {
						continue // remade only because its port is: told with the port
					}
					f.Problem = Differs
					want := strings.TrimPrefix(op.Guard.String(), "guard "+op.Guard.Port+" ")
					f.Object = fmt.Sprintf("guard %s: for %s, want %s", op.Guard.Port, strings.TrimPrefix(h.String(), "guard "+h.Port+" "), want)
					if h.MAC == "unreadable" {
						f.Object = fmt.Sprintf("guard %s: its filters are incomplete or altered, want the filter of %s", op.Guard.Port, want)
					}
				}
			}
		case OpGuardDel:
			f.Problem, f.Object, f.Port = Stale, "guard "+op.Guard.Port, op.Guard.Port
		case OpLegacyDel:
			f.Problem, f.Object = Stale, "nft table "+op.Rules+" of an earlier layout"
		case OpUplinkSet:
			f.Problem, f.Object = Missing, "uplink (egress) of tenant "+op.Tenant
			if have != nil && have.Uplink != nil {
				f.Problem = Differs
				f.Object = fmt.Sprintf("uplink of tenant %s: %s", op.Tenant, uplinkDiff(op.Uplink, have.Uplink))
			}
		case OpUplinkDel:
			f.Problem, f.Object = Stale, "uplink (egress) of tenant "+op.Tenant
		case OpHostRules:
			switch {
			case op.Rules == "":
				f.Problem, f.Object = Stale, "host rule set (nft table ip tenet)"
			case observed.HostRules == "":
				f.Problem, f.Object = Missing, "host rule set (nft table ip tenet) and forwarding"
			default:
				f.Problem, f.Object = Differs, fmt.Sprintf("host rule set: layout %s, want %s", observed.HostRules, op.Rules)
			}
		case OpElemAdd:
			f.Problem, f.Object = Missing, fmt.Sprintf("nft element { %s } of set %s", op.Elem.Key, op.Elem.Set)
		case OpElemDel:
			f.Problem, f.Object = Stale, fmt.Sprintf("nft element { %s } of set %s", op.Elem.Key, op.Elem.Set)
		default:
			f.Problem, f.Object = Differs, op.String()
		}
		out = append(out, f)
	}
	return out
}

// linkDiff lists the attributes of want that the observed link lacks.
func linkDiff(want Link, have *TenantObjects) string {
	if have == nil {
		return "not found"
	}
	h, ok := have.Links[want.Name]
	if !ok {
		return "not found"
	}
	var d []string
	if h.MTU != want.MTU {
		d = append(d, fmt.Sprintf("mtu %d (want %d)", h.MTU, want.MTU))
	}
	if h.Master != want.Master {
		d = append(d, fmt.Sprintf("master %q (want %q)", h.Master, want.Master))
	}
	if h.Up != want.Up {
		d = append(d, fmt.Sprintf("up %t (want %t)", h.Up, want.Up))
	}
	if h.Addr != want.Addr {
		d = append(d, fmt.Sprintf("addr %v (want %v)", h.Addr, want.Addr))
	}
	if h.MAC != want.MAC {
		d = append(d, fmt.Sprintf("address %s (want %s)", h.MAC, want.MAC))
	}
	return strings.Join(d, ", ")
}

func uplinkDiff(want, have *Uplink) string {
	var d []string
	if have.Index != want.Index || have.HostLink != want.HostLink {
		d = append(d, fmt.Sprintf("/30 #%d via %s (want #%d via %s)", have.Index, have.HostLink, want.Index, want.HostLink))
	}
	if have.Rules != want.Rules {
		d = append(d, fmt.Sprintf("rule layout %s (want %s)", have.Rules, want.Rules))
	}
	if have.Ready != want.Ready {
		d = append(d, "forwarding or default route missing, or an end down")
	}
	return strings.Join(d, ", ")
}

// vniOf reads the VNI from a bridge or VXLAN device name; 0 otherwise.
func vniOf(dev string) uint32 {
	for _, p := range []string{"br", "vx"} {
		if s, ok := strings.CutPrefix(dev, p); ok {
			if v, err := strconv.ParseUint(s, 10, 32); err == nil {
				return uint32(v)
			}
		}
	}
	return 0
}

// portOf returns the bridge port name of an endpoint's veth (either end).
func portOf(link string) string {
	if s, ok := strings.CutPrefix(link, "tc"); ok && isTag(s) {
		return "tv" + s
	}
	if s, ok := strings.CutPrefix(link, "tv"); ok && isTag(s) {
		return link
	}
	return ""
}

// isTag says whether s is an endpoint tag: 12 lower-case hex digits.
func isTag(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
