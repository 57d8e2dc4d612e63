// Command tenetctl is the cluster admin's CLI. It talks to the local tenetd
// over its root-only admin socket, to define tenants and networks for the
// whole cluster and to show what the cluster looks like from here:
//
//	tenetctl status                     this host, ring health, key, counts, warnings
//	tenetctl host ls | host remove NAME hosts; reclaim a dead host's addresses
//	tenetctl tenant create|ls|rm        tenants
//	tenetctl network create|ls|inspect|rm  networks, created in every engine
//	tenetctl endpoint ls                container endpoints and where they live
//
// Every command takes --json for scripts and --help. Exit codes: 0 done,
// 1 tenetd refused or could not be asked, 2 bad usage.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

var version = "dev"

const usage = `usage: tenetctl [--socket PATH] COMMAND [--json]
  status         this host, ring health, counts and warnings
  host ls        the cluster's hosts
  host remove NAME
                 reclaim the address blocks of a host gone for good
  tenant create NAME | tenant rm NAME | tenant ls
  network create TENANT/NAME --subnet CIDR [--vni N] [--internal] [--mtu N]
                 define a network once; every host's engine gets it as TENANT-NAME
  network rm TENANT/NAME     (refused while containers are attached)
  network inspect TENANT/NAME
  network ls     the Tenet networks
  endpoint ls    container endpoints and where they live
  version        print the version
Run "tenetctl COMMAND --help" for a command's help.
`

type command struct {
	path, help string
	table      func(w io.Writer, body []byte) error
}

var commands = map[string]command{
	"status":      {"/v1/status", "show this host's view: hosts up and down, counts, warnings", statusTable},
	"tenant ls":   {"/v1/tenants", "list the tenants defined with tenant create", tenantTable},
	"host ls":     {"/v1/hosts", "list the cluster's hosts: name, VTEP, state (up/down)", hostTable},
	"network ls":  {"/v1/networks", "list Tenet networks: tenant, name, VNI, subnet, hosts that have it", networkTable},
	"endpoint ls": {"/v1/endpoints", "list container endpoints: network, IP, MAC, host, state", endpointTable},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenetctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/run/tenet/admin.sock", "tenetd's admin socket")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2
	}
	if rest[0] == "version" {
		fmt.Fprintln(stdout, "tenetctl", version)
		return 0
	}
	if rest[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	name := rest[0]
	rest = rest[1:]
	if name != "status" {
		if len(rest) == 0 {
			fmt.Fprintf(stderr, "tenetctl: %s needs a subcommand (ls)\n%s", name, usage)
			return 2
		}
		name += " " + rest[0]
		rest = rest[1:]
	}
	switch name {
	case "host remove":
		return hostRemove(*socket, rest, stdout, stderr)
	case "tenant create", "tenant rm", "network create", "network rm", "network inspect":
		return define(*socket, name, rest, stdout, stderr)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "tenetctl: unknown command %q\n%s", name, usage)
		return 2
	}
	cfs := flag.NewFlagSet("tenetctl "+name, flag.ContinueOnError)
	cfs.SetOutput(stderr)
	asJSON := cfs.Bool("json", false, "print JSON for scripts")
	cfs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tenetctl %s [--json]\n  %s\n", name, cmd.help)
		cfs.PrintDefaults()
	}
	if err := cfs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfs.NArg() > 0 {
		fmt.Fprintf(stderr, "tenetctl %s: unexpected argument %q\n", name, cfs.Arg(0))
		return 2
	}
	body, err := get(*socket, cmd.path)
	if err != nil {
		fmt.Fprintln(stderr, "tenetctl:", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(body)
		return 0
	}
	if err := cmd.table(stdout, body); err != nil {
		fmt.Fprintln(stderr, "tenetctl:", err)
		return 1
	}
	return 0
}

// get asks tenetd over its admin socket.
func get(socket, path string) ([]byte, error) { return call(socket, http.MethodGet, path, nil) }

