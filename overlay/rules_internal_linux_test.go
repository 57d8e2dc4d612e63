package overlay

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
)

// TestElementsReadBackAsWritten encodes elements as the kernel holds them
// and decodes them back, interval bounds in any order (as a dump returns
// them).
func TestElementsReadBackAsWritten(t *testing.T) {
	in := map[string][]Elem{
		setPairs:  {{setPairs, "br4097 . br4097"}, {setPairs, "br16777215 . up0"}},
		setPorts:  {{setPorts, "tcp . 7946"}, {setPorts, "udp . 4789"}, {setPorts, "udp . 65535"}},
		setPub:    {{setPub, "tcp . 8080 : 10.1.0.5 . 80"}, {setPub, "udp . 65535 : 255.255.255.254 . 1"}},
		setPubAny: {{setPubAny, "tcp . 1 : 169.254.0.6"}},
		setPubIP:  {{setPubIP, "udp . 127.0.0.1 . 5353 : 169.254.255.250"}},
		setDeny: {{setDeny, "0.0.0.0-0.0.0.0"}, {setDeny, "10.0.0.0-10.0.0.255"}, {setDeny, "198.51.100.11-198.51.100.11"},
			{setDeny, "255.255.255.0-255.255.255.255"}},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for set, els := range in {
		var keys []nftables.SetElement
		for _, e := range els {
			k, err := elemKeys(e)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k...)
		}
		rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
		got := decodeElems(set, keys)
		if diff := cmp.Diff(els, got, cmpSortElems); diff != "" {
			t.Errorf("set %s (-written +read):\n%s", set, diff)
		}
	}
	for _, bad := range []Elem{{setPairs, "br1"}, {setPairs, "a-very-long-interface . up0"}, {setPorts, "sctp . 1"},
		{setPorts, "tcp . 70000"}, {setDeny, "10.0.0.1"}, {"nosuch", "x"}, {setPub, "tcp . 8080"}, {setPub, "tcp . 0 : 10.1.0.5 . 80"},
		{setPubAny, "tcp . 80 : ::1"}, {setPubIP, "tcp . 80 : 169.254.0.6"}, {setPub, "icmp . 1 : 10.1.0.5 . 1"}} {
		if _, err := elemKeys(bad); err == nil {
			t.Errorf("elemKeys(%v) accepted", bad)
		}
	}
}

var cmpSortElems = cmp.Transformer("sort", func(es []Elem) map[Elem]bool {
	m := map[Elem]bool{}
	for _, e := range es {
		m[e] = true
	}
	return m
})

func TestGuardsReadBackFromTheirNames(t *testing.T) {
	g := Guard{Port: "tv0123456789ab", MAC: "02:7e:0a:01:00:05", IPv4: netip.MustParseAddr("10.1.0.5")}
	noIP := Guard{Port: g.Port, MAC: g.MAC}
	for _, want := range []Guard{g, noIP} {
		if got, ok := parseGuardName(g.Port, guardFilterName(want)); !ok || got != want {
			t.Errorf("parseGuardName(%q) = %v, %v; want %v", guardFilterName(want), got, ok, want)
		}
	}
	for name, bad := range map[string]string{
		"empty":             "",
		"another port's":    guardFilterName(Guard{Port: "tv000000000000", MAC: g.MAC}),
		"an older version":  "tenet-guard-v1 " + g.Port + " " + g.MAC + " none",
		"not an ip address": guardName + " " + g.Port + " " + g.MAC + " 10.1.0",
		"an IPv6 address":   guardName + " " + g.Port + " " + g.MAC + " fe80::1",
		"a short mac":       guardName + " " + g.Port + " 02:7e:0a:01:00 none",
		"an upper-case mac": guardName + " " + g.Port + " 02:7E:0A:01:00:05 none",
		"a word more":       guardFilterName(g) + " x",
	} {
		if got, ok := parseGuardName(g.Port, bad); ok {
			t.Errorf("%s: parseGuardName(%q) = %v, want not a guard", name, bad, got)
		}
	}

	// An older tenetd's guard chain: each of its rules carried the tag.
	legacy := func(g Guard, n int) []string {
		tags := make([]string, n)
		for i := range tags {
			tags[i] = legacyGuardTag + " " + g.Port + " " + g.MAC + " " + ipOrNone(g.IPv4)
		}
		return tags
	}
	if got, ok := parseLegacyGuard(g.Port, legacy(g, 5)); !ok || got != g {
		t.Errorf("parseLegacyGuard = %v, %v; want %v", got, ok, g)
	}
	if got, ok := parseLegacyGuard(g.Port, legacy(noIP, 4)); !ok || got != noIP {
		t.Errorf("parseLegacyGuard without ip = %v, %v; want %v", got, ok, noIP)
	}
	for name, bad := range map[string][]string{
		"no rules":       nil,
		"a rule missing": legacy(g, 4),
		"a rule more":    legacy(noIP, 5),
		"mixed tags":     append(legacy(noIP, 1), legacy(g, 4)...),
		"another port's": legacy(Guard{Port: "tv000000000000", MAC: g.MAC}, 4),
	} {
		if got, ok := parseLegacyGuard(g.Port, bad); ok {
			t.Errorf("%s: parseLegacyGuard = %v, want not a guard", name, got)
		}
	}
}
