package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tenet-net/tenet/internal/adminapi"
	"github.com/tenet-net/tenet/internal/rules"
)

// network create's flags.
var netFlags struct {
	subnet    string
	vni       uint
	internal  bool
	mtu       int
	encrypted bool
}

func splitKey(arg string) (tenant, name string, err error) {
	tenant, name, err = rules.SplitKey(arg)
	if err != nil {
		return "", "", usagef("%v", err)
	}
	return tenant, name, nil
}

func init() {
	commands = append(commands,
		command{group: "network", name: "create", args: []string{"TENANT/NAME"},
			help: "define a network once; every host's engine gets it as TENANT.NAME",
			flags: func(fs *flag.FlagSet) {
				fs.StringVar(&netFlags.subnet, "subnet", "", "the network's IPv4 subnet, e.g. 10.1.0.0/24 (required)")
				fs.UintVar(&netFlags.vni, "vni", 0, "the network's VXLAN id, 1-16777215 (default: derived from TENANT/NAME)")
				fs.BoolVar(&netFlags.internal, "internal", false, "no egress: the network's containers reach only each other")
				fs.IntVar(&netFlags.mtu, "mtu", 0, "the network's MTU (default: the underlay's minus 50, minus 110 if encrypted)")
				fs.BoolVar(&netFlags.encrypted, "encrypted", false, "carry the network's traffic between hosts only inside WireGuard (every host's kernel needs it)")
			},
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				t, n, err := splitKey(args[0])
				if err != nil {
					return err
				}
				if netFlags.subnet == "" {
					return usagef("network create: --subnet is required")
				}
				if netFlags.vni > rules.MaxVNI {
					return usagef("network create: --vni %d: must be 1-%d", netFlags.vni, rules.MaxVNI)
				}
				d, err := c.CreateNetwork(ctx, adminapi.Definition{Tenant: t, Name: n, Subnet: netFlags.subnet,
					VNI: uint32(netFlags.vni), Internal: netFlags.internal, MTU: netFlags.mtu, Encrypted: netFlags.encrypted})
				return done(out, asJSON, d, err, "network create "+args[0])
			}},
		command{group: "network", name: "ls", help: "list Tenet networks: tenant, name, VNI, subnet, kind, hosts that have it",
			run: func(ctx context.Context, c adminapi.Client, _ []string, asJSON bool, out io.Writer) error {
				return list(ctx, c, "/v1/networks", asJSON, out, "TENANT	NETWORK	VNI	SUBNET	KIND	HOSTS", func(n adminapi.Network) []string {
					return []string{n.Tenant, n.Name, fmt.Sprint(n.VNI), n.Subnet, kind(n), strings.Join(n.Hosts, ",")}
				})
			}},
		command{group: "network", name: "inspect", args: []string{"TENANT/NAME"},
			help: "show one network: subnet, gateway, MTU, VNI, the hosts that have it and their endpoints",
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				t, n, err := splitKey(args[0])
				if err != nil {
					return err
				}
				var d adminapi.NetworkDetail
				raw, err := c.Do(ctx, http.MethodGet, "/v1/networks/"+url.PathEscape(t)+"/"+url.PathEscape(n), nil, &d)
				if err != nil {
					return err
				}
				if asJSON {
					printJSON(out, raw)
					return nil
				}
				return inspect(out, d)
			}},
		command{group: "network", name: "rm", args: []string{"TENANT/NAME"},
			help: "remove a defined network from every host (refused while containers are attached)",
			run: func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error {
				t, n, err := splitKey(args[0])
				if err != nil {
					return err
				}
				d, err := c.RemoveNetwork(ctx, t, n)
				return done(out, asJSON, d, err, "network rm "+args[0])
			}},
	)
}

// kind is egress or internal, and encrypted.
func kind(n adminapi.Network) string {
	k := "egress"
	if n.Internal {
		k = "internal"
	}
	if n.Encrypted {
		k += ",encrypted"
	}
	return k
}

func inspect(out io.Writer, d adminapi.NetworkDetail) error {
	n := d.Network
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(out, "%-12s %s\n", k, v)
		}
	}
	row("network", n.Tenant+"/"+n.Name)
	row("docker name", n.DockerName)
	row("vni", fmt.Sprint(n.VNI))
	row("subnet", n.Subnet)
	gw := n.Gateway
	switch {
	case n.Internal:
		gw = "none (internal)"
	case gw == "" && !n.Local:
		gw = "(known on the hosts that have it)"
	}
	row("gateway", gw)
	row("kind", kind(n))
	less := "the underlay's less 50"
	if n.Encrypted {
		less = "the underlay's less 110: VXLAN and WireGuard"
	}
	switch {
	case d.EffectiveMTU != 0 && n.MTU == 0:
		row("mtu", fmt.Sprintf("%d (%s)", d.EffectiveMTU, less))
	case n.MTU != 0:
		row("mtu", fmt.Sprint(n.MTU))
	default:
		row("mtu", less)
	}
	defined := "no (created by hand with docker network create)"
	if n.Defined {
		defined = "yes (tenetctl network create)"
	}
	row("defined", defined)
	row("docker id", n.DockerID)
	fmt.Fprintln(out)
	rows := [][]string{}
	for _, h := range d.HostEndpoints {
		name, count := h.Host, fmt.Sprint(h.Endpoints)
		if h.Self {
			name += " (this host)"
		}
		if !d.EndpointsKnown {
			count = "?"
		}
		rows = append(rows, []string{name, h.State, count})
	}
	if err := table(out, "HOST\tSTATE\tENDPOINTS", rows); err != nil {
		return err
	}
	if !d.EndpointsKnown {
		fmt.Fprintln(out, "(endpoint counts are known on the hosts that have the network)")
	}
	return nil
}
