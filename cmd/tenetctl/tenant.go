package main

import (
	"context"
	"fmt"
	"io"

	"github.com/tenet-net/tenet/internal/adminapi"
)

func init() {
	commands = append(commands,
		command{group: "tenant", name: "create", args: []string{"NAME"}, help: "define a tenant for the whole cluster",
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				d, err := c.CreateTenant(ctx, args[0])
				return done(out, asJSON, d, err, "tenant create "+args[0])
			}},
		command{group: "tenant", name: "ls", help: "list the tenants defined with tenant create",
			run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
				return list(ctx, c, "/v1/tenants", asJSON, out, "TENANT	DEFINED ON", func(t adminapi.Tenant) []string {
					return []string{t.Tenant, t.Origin}
				})
			}},
		command{group: "tenant", name: "rm", args: []string{"NAME"}, help: "remove a tenant that has no networks left",
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				d, err := c.RemoveTenant(ctx, args[0])
				return done(out, asJSON, d, err, "tenant rm "+args[0])
			}},
	)
}

// done reports a change.
func done(out io.Writer, asJSON bool, d adminapi.Done, err error, what string) error {
	if err != nil {
		return err
	}
	if asJSON {
		doneJSON(out, d)
		return nil
	}
	fmt.Fprintf(out, "%s: done\n", what)
	return nil
}
