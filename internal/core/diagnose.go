package core

// Diagnosis of this host: what should be programmed against what the
// kernel has (the datapath's own comparison, run between the writer's
// passes so that it never sees one half done), what the ring holds of this
// host against its local state, claims that conflict, hosts down, and a
// writer that keeps failing. Each finding names the network, endpoint and
// host involved, so that an admin can act on it.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/overlay"
)

// Diagnoser is implemented by datapaths that can compare the kernel with a
// desired state without changing it (overlay.Datapath.Diagnose).
type Diagnoser interface {
	Diagnose(ctx context.Context, s overlay.State) ([]overlay.Finding, error)
}

// Areas of findings.
const (
	AreaKernel  = "kernel"  // the datapath differs from what should be programmed
	AreaGossip  = "gossip"  // what the ring holds of this host differs from its state
	AreaCluster = "cluster" // other hosts: down, unreachable, conflicting claims
	AreaWriter  = "writer"  // reconciles failing
)

// Finding is one thing wrong on this host.
type Finding struct {
	Area string
	// Problem: overlay.Missing, Stale or Differs; "conflict", "down",
	// "isolated" or "failing".
	Problem string
	// Object says what, in words and with the kernel object's form.
	Object   string
	Tenant   string
	Network  string // key, when it concerns a network
	Endpoint string // endpoint ID, when it concerns one
	Host     string // the other host involved, if any
	// Fix says what repairs it (for the kernel: the op tenetd's next full
	// reconcile runs).
	Fix string
}

