package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

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
			fmt.Fprintf(out, "host       %s (vtep %s)\n", s.Host, s.VTEP)
			fmt.Fprintf(out, "ring       %d up, %d down, cluster key %s\n", s.HostsUp, s.HostsDown, s.KeyInUse)
			fmt.Fprintf(out, "networks   %d\n", s.Networks)
			fmt.Fprintf(out, "endpoints  %d here, %d in all\n", s.LocalEndpoints, s.Endpoints)
			for _, x := range s.Warnings {
				fmt.Fprintf(out, "warning    %s\n", x)
			}
			return nil
		}})
}

// doneJSON prints a change's answer.
func doneJSON(out io.Writer, d adminapi.Done) {
	b, _ := json.Marshal(d)
	printJSON(out, b)
}
