package resolver

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// Record is one endpoint on a network: the names it answers to (container
// name first) and its address.
type Record struct {
	Names []string
	IP    netip.Addr
}

// Index is a set of records by lower-case name and by address.
type Index struct {
	byName map[string][]netip.Addr
	byIP   map[netip.Addr]string // the first name of the first record
}

// NewIndex indexes recs.
func NewIndex(recs []Record) *Index {
	x := &Index{byName: make(map[string][]netip.Addr, len(recs)), byIP: make(map[netip.Addr]string, len(recs))}
	for _, r := range recs {
		for _, n := range r.Names {
			n = strings.ToLower(n)
			x.byName[n] = append(x.byName[n], r.IP)
		}
		if _, ok := x.byIP[r.IP]; !ok && len(r.Names) > 0 && r.IP.IsValid() {
			x.byIP[r.IP] = r.Names[0]
		}
	}
	return x
}

// Group is the records of one network and the suffixes their names may
// carry (the network's Docker names, lower case, no dot at either end).
type Group struct {
	Suffixes []string
	Index    *Index
}

// NetView is what a query is answered from: the groups of the asking
// container's networks.
type NetView struct {
	Groups []Group
}

// TTL of the answers: a second, not Docker's 600 s, which would keep a
// removed container's address in caches far too long.
const TTL = 1

// Answer answers q from v. ok is false when v has no record of the name
// asked (the caller forwards or refuses). q must have one question.
func Answer(q *dns.Msg, v NetView) (resp *dns.Msg, ok bool) {
	question := q.Question[0]
	if question.Qclass != dns.ClassINET {
		return nil, false
	}
	name := strings.ToLower(strings.TrimSuffix(question.Name, "."))
	if question.Qtype == dns.TypePTR {
		return answerPTR(q, name, v)
	}
	var ips []netip.Addr
	found := false
	for _, g := range v.Groups {
		if a, ok := g.lookup(name); ok {
			found = true
			ips = append(ips, a...)
		}
	}
	if !found {
		return nil, false
	}
	resp = reply(q)
	for _, ip := range ips {
		switch {
		case question.Qtype == dns.TypeA && ip.Is4():
			resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr(question.Name, dns.TypeA), A: net.IP(ip.AsSlice())})
		case question.Qtype == dns.TypeAAAA && ip.Is6():
			resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr(question.Name, dns.TypeAAAA), AAAA: net.IP(ip.AsSlice())})
		}
	}
	return resp, true
}

// lookup finds name (lower case), bare or with one of g's suffixes.
func (g Group) lookup(name string) ([]netip.Addr, bool) {
	if g.Index == nil {
		return nil, false
	}
	var out []netip.Addr
	found := false
	if a, ok := g.Index.byName[name]; ok {
		out, found = append(out, a...), true
	}
	for _, s := range g.Suffixes {
		if bare, ok := strings.CutSuffix(name, "."+s); ok && bare != "" {
			if a, ok := g.Index.byName[bare]; ok {
				out, found = append(out, a...), true
			}
		}
	}
	return out, found
}

func answerPTR(q *dns.Msg, name string, v NetView) (*dns.Msg, bool) {
	ip, ok := reverseAddr(name)
	if !ok {
		return nil, false
	}
	var resp *dns.Msg
	for _, g := range v.Groups {
		if g.Index == nil {
			continue
		}
		n, ok := g.Index.byIP[ip]
		if !ok {
			continue
		}
		if resp == nil {
			resp = reply(q)
		}
		target := n
		if len(g.Suffixes) > 0 {
			target += "." + g.Suffixes[0]
		}
		resp.Answer = append(resp.Answer, &dns.PTR{Hdr: hdr(q.Question[0].Name, dns.TypePTR), Ptr: dns.Fqdn(target)})
	}
	return resp, resp != nil
}

// reverseAddr parses an in-addr.arpa or ip6.arpa name of a whole address.
func reverseAddr(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		parts := strings.Split(rest, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		ip, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
		return ip, err == nil && ip.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		nibbles := strings.Split(rest, ".")
		if len(nibbles) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, n := range nibbles {
			if len(n) != 1 {
				return netip.Addr{}, false
			}
			var v byte
			switch c := n[0]; {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			pos := 31 - i // nibbles come least significant first
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

func reply(q *dns.Msg) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(q)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	return resp
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: TTL}
}

// NetNames is one network's names, as the asking container sees them:
// this host's containers and other hosts'.
type NetNames struct {
	Local, Remote Group
}

// Widen adds to resp, the embedded DNS's answer to a container for a name
// its engine holds, the addresses other hosts' containers have for that
// name on the same network: Docker answers such a name (an alias shared
// across hosts) with its own host's containers only. The network is the
// one of nets whose local containers have the name and an address Docker
// answered with; Docker answers from one network, so a name of another
// network of the container, or of one Docker answered from that Tenet does
// not know, is left alone. Added records, and Docker's for the name, get
// Tenet's TTL (one RRset, one TTL), and the addresses are shuffled, as
// Docker shuffles its own. Records that would take resp (compressed) past
// size bytes are left out: the client gets fewer addresses, not a
// truncated answer (its retry over TCP would get Docker's alone). It
// reports whether resp changed.
func Widen(resp *dns.Msg, nets []NetNames, size int) bool {
	if !resp.Response || resp.Rcode != dns.RcodeSuccess || len(resp.Question) != 1 || len(resp.Answer) == 0 {
		return false
	}
	question := resp.Question[0]
	if question.Qclass != dns.ClassINET || (question.Qtype != dns.TypeA && question.Qtype != dns.TypeAAAA) {
		return false
	}
	name := strings.ToLower(strings.TrimSuffix(question.Name, "."))
	answered := map[netip.Addr]bool{}
	for _, rr := range resp.Answer {
		if !strings.EqualFold(rr.Header().Name, question.Name) {
			return false // a CNAME chain: not one of Docker's own answers
		}
		switch rr := rr.(type) {
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(rr.A.To4()); ok {
				answered[ip] = true
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
				answered[ip.Unmap()] = true
			}
		default:
			return false
		}
	}
	var add []netip.Addr
	for _, n := range nets {
		local, ok := n.Local.lookup(name)
		if !ok || !slices.ContainsFunc(local, func(a netip.Addr) bool { return answered[a] }) {
			continue
		}
		remote, _ := n.Remote.lookup(name)
		for _, a := range remote {
			if !answered[a] && a.Is4() == (question.Qtype == dns.TypeA) {
				answered[a] = true
				add = append(add, a)
			}
		}
		break // Docker answers from one network
	}
	resp.Compress = true
	had := len(resp.Answer)
	for _, a := range add {
		var rr dns.RR
		if a.Is4() {
			rr = &dns.A{Hdr: hdr(question.Name, dns.TypeA), A: net.IP(a.AsSlice())}
		} else {
			rr = &dns.AAAA{Hdr: hdr(question.Name, dns.TypeAAAA), AAAA: net.IP(a.AsSlice())}
		}
		resp.Answer = append(resp.Answer, rr)
		if resp.Len() > size {
			resp.Answer = resp.Answer[:len(resp.Answer)-1]
			break
		}
	}
	if len(resp.Answer) == had {
		return false
	}
	for _, rr := range resp.Answer {
		rr.Header().Ttl = TTL
	}
	rand.Shuffle(len(resp.Answer), func(i, j int) { resp.Answer[i], resp.Answer[j] = resp.Answer[j], resp.Answer[i] })
	return true
}
