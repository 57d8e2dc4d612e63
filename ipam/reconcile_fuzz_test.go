package ipam

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// staticReplica is a Replica whose table is fixed by the test.
type staticReplica struct{ entries []Entry }

func (s *staticReplica) Put(key string, value []byte) error {
	for i, e := range s.entries {
		if e.Key == key && e.Host == "me" {
			s.entries[i].Value, s.entries[i].Version = value, e.Version+1
			return nil
		}
	}
	s.entries = append(s.entries, Entry{Key: key, Host: "me", Value: value, Version: 1})
	return nil
}
func (s *staticReplica) Delete(key string) error { return nil }
func (s *staticReplica) List(prefix string) []Entry {
	var out []Entry
	for _, e := range s.entries {
		if strings.HasPrefix(e.Key, prefix) {
			out = append(out, e)
		}
	}
	return out
}
func (s *staticReplica) Subscribe(int) (<-chan Event, func()) { return nil, func() {} }
func (s *staticReplica) Members() []Member {
	return []Member{{Name: "me", Alive: true}, {Name: "x", Alive: true}, {Name: "d"}}
}

// FuzzReconcile feeds arbitrary entries written by other hosts, under every
// key IPAM reads, through reconcile and the request paths: a malformed or
// hostile entry must never panic, and the host must keep working.
func FuzzReconcile(f *testing.F) {
	f.Add("block/acme/10.1.0.0/24|10.1.0.64/26", []byte(`{"epoch":3,"to":"me"}`))
	f.Add("block/acme/10.1.0.0/24|10.1.0.0/26", []byte(`{"epoch":9,"to":"x","range":"10.1.0.0/25"}`))
	f.Add("want/acme/10.1.0.0/24", []byte(`{"seq":1,"donor":"me","block":"10.1.0.0/26"}`))
	f.Add("want/acme/fd00::/64", []byte(`{"seq":1,"donor":"me","range":"fd00::/120"}`))
	f.Add("reply/acme/10.1.0.0/24|me", []byte(`{"seq":1}`))
	f.Add("removal/d", []byte(`{"requester":true,"requesters":["me","x"],"held":{"ipam/block/acme/10.1.0.0/24|10.1.0.0/26":{"epoch":4,"to":"x"}}}`))
	f.Add("removal/me", []byte(`{"requester":true}`))
	f.Add("pool/acme/10.1.0.0/24", []byte(`{"gateway":"10.1.0.9","aux":["10.1.0.10"],"blockbits":26,"seeds":["me"]}`))
	f.Add("pool/acme/10.1.0.0/24", []byte(`{"gateway":"","blockbits":26,"seeds":["me","x"]}`))
	f.Add("block/acme/10.1.0.0/24|10.1.0.8/29", []byte(`{"epoch":1,"to":"me"}`))
	f.Add("block/acme/10.1.0.0/24|10.1.0.5/32", []byte(`{"epoch":4,"to":"x"}`))
	f.Add("block/acme/10.1.0.0/24|10.1.0.0/24", []byte(`{"epoch":4,"to":"me"}`))
	f.Add("block/acme/10.1.0.0/24|10.1.0.1/30", []byte(`{"epoch":1,"to":"me"}`))
	f.Add("want/acme/10.1.0.0/24", []byte(`{"seq":3,"donor":"me","block":"10.1.0.7/32"}`))
	f.Add("reply/acme/10.1.0.0/24|me", []byte(`{"seq":1,"inuse":true,"ask":["x","me","d"]}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		rep := &staticReplica{entries: []Entry{{Key: "ipam/" + key, Host: "x", Value: value, Version: 5}}}
		cfg := DefaultConfig()
		cfg.Host, cfg.Seeds = "me", []string{"me", "x"}
		m, err := New(cfg, rep)
		if err != nil {
			t.Fatal(err)
		}
		req := PoolRequest{Tenant: "acme", Subnet: netip.MustParsePrefix("10.1.0.0/24")}
		_, _ = m.RequestPool(context.Background(), req)
		m.reconcile(true)
		m.reconcile(false)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // never wait for another host here
		if a, err := m.RequestAddress(ctx, req.PoolID(), AddressRequest{}); err == nil {
			if err := m.ReleaseAddress(ctx, req.PoolID(), a.Addr()); err != nil {
				t.Fatalf("release of %s just handed out: %v", a, err)
			}
		}
		_, _ = m.Status(req.PoolID())
	})
}
