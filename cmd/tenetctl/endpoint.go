package main

import (
	"context"
	"flag"
	"io"
	"strings"

	"github.com/tenet-net/tenet/internal/adminapi"
)

// endpoint ls's flags.
var epFlags adminapi.EndpointFilter

func init() {
	commands = append(commands,
		command{group: "endpoint", name: "ls", help: "list container endpoints: container, host, tenant, network, IP, MAC, state, published ports",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&epFlags.Tenant, "tenant", "", "only this tenant's endpoints")
				fs.StringVar(&epFlags.Network, "network", "", "only this network's endpoints: TENANT/NAME, or NAME in any tenant")
				fs.StringVar(&epFlags.Host, "host", "", "only the endpoints on this host")
			},
			run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
				return list(ctx, c, epFlags.Path(), asJSON, out, "CONTAINER\tHOST\tTENANT\tNETWORK\tIP\tMAC\tSTATE\tENDPOINT\tPORTS", func(e adminapi.Endpoint) []string {
					name := e.Name
					if name == "" {
						name = "-"
					}
					ports := strings.Join(e.Ports, ",")
					if ports == "" {
						ports = "-"
					}
					_, network, _ := strings.Cut(e.Network, "/")
					return []string{name, e.Host, e.Tenant, network, e.IP, e.MAC, e.State, e.ID[:min(12, len(e.ID))], ports}
				})
			}},
	)
}
