package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/internal/adminapi"
)

// metricsOf scrapes a host's tenetd at its default metrics address (the
// host's own loopback) into series -> value.
func metricsOf(t *testing.T, h e2e.Host) map[string]float64 {
	t.Helper()
	out, err := h.Run(t.Context(), "curl", "-sf", "--max-time", "5", "http://127.0.0.1:9474/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", h.Name(), err)
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			got[line[:i]] = v
		}
	}
	return got
}

// awaitMetric polls a host's metrics until check holds for series.
func awaitMetric(t *testing.T, h e2e.Host, series string, what string, check func(float64) bool) {
	t.Helper()
	e2e.Eventually(t, 15*time.Second, func() error {
		v, ok := metricsOf(t, h)[series]
		if !ok || !check(v) {
			return fmt.Errorf("%s on %s: %s = %v (present: %t)", what, h.Name(), series, v, ok)
		}
		return nil
	})
}

// TestAnOperatorSeesMetricsNamesAndBreakage is an admin's session on two
// hosts: health and metrics follow containers starting and stopping,
// tenetctl shows containers by name and a network's hosts, and diagnose
// names an FDB entry deleted by hand.
func TestAnOperatorSeesMetricsNamesAndBreakage(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	c.StartTenetds(t)
	ctx := t.Context()
	h0, h1 := c.Hosts[0], c.Hosts[1]
	tenetctl := c.Dir + "/tenetctl"
	ctl := func(h e2e.Host, args ...string) string {
		t.Helper()
		out, err := h.Run(ctx, append([]string{tenetctl}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, h := range c.Hosts {
		e2e.Eventually(t, 15*time.Second, func() error {
			out, err := h.Run(ctx, "curl", "-sf", "--max-time", "5", "http://127.0.0.1:9474/readyz")
			if err != nil || !strings.Contains(out, "plugin: ok") || !strings.Contains(out, "core: ok") || !strings.Contains(out, "ring: ok") {
				return fmt.Errorf("readyz on %s: %v %s", h.Name(), err, out)
			}
			return nil
		})
		if out, err := h.Run(ctx, "curl", "-sf", "http://127.0.0.1:9474/healthz"); err != nil || !strings.Contains(out, "datapath-writer: ok") {
			t.Errorf("healthz on %s: %v %s", h.Name(), err, out)
		}
	}

	ctl(h0, "tenant", "create", "acme")
	ctl(h0, "network", "create", "acme/web", "--subnet", "10.1.0.0/24")
	for _, e := range c.Engines {
		e2e.Eventually(t, 10*time.Second, func() error {
			_, err := e.Docker(ctx, "network", "inspect", "acme.web")
			return err
		})
	}
	before := metricsOf(t, h0)
	if _, err := c.Engine(1).Docker(ctx, "run", "-d", "--name", "web1", "--network", "acme.web", "--network-alias", "www",
		e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Engine(0).Docker(ctx, "run", "-d", "--name", "api", "--network", "acme.web", e2e.ImageName, "sleep", "600"); err != nil {
		t.Fatal(err)
	}

	// Metrics move as the containers start.
	awaitMetric(t, h0, `tenet_endpoints{location="local",tenant="acme"}`, "api counted", func(v float64) bool { return v == 1 })
	awaitMetric(t, h0, `tenet_endpoints{location="remote",tenant="acme"}`, "web1 counted", func(v float64) bool { return v == 1 })
	awaitMetric(t, h0, `tenet_convergence_seconds_count`, "web1's arrival measured", func(v float64) bool { return v >= 1 })
	m := metricsOf(t, h0)
	for series, moved := range map[string]func(float64) bool{
		`tenet_networks{tenant="acme"}`: func(v float64) bool { return v == 1 },
		`tenet_plugin_call_duration_seconds_count{call="NetworkDriver.CreateEndpoint",result="ok"}`: func(v float64) bool {
			return v > before[`tenet_plugin_call_duration_seconds_count{call="NetworkDriver.CreateEndpoint",result="ok"}`]
		},
		`tenet_reconcile_duration_seconds_count{kind="scoped",result="ok"}`: func(v float64) bool {
			return v > before[`tenet_reconcile_duration_seconds_count{kind="scoped",result="ok"}`]
		},
		`tenet_ipam_addresses_used{pool="acme/10.1.0.0/24",tenant="acme"}`: func(v float64) bool { return v == 1 },
		`tenet_ipam_blocks_owned{pool="acme/10.1.0.0/24",tenant="acme"}`:   func(v float64) bool { return v >= 1 },
		`tenet_gossip_members{state="alive"}`:                              func(v float64) bool { return v == 2 },
		`tenet_gossip_messages_sent_total`:                                 func(v float64) bool { return v > 0 },
		`memberlist_udp_sent_total`:                                        func(v float64) bool { return v > 0 },
	} {
		if v, ok := m[series]; !ok || !moved(v) {
			t.Errorf("h0: %s = %v (present %t)", series, v, ok)
		}
	}
	t.Logf("h0: convergence of %v remote changes, %.1f ms in all", m[`tenet_convergence_seconds_count`], 1000*m[`tenet_convergence_seconds_sum`])

	// tenetctl: containers by name, where they run.
	var eps []adminapi.Endpoint
	e2e.Eventually(t, 15*time.Second, func() error {
		if err := json.Unmarshal([]byte(ctl(h1, "endpoint", "ls", "--json", "--host", "h1")), &eps); err != nil {
			return err
		}
		if len(eps) != 1 || eps[0].Name != "web1" || len(eps[0].Aliases) != 1 || eps[0].Aliases[0] != "www" || eps[0].State != "up" {
			return fmt.Errorf("h1's endpoints: %+v", eps)
		}
		return nil
	})
	web1 := eps[0]
	if out := ctl(h0, "endpoint", "ls", "--network", "acme/web"); !strings.Contains(out, "api") || !strings.Contains(out, web1.IP) ||
		!strings.HasPrefix(out, "CONTAINER") {
		t.Errorf("endpoint ls on h0:\n%s", out)
	} else {
		t.Logf("h0: tenetctl endpoint ls --network acme/web\n%s", out)
	}
	if _, err := c.Engine(1).Docker(ctx, "rename", "web1", "web2"); err != nil {
		t.Fatal(err)
	}
	e2e.Eventually(t, 15*time.Second, func() error {
		if out := ctl(h1, "endpoint", "ls", "--host", "h1"); !strings.Contains(out, "web2") {
			return fmt.Errorf("after rename:\n%s", out)
		}
		return nil
	})
	var d adminapi.NetworkDetail
	if err := json.Unmarshal([]byte(ctl(h0, "network", "inspect", "acme/web", "--json")), &d); err != nil {
		t.Fatal(err)
	}
	t.Logf("h0: tenetctl network inspect acme/web\n%s", ctl(h0, "network", "inspect", "acme/web"))
	if len(d.HostEndpoints) != 2 || d.HostEndpoints[0].Endpoints != 1 || d.HostEndpoints[1].Endpoints != 1 || d.Gateway == "" || d.EffectiveMTU != 1450 {
		t.Errorf("network inspect: %+v", d)
	}
	var st adminapi.Status
	if err := json.Unmarshal([]byte(ctl(h0, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Ring.Health != "ok" || st.Convergence.Samples < 1 || st.Convergence.P99Ms <= 0 {
		t.Errorf("status: ring %+v, convergence %+v", st.Ring, st.Convergence)
	}
	t.Logf("h0 status:\n%s", ctl(h0, "status"))

	// Break the datapath by hand: diagnose names the entry and exits 1.
	if out := ctl(h0, "diagnose"); !strings.Contains(out, "nothing wrong") {
		t.Errorf("diagnose before the damage:\n%s", out)
	}
	dev := fmt.Sprint("vx", d.VNI)
	if _, err := h0.Run(ctx, "ip", "netns", "exec", "tenet-acme", "bridge", "fdb", "del", web1.MAC, "dev", dev, "dst", web1.VTEP); err != nil {
		t.Fatal(err)
	}
	out, err := h0.Run(ctx, tenetctl, "diagnose")
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("diagnose after deleting an FDB entry: %v\n%s", err, out)
	}
	t.Logf("h0: tenetctl diagnose\n%s", out)
	for _, want := range []string{"[kernel] missing: fdb " + web1.MAC + " dev " + dev + " dst " + web1.VTEP,
		"network acme/web, endpoint " + web1.ID[:12] + ", host h1", "1 thing wrong"} {
		if !strings.Contains(out, want) {
			t.Errorf("diagnose does not say %q:\n%s", want, out)
		}
	}

	// The containers stop: the metrics come back down.
	for i, name := range []string{"api", "web2"} {
		if _, err := c.Engine(i).Docker(ctx, "rm", "-f", name); err != nil {
			t.Fatal(err)
		}
	}
	awaitMetric(t, h0, `tenet_endpoints{location="local",tenant="acme"}`, "api gone", func(v float64) bool { return v == 0 })
	awaitMetric(t, h0, `tenet_endpoints{location="remote",tenant="acme"}`, "web2 gone", func(v float64) bool { return v == 0 })
	awaitMetric(t, h0, `tenet_ipam_addresses_used{pool="acme/10.1.0.0/24",tenant="acme"}`, "api's address released", func(v float64) bool { return v == 0 })
}
