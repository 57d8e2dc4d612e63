package resolver

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

var testView = NetView{Groups: []Group{
	{Suffixes: []string{"acme-web", "acme.web"}, Index: NewIndex([]Record{
		{Names: []string{"a1", "api", "shared"}, IP: netip.MustParseAddr("10.1.0.74")},
		{Names: []string{"a2", "shared"}, IP: netip.MustParseAddr("10.1.0.138")},
		{Names: []string{"v6"}, IP: netip.MustParseAddr("fd00::5")},
		{Names: []string{"Mixed.Case"}, IP: netip.MustParseAddr("10.1.0.9")},
	})},
	{Suffixes: []string{"acme.db"}, Index: NewIndex([]Record{
		{Names: []string{"d1"}, IP: netip.MustParseAddr("10.2.0.5")},
	})},
}}

func question(name string, t uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	return m
}

func answers(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.PTR:
			out = append(out, rr.Ptr)
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		qtype uint16
		ok    bool
		want  []string
	}{
		{"a1.", dns.TypeA, true, []string{"10.1.0.74"}},
		{"A1.", dns.TypeA, true, []string{"10.1.0.74"}},
		{"api.", dns.TypeA, true, []string{"10.1.0.74"}},
		{"a1.acme-web.", dns.TypeA, true, []string{"10.1.0.74"}},
		{"a1.Acme.Web.", dns.TypeA, true, []string{"10.1.0.74"}},
		{"shared.", dns.TypeA, true, []string{"10.1.0.138", "10.1.0.74"}},
		{"a1.", dns.TypeAAAA, true, nil}, // the name exists: an empty answer, not NXDOMAIN
		{"v6.", dns.TypeAAAA, true, []string{"fd00::5"}},
		{"a1.", dns.TypeMX, true, nil},
		{"a1.other.", dns.TypeA, false, nil},
		{"mixed.case.acme-web.", dns.TypeA, true, []string{"10.1.0.9"}},
		{".acme-web.", dns.TypeA, false, nil},
		{"d1.acme.db.", dns.TypeA, true, []string{"10.2.0.5"}},
		{"d1.acme.web.", dns.TypeA, false, nil},
		{"a1.acme.db.", dns.TypeA, false, nil},
		{"5.0.2.10.in-addr.arpa.", dns.TypePTR, true, []string{"d1.acme.db."}},
		{"a1x.", dns.TypeA, false, nil},
		{"a.", dns.TypeA, false, nil},
		{"acme-web.", dns.TypeA, false, nil},
		{"a1.acme-web.x.", dns.TypeA, false, nil},
		{"example.com.", dns.TypeA, false, nil},
		{"74.0.1.10.in-addr.arpa.", dns.TypePTR, true, []string{"a1.acme-web."}},
		{"5.0.1.10.in-addr.arpa.", dns.TypePTR, false, nil},
		{"0.1.10.in-addr.arpa.", dns.TypePTR, false, nil},
		{"5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, true, []string{"v6.acme-web."}},
		{"x.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", dns.TypePTR, false, nil},
	} {
		r, ok := Answer(question(tc.name, tc.qtype), testView)
		if ok != tc.ok {
			t.Errorf("%s %s: answered %v, want %v", dns.TypeToString[tc.qtype], tc.name, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if got := answers(r); !slices.Equal(got, tc.want) {
			t.Errorf("%s %s = %v, want %v", dns.TypeToString[tc.qtype], tc.name, got, tc.want)
		}
		if r.Rcode != dns.RcodeSuccess || !r.Response || r.Id != 0 && r.Question[0].Name != tc.name {
			t.Errorf("%s %s: reply header %v", dns.TypeToString[tc.qtype], tc.name, r.MsgHdr)
		}
	}
}

func TestAnswerEmptyView(t *testing.T) {
	if _, ok := Answer(question("a1.", dns.TypeA), NetView{}); ok {
		t.Fatal("an empty network answered a1")
	}
}
