// Command fuzz runs random days of cluster administration against the real
// multi-host testbed and checks the cluster against a model after every
// step (package e2e/fuzz; scripts/fuzz.sh wraps it).
//
//	fuzz [--seed S] [--steps N] [--hosts H]    one run; a fresh seed unless given
//	fuzz --replay ops.json                     the steps a failed run saved
//	fuzz --soak 2000 [--soak-run 100]          runs with fresh seeds until 2,000 steps
//
// Exit codes: 0 every run passed, 1 a run failed (its report says how to
// replay it) or the testbed broke, 2 bad usage.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tenet-net/tenet/e2e/fuzz"
)

func main() {
	fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
	seed := fs.Uint64("seed", 0, "seed of the run (0: a fresh one, printed)")
	steps := fs.Int("steps", 60, "number of steps")
	hosts := fs.Int("hosts", 0, "hosts, 3-5 (0: drawn from the seed)")
	weights := fs.String("weights", "", "name=value,... over the default weights of ops (e.g. restart=0) and percentages (collide, invalid, overlap, small, fixed, policy, internal)")
	tolerate := fs.String("tolerate", "", "issue-10 points whose known failures to tolerate: "+strings.Join(fuzz.KnownTolerances, ","))
	budget := fs.Duration("budget", 0, "stop drawing steps after this long (0: never)")
	replay := fs.String("replay", "", "replay the ops of this ops.json instead of drawing them")
	artifacts := fs.String("artifacts", "/var/tmp/tenet-fuzz", "directory for each run's ops.json, and logs when it fails")
	shrink := fs.Duration("shrink", 0, "after a failure, look this long for a shorter sequence that fails the same way")
	soak := fs.Int("soak", 0, "soak: runs with fresh seeds until this many steps in all, or --soak-time")
	soakTime := fs.Duration("soak-time", 0, "soak: start no new run after this long (0: no limit)")
	soakRun := fs.Int("soak-run", 100, "soak: steps per run")
	soakReport := fs.String("soak-report", "", "soak: write the result (markdown) to this file")
	verbose := fs.Bool("v", false, "print the testbed's own steps and each settle")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fuzz: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	w, err := fuzz.ParseWeights(*weights)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzz:", err)
		os.Exit(2)
	}
	tol, err := fuzz.ParseTolerances(*tolerate)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzz:", err)
		os.Exit(2)
	}
	if *hosts != 0 && (*hosts < 3 || *hosts > 5) {
		fmt.Fprintf(os.Stderr, "fuzz: --hosts %d: must be 3-5\n", *hosts)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "fuzz: needs root: it brings up a testbed of network namespaces and Docker engines")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := fuzz.Config{Seed: *seed, Steps: *steps, Hosts: *hosts, Weights: w, Tolerate: tol, Budget: *budget,
		Artifacts: *artifacts, Out: os.Stdout, Verbose: *verbose}
	if *replay != "" {
		b, err := os.ReadFile(*replay)
		if err == nil {
			err = json.Unmarshal(b, &cfg.Ops)
		}
		if err != nil || len(cfg.Ops) == 0 {
			fmt.Fprintf(os.Stderr, "fuzz: --replay %s: want a JSON array of ops: %v\n", *replay, err)
			os.Exit(2)
		}
	}
	if *soak > 0 {
		os.Exit(soakRuns(ctx, cfg, *soak, *soakRun, *soakTime, *soakReport))
	}
	if cfg.Seed == 0 {
		cfg.Seed = freshSeed()
	}
	rep, err := fuzz.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if rep.Failure != nil && *shrink > 0 {
		fmt.Println(rep.Text())
		fmt.Printf("fuzz: shrinking for up to %v\n", *shrink)
		rep = fuzz.Shrink(ctx, cfg, rep, *shrink)
	}
	fmt.Println(rep.Text())
	if rep.Failure != nil {
		os.Exit(1)
	}
}

func freshSeed() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return binary.LittleEndian.Uint64(b[:]) % 1_000_000_000 // short enough to type
}

// soakRuns runs fresh seeds, perRun steps each, until total steps are done,
// limit has passed (0: none) or ctx ends, and writes a markdown summary to
// report (if given).
func soakRuns(ctx context.Context, cfg fuzz.Config, total, perRun int, limit time.Duration, report string) int {
	start := time.Now()
	type row struct {
		rep *fuzz.Report
		err error
	}
	var rows []row
	done := 0
	for done < total && ctx.Err() == nil && (limit == 0 || time.Since(start) < limit) {
		c := cfg
		c.Seed, c.Steps, c.Hosts = freshSeed(), min(perRun, total-done), cfg.Hosts
		rep, err := fuzz.Run(ctx, c)
		if rep != nil {
			fmt.Println(rep.Text())
			done += rep.Steps
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			if rep == nil || rep.Steps == 0 {
				done++ // never loop forever on a broken testbed
			}
		}
		rows = append(rows, row{rep, err})
	}
	var b strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fails := 0
	for _, r := range rows {
		if r.err != nil || r.rep == nil || r.rep.Failure != nil {
			fails++
		}
	}
	fmt.Fprintf(&b, "# Last soak\n\n%s, commit %s: %d steps in %d runs of up to %d steps, %v; %d run(s) failed.\n",
		start.UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(commit)), done, len(rows), perRun,
		time.Since(start).Round(time.Minute), fails)
	fmt.Fprintf(&b, "Command: `scripts/fuzz.sh %s`.\n", strings.Join(os.Args[1:], " "))
	if w := cfg.Weights.String(); w != "" {
		fmt.Fprintf(&b, "Weights: `%s`.\n", w)
	}
	if len(cfg.Tolerate) > 0 {
		var ts []string
		for t := range cfg.Tolerate {
			ts = append(ts, t)
		}
		fmt.Fprintf(&b, "Tolerated (issue 10): %s.\n", strings.Join(ts, ", "))
	}
	fmt.Fprintf(&b, "\n| seed | hosts | steps | result |\n|---|---|---|---|\n")
	for _, r := range rows {
		switch {
		case r.rep == nil:
			fmt.Fprintf(&b, "| - | - | 0 | testbed error: %s |\n", oneLine(r.err.Error()))
		case r.rep.Failure == nil && r.err == nil:
			fmt.Fprintf(&b, "| %d | %d | %d | pass (%v) |\n", r.rep.Seed, r.rep.Hosts, r.rep.Steps, r.rep.Duration.Round(time.Second))
		case r.rep.Failure == nil:
			fmt.Fprintf(&b, "| %d | %d | %d | testbed error: %s |\n", r.rep.Seed, r.rep.Hosts, r.rep.Steps, oneLine(r.err.Error()))
		default:
			f := r.rep.Failure
			what := "final checks"
			if f.Step > 0 {
				what = fmt.Sprintf("step %d `%s`", f.Step, f.Op)
			}
			v := f.Violations[0]
			fmt.Fprintf(&b, "| %d | %d | %d | **fail** at %s: [%s] expected %s; observed %s |\n", r.rep.Seed, r.rep.Hosts, r.rep.Steps,
				what, v.Check, oneLine(v.Expected), oneLine(v.Observed))
		}
	}
	fmt.Print(b.String())
	if report != "" {
		if err := os.WriteFile(report, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fuzz: soak report:", err)
		}
	}
	if fails > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.Join(strings.Fields(s), " "), "|", "\\|")
	if len(s) > 240 {
		s = s[:240] + "..."
	}
	return s
}
