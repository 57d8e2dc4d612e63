package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tenet-net/tenet/internal/adminapi"
)

func init() {
	commands = append(commands,
		command{group: "host", name: "ls", help: "list the cluster's hosts: name, VTEP, state (up/down), last seen",
			run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
				return list(ctx, c, "/v1/hosts", asJSON, out, "HOST	VTEP	STATE	LAST SEEN", func(h adminapi.Host) []string {
					name := h.Name
					if h.Self {
						name += " (this host)"
					}
					return []string{name, h.VTEP, h.State, h.LastSeen}
				})
			}},
		command{group: "host", name: "remove", args: []string{"NAME"},
			help: "reclaim the address blocks of host NAME, gone for good (it must not come back under that name)",
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				d, err := c.RemoveHost(ctx, args[0])
				if err != nil {
					return err
				}
				if asJSON {
					doneJSON(out, d)
					return nil
				}
				fmt.Fprintf(out, "host %s removed: its address blocks go to one surviving host\n", args[0])
				return nil
			}},
	)
}