func call(socket, method, path string, body any) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://tenetd"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("permission denied on %s: tenetctl must run as root", socket)
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("tenetd is not running here (no answer on %s)", socket)
		}
		return nil, fmt.Errorf("ask tenetd on %s: %w", socket, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Err string }
		_ = json.Unmarshal(out, &e)
		return nil, fmt.Errorf("tenetd: %s", e.Err)
	}
	return out, nil
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func statusTable(w io.Writer, body []byte) error {
	var s struct {
		Host, VTEP          string
		HostsUp             int `json:"hosts_up"`
		HostsDown           int `json:"hosts_down"`
		Networks, Endpoints int
		LocalEndpoints      int      `json:"local_endpoints"`
		KeyInUse            string   `json:"key_in_use"`
		Warnings            []string `json:"warnings"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return err
	}
	fmt.Fprintf(w, "host       %s (vtep %s)\n", s.Host, s.VTEP)
	fmt.Fprintf(w, "ring       %d up, %d down, cluster key %s\n", s.HostsUp, s.HostsDown, s.KeyInUse)
	fmt.Fprintf(w, "networks   %d\n", s.Networks)
	fmt.Fprintf(w, "endpoints  %d here, %d in all\n", s.LocalEndpoints, s.Endpoints)
	for _, x := range s.Warnings {
		fmt.Fprintf(w, "warning    %s\n", x)
	}
	return nil
}

func hostTable(w io.Writer, body []byte) error {
	var hs []struct {
		Name, VTEP, State string
		Self              bool
		LastSeen          string `json:"last_seen"`
	}
	if err := json.Unmarshal(body, &hs); err != nil {
		return err
	}
	var rows [][]string
	for _, h := range hs {
		name := h.Name
		if h.Self {
			name += " (this host)"
		}
		rows = append(rows, []string{name, h.VTEP, h.State, h.LastSeen})
	}
	return table(w, "HOST\tVTEP\tSTATE\tLAST SEEN", rows)
}

func networkTable(w io.Writer, body []byte) error {
	var ns []struct {
		Tenant, Name, Subnet, Gateway string
		VNI                           uint32
		Internal, Local               bool
		Hosts                         []string
	}
	if err := json.Unmarshal(body, &ns); err != nil {
		return err
	}
	var rows [][]string
	for _, n := range ns {
		kind := "egress"
		if n.Internal {
			kind = "internal"
		}
		rows = append(rows, []string{n.Tenant, n.Name, fmt.Sprint(n.VNI), n.Subnet, kind, strings.Join(n.Hosts, ",")})
	}
	return table(w, "TENANT\tNETWORK\tVNI\tSUBNET\tKIND\tHOSTS", rows)
}

func endpointTable(w io.Writer, body []byte) error {
	var es []struct{ ID, Network, IP, MAC, Host, VTEP, State string }
	if err := json.Unmarshal(body, &es); err != nil {
		return err
	}
	var rows [][]string
	for _, e := range es {
		rows = append(rows, []string{e.Network, e.IP, e.MAC, e.Host, e.State, e.ID[:min(12, len(e.ID))]})
	}
	return table(w, "NETWORK\tIP\tMAC\tHOST\tSTATE\tENDPOINT", rows)
}

// hostRemove asks tenetd to reclaim a dead host's address space. Safe to
// repeat, here or on another host.
func hostRemove(socket string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenetctl host remove", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tenetctl host remove NAME [--json]\n  reclaim the address blocks of host NAME, which is gone for good and must not come back under that name")
		fs.PrintDefaults()
	}
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if name == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	body, err := post(socket, "/v1/hosts/"+name+"/remove")
	if err != nil {
		fmt.Fprintln(stderr, "tenetctl:", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(body)
	} else {
		fmt.Fprintf(stdout, "host %s removed: its address blocks go to one surviving host\n", name)
	}
	return 0
}

func post(socket, path string) ([]byte, error) {
	return call(socket, http.MethodPost, path, nil)
}

func tenantTable(w io.Writer, body []byte) error {
	var ts []struct{ Tenant, Origin string }
	if err := json.Unmarshal(body, &ts); err != nil {
		return err
	}
	var rows [][]string
	for _, t := range ts {
		rows = append(rows, []string{t.Tenant, t.Origin})
	}
	return table(w, "TENANT\tDEFINED ON", rows)
}

// define runs the commands that change the cluster's registry.
func define(socket, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenetctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	subnet := fs.String("subnet", "", "the network's IPv4 subnet (network create)")
	vni := fs.Uint("vni", 0, "the network's VNI (default: derived from TENANT/NAME)")
	internal := fs.Bool("internal", false, "no egress: the network's containers reach only each other")
	mtu := fs.Int("mtu", 0, "the network's MTU (default: the underlay's minus 50)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tenetctl %s ARG [flags]\n", name)
		fs.PrintDefaults()
	}
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if arg == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	var method, path string
	var body any
	tenant, netName, _ := strings.Cut(arg, "/")
	if strings.HasPrefix(name, "network") && (tenant == "" || netName == "") {
		fmt.Fprintf(stderr, "tenetctl %s: %q: want TENANT/NAME\n", name, arg)
		return 2
	}
	switch name {
	case "tenant create":
		method, path = http.MethodPost, "/v1/tenants/"+arg
	case "tenant rm":
		method, path = http.MethodDelete, "/v1/tenants/"+arg
	case "network create":
		if *subnet == "" {
			fmt.Fprintln(stderr, "tenetctl network create: --subnet is required")
			return 2
		}
		method, path = http.MethodPost, "/v1/definitions"
		body = map[string]any{"tenant": tenant, "name": netName, "subnet": *subnet, "vni": *vni, "internal": *internal, "mtu": *mtu}
	case "network rm":
		method, path = http.MethodDelete, "/v1/definitions/"+tenant+"/"+netName
	case "network inspect":
		out, err := call(socket, http.MethodGet, "/v1/definitions", nil)
		if err != nil {
			fmt.Fprintln(stderr, "tenetctl:", err)
			return 1
		}
		var defs []map[string]any
		if err := json.Unmarshal(out, &defs); err != nil {
			fmt.Fprintln(stderr, "tenetctl:", err)
			return 1
		}
		for _, d := range defs {
			if d["tenant"] == tenant && d["name"] == netName {
				b, _ := json.MarshalIndent(d, "", "  ")
				fmt.Fprintln(stdout, string(b))
				return 0
			}
		}
		fmt.Fprintf(stderr, "tenetctl: no network %s\n", arg)
		return 1
	}
	out, err := call(socket, method, path, body)
	if err != nil {
		fmt.Fprintln(stderr, "tenetctl:", err)
		return 1
	}
	if *asJSON {
		_, _ = stdout.Write(out)
	} else {
		fmt.Fprintf(stdout, "%s %s: done\n", name, arg)
	}
	return 0
}
