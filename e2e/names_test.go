package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// dockerName asks tenetctl which Docker network a defined network is.
func dockerName(t *testing.T, c *e2e.Cluster, h e2e.Host, key string) string {
	t.Helper()
	out, err := h.Run(t.Context(), c.Dir+"/tenetctl", "network", "inspect", key, "--json")
	if err != nil {
		t.Fatalf("tenetctl network inspect %s: %v: %s", key, err, out)
	}
	var n struct {
		DockerName string `json:"docker_name"`
	}
	if err := json.Unmarshal([]byte(out), &n); err != nil || n.DockerName == "" {
		t.Fatalf("tenetctl network inspect %s --json: %q", key, out)
	}
	return n.DockerName
}

func networkID(e *e2e.Engine, t *testing.T, name string) (string, error) {
	out, err := e.Docker(t.Context(), "network", "inspect", "-f", "{{.Id}}", name)
	return strings.TrimSpace(out), err
}

// TestDefinedNetworksNeverShareADockerName (issue 10, point 2): acme-eu/web
// and acme/eu-web both became Docker network acme-eu-web; the second was
// reported done but never appeared, and removing it made every host delete
// and recreate the first one every few seconds. Now every definition has
// a Docker name no other can have, removing one touches nothing else, and
// a definition whose name is taken by another network is refused, not
// reported done. Fails on f959d08.
func TestDefinedNetworksNeverShareADockerName(t *testing.T) {
	c := e2e.NewCluster(t, 3)
	c.StartTenetds(t)
	ctx := t.Context()
	ctl := func(h e2e.Host, args ...string) (string, error) {
		return h.Run(ctx, append([]string{c.Dir + "/tenetctl"}, args...)...)
	}
	h1 := c.Hosts[1]
	for _, args := range [][]string{
		{"tenant", "create", "acme"}, {"tenant", "create", "acme-eu"},
		{"network", "create", "acme-eu/web", "--subnet", "10.1.0.0/24"},
		{"network", "create", "acme/eu-web", "--subnet", "10.2.0.0/24"},
	} {
		if out, err := ctl(h1, args...); err != nil {
			t.Fatalf("tenetctl %v: %v: %s", args, err, out)
		}
	}
	euWeb, acmeEuWeb := dockerName(t, c, h1, "acme-eu/web"), dockerName(t, c, h1, "acme/eu-web")
	if euWeb == acmeEuWeb {
		t.Fatalf("acme-eu/web and acme/eu-web share the Docker name %s", euWeb)
	}
	ids := map[string]string{}
	for _, e := range c.Engines {
		e2e.Eventually(t, 5*time.Second, func() error {
			for _, name := range []string{euWeb, acmeEuWeb} {
				if _, err := networkID(e, t, name); err != nil {
					return fmt.Errorf("%s has no %s: %v", e.Host().Name(), name, err)
				}
			}
			return nil
		})
		ids[e.Host().Name()], _ = networkID(e, t, euWeb)
	}
	if out, err := ctl(c.Hosts[2], "network", "rm", "acme/eu-web"); err != nil {
		t.Fatalf("network rm acme/eu-web: %v: %s", err, out)
	}
	for _, e := range c.Engines {
		e2e.Eventually(t, 10*time.Second, func() error {
			if _, err := networkID(e, t, acmeEuWeb); err == nil {
				return fmt.Errorf("%s still has %s", e.Host().Name(), acmeEuWeb)
			}
			return nil
		})
	}
	// The other network stays the same network on every host, over
	// several rounds of every host's sync (every 3 s).
	e2e.Holds(t, 8*time.Second, func() error {
		for _, e := range c.Engines {
			id, err := networkID(e, t, euWeb)
			if err != nil || id != ids[e.Host().Name()] {
				return fmt.Errorf("%s: %s is %q (%v), was %q", e.Host().Name(), euWeb, id, err, ids[e.Host().Name()])
			}
		}
		return nil
	})
	if _, err := c.Engine(2).Docker(ctx, "run", "-d", "--name", "web1", "--network", euWeb, e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatalf("docker run on %s: %v", euWeb, err)
	}

	// A Docker name taken by another network on this host: refused here,
	// with the reason, instead of "done".
	if _, err := c.Engine(0).Docker(ctx, "network", "create", "-d", "tenet", "--ipam-driver", "tenet", "--ipam-opt", "tenant=acme",
		"-o", "tenant=acme", "-o", "network=other", "--subnet", "10.3.0.0/24", rulesDockerName("acme", "db")); err != nil {
		t.Fatal(err)
	}
	out, err := ctl(c.Hosts[0], "network", "create", "acme/db", "--subnet", "10.4.0.0/24")
	if err == nil || !strings.Contains(out, "already exists here") {
		t.Fatalf("a definition whose Docker name is taken: err %v, output %q", err, out)
	}
}

// rulesDockerName is the Docker name tenetctl gives tenant/name.
func rulesDockerName(tenant, name string) string { return tenant + "." + name }
