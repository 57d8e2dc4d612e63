package main

import (
	"context"
	"io"
	"strings"

	"github.com/tenet-net/tenet/internal/adminapi"
)

func init() {
	commands = append(commands,
		command{group: "endpoint", name: "ls", help: "list container endpoints: network, IP, MAC, host, state, published ports",
			run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
				return list(ctx, c, "/v1/endpoints", asJSON, out, "NETWORK\tIP\tMAC\tHOST\tSTATE\tENDPOINT\tPORTS", func(e adminapi.Endpoint) []string {
					return []string{e.Network, e.IP, e.MAC, e.Host, e.State, e.ID[:min(12, len(e.ID))], strings.Join(e.Ports, ",")}
				})
			}},
	)
}
