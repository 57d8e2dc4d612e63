package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/tenet-net/tenet/internal/adminapi"
)

func init() {
	commands = append(commands, command{group: "status", help: groupHelp["status"],
		run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
			var s adminapi.Status
			raw, err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
			if err != nil {
				return err
			}
			if asJSON {
				printJSON(out, raw)
				return nil
			}
			printStatus(out, s)
			return nil
		}})
}

func printStatus(out io.Writer, s adminapi.Status) {
	row := func(k, format string, a ...any) { fmt.Fprintf(out, "%-12s "+format+"\n", append([]any{k}, a...)...) }
	row("host", "%s (vtep %s)", s.Host, s.VTEP)
	health := s.Ring.Health
	if health == "" {
		health = "ok"
	}
	row("ring", "%s: %d up, %d down, cluster key %s", health, s.HostsUp, s.HostsDown, s.KeyInUse)
	var dropped uint64
	var reasons []string
	for _, r := range slices.Sorted(maps.Keys(s.Ring.Dropped)) {
		dropped += s.Ring.Dropped[r]
		reasons = append(reasons, fmt.Sprintf("%s %d", r, s.Ring.Dropped[r]))
	}
	g := fmt.Sprintf("%d messages sent, %d received, %d send errors, %d dropped", s.Ring.Sent, s.Ring.Received, s.Ring.SendErrors, dropped)
	if len(reasons) > 0 {
		g += " (" + strings.Join(reasons, ", ") + ")"
	}
	row("gossip", "%s", g)
	row("networks", "%d", s.Networks)
	row("endpoints", "%d here, %d in all", s.LocalEndpoints, s.Endpoints)
	cv := s.Convergence
	switch {
	case cv.Window == "":
	case cv.Samples == 0:
		row("convergence", "no changes from other hosts in the last %s", cv.Window)
	default:
		row("convergence", "p99 %s (p50 %s, max %s) over %d %s from other hosts in the last %s",
			ms(cv.P99Ms), ms(cv.P50Ms), ms(cv.MaxMs), cv.Samples, plural(cv.Samples, "change", "changes"), cv.Window)
	}
	d := s.Datapath
	switch {
	case d.LastError != "":
		dp := "failing: " + d.LastError
		if d.RetryAt != "" {
			dp += " (retry at " + d.RetryAt + ")"
		}
		row("datapath", "%s", dp)
	case d.Queued > 0 || d.BusyMs > 0:
		row("datapath", "%d changes queued, a pass running for %d ms", d.Queued, d.BusyMs)
	default:
		row("datapath", "idle")
	}
	for _, x := range s.Warnings {
		row("warning", "%s", x)
	}
}

// ms prints milliseconds as people read them.
func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

// doneJSON prints a change's answer.
func doneJSON(out io.Writer, d adminapi.Done) {
	b, _ := json.Marshal(d)
	printJSON(out, b)
}
