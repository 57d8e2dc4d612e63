package resolver

import (
	"net"
	"net/netip"
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
