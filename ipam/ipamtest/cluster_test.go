package ipamtest

import (
	"fmt"
	"testing"
	"time"
)

func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
}

func value(n *Node, key, host string) string {
	for _, e := range n.List(key) {
		if e.Key == key && e.Host == host {
			return string(e.Value)
		}
	}
	return ""
}

func TestPartitionHoldsAndHealDelivers(t *testing.T) {
	c := NewCluster(time.Millisecond, 1)
	a, b := c.Node("a"), c.Node("b")
	c.Partition([]string{"a"}, []string{"b"})
	if got := b.Members(); got[0].Alive {
		t.Fatalf("b sees a alive across the partition: %v", got)
	}
	for i := range 10 {
		a.Put("k", fmt.Appendf(nil, "v%d", i))
	}
	time.Sleep(10 * time.Millisecond) // a negative check: nothing may arrive while partitioned
	if v := value(b, "k", "a"); v != "" {
		t.Fatalf("b got %q across the partition", v)
	}
	c.Heal()
	// Delivered in random order, the highest Lamport version wins.
	eventually(t, func() error {
		if v := value(b, "k", "a"); v != "v9" {
			return fmt.Errorf("b has %q, want v9", v)
		}
		return nil
	})
	a.Delete("k")
	eventually(t, func() error {
		if v := value(b, "k", "a"); v != "" {
			return fmt.Errorf("b still has %q after delete", v)
		}
		return nil
	})
}

func TestJoinSyncAndDeadHosts(t *testing.T) {
	c := NewCluster(0, 2)
	a := c.Node("a")
	a.Put("x", []byte("1"))
	c.Kill("a")
	n := c.Node("n")
	for _, m := range n.Members() {
		if m.Name == "a" && m.Alive {
			t.Fatal("dead a seen alive")
		}
	}
	c.Revive("a")
	eventually(t, func() error {
		if v := value(n, "x", "a"); v != "1" {
			return fmt.Errorf("joining n has %q, want a's entry", v)
		}
		return nil
	})
	ch, cancel := n.Subscribe(1)
	defer cancel()
	a.Put("y", []byte("2"))
	select {
	case ev := <-ch:
		if ev.Key != "y" || ev.Host != "a" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change notice")
	}
}
