package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// TestBadInputIsRefusedAndChangesNothing (issue 10, points 8 and 9): each
// bad request through Docker or tenetctl is refused with an error naming
// what was wrong and leaves nothing behind; a removed host disappears from
// host ls and status on every host. Most of these were accepted on f959d08.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	ds := c.StartTenetds(t)
	ctx := t.Context()
	ctl := func(h e2e.Host, args ...string) (string, error) {
		return h.Run(ctx, append([]string{c.Dir + "/tenetctl"}, args...)...)
	}
	e := c.Engine(0)
	create := func(extra ...string) (string, error) {
		args := append([]string{"network", "create", "-d", "tenet"}, extra...)
		return e.Docker(ctx, append(args, fmt.Sprintf("bad%d", time.Now().UnixNano()))...)
	}
	ipam := []string{"--ipam-driver", "tenet", "--ipam-opt", "tenant=acme", "-o", "tenant=acme", "-o", "network=n"}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"everything", append(ipam, "--subnet", "0.0.0.0/0"), "0.0.0.0/0"},
		{"link-local", append(ipam, "--subnet", "169.254.10.0/24"), "link-local"},
		{"loopback", append(ipam, "--subnet", "127.0.0.0/24"), "loopback"},
		{"multicast", append(ipam, "--subnet", "224.1.0.0/24"), "multicast"},
		{"the underlay", append(ipam, "--subnet", "198.51.100.0/25"), "underlay"},
		{"mtu above the underlay's", append(ipam, "--subnet", "10.9.0.0/24", "-o", "com.docker.network.driver.mtu=9000"), "mtu 9000"},
		{"docker's own ipam", []string{"-o", "tenant=acme", "-o", "network=n", "--subnet", "10.9.0.0/24"}, "--ipam-driver tenet"},
		{"tenants differ", []string{"--ipam-driver", "tenet", "--ipam-opt", "tenant=globex", "-o", "tenant=acme", "-o", "network=n", "--subnet", "10.9.0.0/24"}, "does not match"},
	} {
		out, err := create(tt.args...)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("%s: docker network create %v: err %v, output %q; want a refusal naming %q", tt.name, tt.args, err, out, tt.want)
		}
	}
	if out, _ := e.Docker(ctx, "network", "ls", "--filter", "driver=tenet", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("refused networks left behind: %q", out)
	}
	// Every refused pool was given back: the subnets work now.
	if _, err := create(append(ipam, "--subnet", "10.9.0.0/24")...); err != nil {
		t.Fatalf("a valid network after the refusals: %v", err)
	}

	// Where tenants are defined, a network of another tenant is refused.
	if out, err := ctl(c.Hosts[1], "tenant", "create", "acme"); err != nil {
		t.Fatal(out)
	}
	e2e.Eventually(t, 5*time.Second, func() error {
		out, err := create("--ipam-driver", "tenet", "--ipam-opt", "tenant=initech", "-o", "tenant=initech", "-o", "network=n", "--subnet", "10.8.0.0/24")
		if err == nil || !strings.Contains(out, `tenant "initech" is not defined`) {
			return fmt.Errorf("undefined tenant: err %v, output %q", err, out)
		}
		return nil
	})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "acme/x", "--subnet", "0.0.0.0/0"}, "0.0.0.0/0"},
		{[]string{"network", "create", "acme/x", "--subnet", "198.51.100.128/25"}, "underlay"},
		{[]string{"network", "create", "acme/x", "--subnet", "10.7.0.0/24", "--mtu", "9000"}, "mtu 9000"},
		{[]string{"host", "remove", "h9"}, "no such host"},
		// The hand-made network of acme on h0 keeps the tenant.
		{[]string{"tenant", "rm", "acme"}, "still has network acme/n"},
	} {
		out, err := ctl(c.Hosts[1], tt.args...)
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("tenetctl %v: err %v, output %q; want a refusal naming %q", tt.args, err, out, tt.want)
		}
	}

	// A host gone for good, once removed, is no longer listed anywhere.
	if err := ds[2].Daemon.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 20*time.Second, func() error {
		out, err := ctl(c.Hosts[0], "host", "remove", "h2")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	for _, h := range c.Hosts[:2] {
		e2e.Eventually(t, 10*time.Second, func() error {
			out, err := ctl(h, "host", "ls", "--json")
			if err != nil {
				return err
			}
			var hosts []struct{ Name string }
			if err := json.Unmarshal([]byte(out), &hosts); err != nil {
				return err
			}
			for _, x := range hosts {
				if x.Name == "h2" {
					return fmt.Errorf("%s still lists h2: %s", h.Name(), out)
				}
			}
			out, err = ctl(h, "status", "--json")
			if err != nil {
				return err
			}
			var st struct {
				HostsDown int      `json:"hosts_down"`
				Warnings  []string `json:"warnings"`
			}
			if err := json.Unmarshal([]byte(out), &st); err != nil || st.HostsDown != 0 || len(st.Warnings) != 0 {
				return fmt.Errorf("%s: status after removing h2: %s", h.Name(), out)
			}
			return nil
		})
	}
}