// Diagnose reports what is wrong on this host; nothing is changed. It
// waits for the writer to finish the pass under way. It needs Run.
func (c *Core) Diagnose(ctx context.Context) ([]Finding, error) {
	var out []Finding
	err := c.w.do(ctx, func(ctx context.Context) error {
		v := c.readView(nil)
		s, conflicts, _ := desired(v, time.Now(), c.cfg.HiddenGrace)
		if d, ok := c.dp.(Diagnoser); ok {
			fs, err := d.Diagnose(ctx, s)
			if err != nil {
				return fmt.Errorf("diagnose the datapath: %w", err)
			}
			out = append(out, kernelFindings(v, fs, c.cfg.RepairInterval)...)
		}
		for _, cf := range conflicts {
			out = append(out, Finding{Area: AreaCluster, Problem: "conflict", Network: cf.remote.Network, Endpoint: cf.remote.ID,
				Host: cf.remote.Host, Object: fmt.Sprintf("endpoint %s on host %s claims ip %s mac %s, which %s has; it is not programmed here",
					short(cf.remote.ID), cf.remote.Host, cf.remote.IP, cf.remote.MAC, cf.with),
				Fix: "remove one of the two containers; addresses from Tenet's IPAM never collide, so check for --ip or --mac-address given by hand"})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out = append(out, c.diagnoseRing()...)
	if st := c.Writer(); st.LastErr != nil || !st.RetryAt.IsZero() {
		f := Finding{Area: AreaWriter, Problem: "failing", Object: "the last datapath pass failed", Fix: "see tenetd's log; a full reconcile retries"}
		if st.LastErr != nil {
			f.Object += ": " + st.LastErr.Error()
		}
		if !st.RetryAt.IsZero() {
			f.Fix = fmt.Sprintf("a full reconcile retries at %s; see tenetd's log", st.RetryAt.UTC().Format(time.RFC3339))
		}
		out = append(out, f)
	}
	return out, nil
}

// kernelFindings names the network, endpoint and host of each datapath
// finding.
func kernelFindings(v view, fs []overlay.Finding, repair time.Duration) []Finding {
	netOf := map[uint32]string{}
	for _, n := range v.nets {
		netOf[n.VNI] = n.Key()
	}
	portOf := map[string]string{}
	for _, e := range v.eps {
		portOf[overlay.BridgeVeth(e.ID)] = e.ID
	}
	type vm struct {
		vni uint32
		mac string
	}
	remoteOf := map[vm]Remote{}
	for key, rs := range v.remotes {
		for _, r := range rs {
			for _, n := range v.nets {
				if n.Key() == key {
					remoteOf[vm{n.VNI, r.MAC.String()}] = r
				}
			}
		}
	}
	var out []Finding
	for _, f := range fs {
		g := Finding{Area: AreaKernel, Problem: f.Problem, Tenant: f.Tenant, Network: netOf[f.VNI], Object: f.Object,
			Fix: fmt.Sprintf("%s (tenetd's next full reconcile, at most %v away, runs it)", f.Fix, repair)}
		if f.Port != "" {
			g.Endpoint = portOf[f.Port]
			for _, e := range v.eps {
				if e.ID == g.Endpoint && g.Network == "" {
					g.Network = e.Network
				}
			}
		}
		if f.MAC != "" {
			if r, ok := remoteOf[vm{f.VNI, f.MAC}]; ok {
				g.Endpoint, g.Host = r.ID, r.Host
			}
		}
		out = append(out, g)
	}
	return out
}

// diagnoseRing compares what the ring holds of this host with its local
// state, and looks at the other hosts.
func (c *Core) diagnoseRing() []Finding {
	var out []Finding
	nets, eps := c.snapshotReady()
	if oe, ok := c.cl.(OwnEntries); ok {
		pub := map[string]gossip.Endpoint{}
		for _, e := range oe.OwnEndpoints(c.cfg.Host) {
			pub[e.ID] = e
		}
		for _, e := range eps {
			p, ok := pub[e.ID]
			delete(pub, e.ID)
			f := Finding{Area: AreaGossip, Network: e.Network, Endpoint: e.ID, Fix: "restart tenetd, which publishes its state again"}
			switch {
			case !ok:
				f.Problem, f.Object = overlay.Missing, fmt.Sprintf("endpoint %s (ip %s) is not in the ring: other hosts cannot reach it", short(e.ID), e.IP.Addr())
			case p.Network != e.Network || p.IP != e.IP.Addr() || p.MAC.String() != e.MAC.String():
				f.Problem, f.Object = overlay.Differs, fmt.Sprintf("endpoint %s is in the ring as network %s ip %s mac %s; here it is network %s ip %s mac %s",
					short(e.ID), p.Network, p.IP, p.MAC, e.Network, e.IP.Addr(), e.MAC)
			case p.VTEP.IsValid() && p.VTEP != c.cfg.VTEP:
				f.Problem, f.Object = overlay.Differs, fmt.Sprintf("endpoint %s is in the ring at vtep %s; this host's is %s", short(e.ID), p.VTEP, c.cfg.VTEP)
			default:
				continue
			}
			out = append(out, f)
		}
		for _, id := range slices.Sorted(maps.Keys(pub)) {
			p := pub[id]
			out = append(out, Finding{Area: AreaGossip, Problem: overlay.Stale, Network: p.Network, Endpoint: id,
				Object: fmt.Sprintf("endpoint %s (ip %s) is in the ring as this host's, which has no such endpoint: other hosts send its traffic here", short(id), p.IP),
				Fix:    "tenetd withdraws stale entries of its own when gossip hands them back; restart tenetd if it stays"})
		}
		for _, n := range nets {
			if !oe.Attached(c.cfg.Host, n.Key()) {
				out = append(out, Finding{Area: AreaGossip, Problem: overlay.Missing, Network: n.Key(), Tenant: n.Tenant,
					Object: fmt.Sprintf("this host's attachment to network %s is not in the ring: other hosts neither send it the network's endpoints nor flood to it", n.Key()),
					Fix:    "restart tenetd, which publishes its state again"})
			}
		}
	}
	others, alive := 0, 0
	for _, h := range c.cl.Hosts() {
		if h.Name == c.cfg.Host {
			if h.VTEP.IsValid() && h.VTEP != c.cfg.VTEP {
				out = append(out, Finding{Area: AreaGossip, Problem: overlay.Differs,
					Object: fmt.Sprintf("the ring knows this host at vtep %s; it is configured with %s", h.VTEP, c.cfg.VTEP),
					Fix:    "check --vtep; a host that changed address must rejoin under its name"})
			}
			continue
		}
		others++
		if h.Alive {
			alive++
			continue
		}
		f := Finding{Area: AreaCluster, Problem: "down", Host: h.Name, Object: fmt.Sprintf("host %s is down", h.Name),
			Fix: "if it is gone for good: tenetctl host remove " + h.Name}
		if !h.DownSince.IsZero() {
			f.Object += fmt.Sprintf(" since %s; its endpoints stay programmed here until %s", h.DownSince.UTC().Format(time.RFC3339),
				h.DownSince.Add(c.cfg.HiddenGrace).UTC().Format(time.RFC3339))
		}
		out = append(out, f)
	}
	if others > 0 && alive == 0 {
		out = append(out, Finding{Area: AreaCluster, Problem: "isolated", Object: fmt.Sprintf("no other host of %d is reachable: this host is cut off from the ring", others),
			Fix: "check the underlay: gossip's port (UDP and TCP) must be open between hosts"})
	}
	return out
}
