// Command tenetctl is the cluster admin's CLI. It talks to the local tenetd
// over its root-only admin socket (package adminapi), to define tenants and
// networks for the whole cluster and to show what the cluster looks like
// from here:
//
//	tenetctl status                          this host, ring health, convergence, datapath, warnings
//	tenetctl host ls | host remove NAME      hosts; reclaim a dead host's addresses
//	tenetctl tenant create|ls|rm             tenants
//	tenetctl network create|ls|inspect|rm    networks, created in every engine
//	tenetctl endpoint ls [--tenant --network --host]  containers and where they live
//	tenetctl diagnose                        what is wrong on this host (exit 1 if anything)
//
// Every command takes --json for scripts and --help; flags may come before
// or after the arguments. Exit codes: 0 done, 1 tenetd refused or could not
// be asked (or diagnose found something wrong), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/tenet-net/tenet/internal/adminapi"
)

var version = "dev"

// command is one "GROUP NAME" command.
type command struct {
	group, name string
	args        []string // names of the positional arguments
	help        string
	// flags registers the command's own flags (--json is everyone's).
	flags func(fs *flag.FlagSet)
	// run does the work; asJSON says to print JSON.
	run func(ctx context.Context, c adminapi.Client, args []string, asJSON bool, out io.Writer) error
}

func (c command) usage() string {
	u := "tenetctl " + c.group
	if c.name != "" {
		u += " " + c.name
	}
	for _, a := range c.args {
		u += " " + a
	}
	return u + " [flags]"
}

// commands lists every command; the groups' files add theirs.
var commands []command

var groupHelp = map[string]string{
	"status":   "this host's view: ring health, counts, convergence p99, datapath, warnings",
	"host":     "the cluster's hosts: ls, remove",
	"tenant":   "tenants: create, ls, rm",
	"network":  "networks defined once for every host: create, ls, inspect, rm",
	"endpoint": "container endpoints: ls",
	"diagnose": "compare what should be programmed with the kernel and the ring; exit 1 if anything is wrong",
	"version":  "print the version",
}

var groupOrder = []string{"status", "host", "tenant", "network", "endpoint", "diagnose", "version"}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, "usage: tenetctl [--socket PATH] COMMAND [ARGS] [--json]\n\ncommands:\n")
	for _, g := range groupOrder {
		fmt.Fprintf(w, "  %-9s %s\n", g, groupHelp[g])
		for _, c := range commands {
			if c.group == g && c.name != "" {
				fmt.Fprintf(w, "    %-40s %s\n", strings.TrimSuffix(strings.TrimPrefix(c.usage(), "tenetctl "), " [flags]"), c.help)
			}
		}
	}
	fmt.Fprint(w, "\nRun \"tenetctl COMMAND --help\" for a command's flags. Exit codes: 0 done, 1 tenetd refused or could not be asked (diagnose: something is wrong), 2 bad usage.\n")
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "help" }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenetctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", adminapi.DefaultSocket, "tenetd's admin socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			mainUsage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "tenetctl: %v\n", err)
		mainUsage(stderr)
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 {
		mainUsage(stderr)
		return 2
	}
	group := rest[0]
	rest = rest[1:]
	if isHelp(group) {
		mainUsage(stdout)
		return 0
	}
	if group == "version" {
		if len(rest) > 0 && isHelp(rest[0]) {
			fmt.Fprintln(stdout, "usage: tenetctl version\n  print tenetctl's version")
			return 0
		}
		fmt.Fprintln(stdout, "tenetctl", version)
		return 0
	}
	var inGroup []command
	for _, c := range commands {
		if c.group == group {
			inGroup = append(inGroup, c)
		}
	}
	if len(inGroup) == 0 {
		fmt.Fprintf(stderr, "tenetctl: unknown command %q\n", group)
		mainUsage(stderr)
		return 2
	}
	cmd, ok := inGroup[0], inGroup[0].name == ""
	if !ok {
		if len(rest) == 0 || isHelp(rest[0]) {
			w := stderr
			if len(rest) > 0 {
				w = stdout
			}
			groupUsage(w, group, inGroup)
			if len(rest) == 0 {
				return 2
			}
			return 0
		}
		i := slices.IndexFunc(inGroup, func(c command) bool { return c.name == rest[0] })
		if i < 0 {
			fmt.Fprintf(stderr, "tenetctl %s: unknown command %q\n", group, rest[0])
			groupUsage(stderr, group, inGroup)
			return 2
		}
		cmd, rest = inGroup[i], rest[1:]
	}
	return runCommand(ctx, cmd, *socket, rest, stdout, stderr)
}

func groupUsage(w io.Writer, group string, cmds []command) {
	fmt.Fprintf(w, "usage: tenetctl %s COMMAND\n  %s\n\ncommands:\n", group, groupHelp[group])
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-40s %s\n", strings.TrimSuffix(strings.TrimPrefix(c.usage(), "tenetctl "), " [flags]"), c.help)
	}
	fmt.Fprintf(w, "\nRun \"tenetctl %s COMMAND --help\" for a command's flags.\n", group)
}

// runCommand parses the command's flags, which may come before, between or
// after its arguments, and runs it.
func runCommand(ctx context.Context, cmd command, socket string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd.usage(), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	fs.StringVar(&socket, "socket", socket, "tenetd's admin socket")
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s\n  %s\n\nflags:\n", cmd.usage(), cmd.help)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				usage(stdout)
				return 0
			}
			fmt.Fprintf(stderr, "tenetctl: %v\n", err)
			usage(stderr)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != len(cmd.args) {
		if len(pos) < len(cmd.args) {
			fmt.Fprintf(stderr, "tenetctl: %s: missing %s\n", strings.TrimSuffix(strings.TrimPrefix(cmd.usage(), "tenetctl "), " [flags]"), strings.Join(cmd.args[len(pos):], " "))
		} else {
			fmt.Fprintf(stderr, "tenetctl: unexpected argument %q\n", pos[len(cmd.args)])
		}
		usage(stderr)
		return 2
	}
	if err := cmd.run(ctx, adminapi.Client{Socket: socket}, pos, *asJSON, stdout); err != nil {
		var u usageError
		if errors.Is(err, errFound) {
			return 1 // the output said what
		}
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "tenetctl: %v\n", err)
			usage(stderr)
			return 2
		}
		fmt.Fprintln(stderr, "tenetctl:", err)
		return 1
	}
	return 0
}

// errFound ends a command that printed what is wrong: exit 1, no more said.
var errFound = errors.New("found something wrong")

// usageError is a bad argument found by a command's run: exit 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// table prints rows under a header, aligned.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// list runs a read: tenetd's raw JSON with --json, else a table of
// header and one row per item.
func list[T any](ctx context.Context, c adminapi.Client, path string, asJSON bool, out io.Writer, header string, row func(T) []string) error {
	var items []T
	raw, err := c.Do(ctx, http.MethodGet, path, nil, &items)
	if err != nil {
		return err
	}
	if asJSON {
		printJSON(out, raw)
		return nil
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		rows = append(rows, row(it))
	}
	return table(out, header, rows)
}

// printJSON writes raw JSON as tenetd sent it, ending in a newline.
func printJSON(w io.Writer, raw []byte) {
	w.Write(raw)
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		fmt.Fprintln(w)
	}
}
