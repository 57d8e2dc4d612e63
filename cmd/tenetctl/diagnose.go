package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tenet-net/tenet/internal/adminapi"
)

func init() {
	commands = append(commands, command{group: "diagnose", help: groupHelp["diagnose"],
		run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
			c.Timeout = 2 * time.Minute // it reads the whole kernel state
			d, err := c.Diagnose(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(d)
				printJSON(out, b)
			} else {
				printDiagnosis(out, d)
			}
			if len(d.Findings) > 0 {
				return errFound
			}
			return nil
		}})
}

func printDiagnosis(out io.Writer, d adminapi.Diagnosis) {
	if len(d.Findings) == 0 {
		fmt.Fprintf(out, "%s: nothing wrong found (kernel matches the desired state, the ring holds this host's state, all hosts up)\n", d.Host)
		return
	}
	for _, f := range d.Findings {
		fmt.Fprintf(out, "[%s] %s: %s\n", f.Area, f.Problem, f.Object)
		var about []string
		for _, kv := range [][2]string{{"tenant", f.Tenant}, {"network", f.Network}, {"endpoint", short(f.Endpoint)}, {"host", f.Host}} {
			if kv[1] != "" && !(kv[0] == "tenant" && f.Network != "") {
				about = append(about, kv[0]+" "+kv[1])
			}
		}
		if len(about) > 0 {
			fmt.Fprintf(out, "    %s\n", strings.Join(about, ", "))
		}
		if f.Fix != "" {
			fmt.Fprintf(out, "    fix: %s\n", f.Fix)
		}
	}
	fmt.Fprintf(out, "%s: %d %s wrong\n", d.Host, len(d.Findings), plural(len(d.Findings), "thing", "things"))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func short(id string) string { return id[:min(12, len(id))] }
