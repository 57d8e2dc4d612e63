// Command tenetctl is the cluster admin's CLI. It asks the local tenetd,
// over its root-only admin socket, what the cluster looks like from here:
//
//	tenetctl status          this host, ring health, counts, warnings
//	tenetctl host ls         hosts, their VTEP and state
//	tenetctl network ls      Tenet networks, their VNI, subnet and hosts
//	tenetctl endpoint ls     container endpoints and the host each lives on
//
// Every command takes --json for scripts. Exit codes: 0 done, 1 tenetd
// could not be asked, 2 bad usage.
package main

import (
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
	if name == "host remove" {
		return hostRemove(*socket, rest, stdout, stderr)
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
func get(socket, path string) ([]byte, error) { return call(socket, http.MethodGet, path) }

func call(socket, method, path string) ([]byte, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	req, err := http.NewRequest(method, "http://tenetd"+path, nil)
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
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Err string }
		_ = json.Unmarshal(body, &e)
		return nil, fmt.Errorf("tenetd: %s", e.Err)
	}
	return body, nil
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
		Host, VTEP                                              string
		HostsUp, HostsDown, Networks, LocalEndpoints, Endpoints int
		Warnings                                                []string
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return err
	}
	fmt.Fprintf(w, "host       %s (vtep %s)\n", s.Host, s.VTEP)
	fmt.Fprintf(w, "ring       %d up, %d down\n", s.HostsUp, s.HostsDown)
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
		rows = append(rows, []string{name, h.VTEP, h.State})
	}
	return table(w, "HOST\tVTEP\tSTATE", rows)
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
	return call(socket, http.MethodPost, path)
}
