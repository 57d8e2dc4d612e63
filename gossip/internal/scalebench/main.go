// Command scalebench measures the gossip package at cluster scale, with every
// host in this one process on 127.0.0.1, and hashicorp/memberlist alone
// measured the same way for comparison. scripts/bench/gossip-scale.sh runs
// it; see there for the scenarios and the summary table.
//
// It uses only the package's public API (and gossiptest to cut a host off,
// which looks like a crash to the others). Every figure is printed as a
// line "RESULT <scenario> <n> <impl> <metric> <value>", which the script
// gathers into a table with -report.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "ring", "ring | memberlist | join | tombstones | report (newcomer: join's child; hog: -stall's)")
	flag.IntVar(&o.n, "n", 50, "hosts in the ring")
	flag.BoolVar(&o.formTrace, "form-trace", false, "ring: while the ring forms, log each second the hosts started and seen by the first, its joins admitted and deferred, false downs, CPU and timer lateness")
	flag.DurationVar(&o.spread, "spread", 10*time.Second, "start all hosts within this window")
	flag.DurationVar(&o.idle, "idle", 30*time.Second, "quiet window after forming, before any table state: idle CPU and memory of the bare ring")
	flag.DurationVar(&o.soak, "soak", time.Minute, "quiet soak once 80% of hosts have a network and an endpoint: false downs, idle cost with that state")
	flag.IntVar(&o.changes, "changes", 100, "single changes timed one at a time")
	flag.IntVar(&o.setupEach, "setup-endpoints", 1, "ring: endpoints each attaching host puts in the set-up")
	flag.Float64Var(&o.setupRate, "setup-rate", 0, "ring: hosts a second that attach and put in the set-up, one after another (0: all at once)")
	flag.IntVar(&o.burst, "burst", 1000, "changes in the burst")
	flag.IntVar(&o.writers, "writers", 10, "hosts writing the burst at once")
	flag.IntVar(&o.kills, "kills", 3, "hosts cut off one at a time (a crash, seen from the others)")
	flag.IntVar(&o.endpoints, "endpoints", 10_000, "join: endpoints the new host must receive")
	flag.IntVar(&o.networks, "networks", 10, "join: networks the endpoints are spread over")
	flag.IntVar(&o.repeat, "repeat", 3, "join: new hosts per attach/join order")
	flag.BoolVar(&o.paceByCPU, "pace-by-cpu", false, "memberlist: start each host (after the first 8) once the process used at most half its cores over 250 ms, as Tenet's join admission paces joins (-spread is then ignored)")
	flag.BoolVar(&o.lanDefaults, "lan-defaults", false, "memberlist: LAN defaults instead of Tenet's settings")
	flag.StringVar(&o.report, "report", "", "report: file of RESULT lines to tabulate")
	flag.DurationVar(&o.probeInterval, "probe-interval", 0, "ring: failure detector's probe interval (0: DefaultConfig's)")
	flag.DurationVar(&o.probeTimeout, "probe-timeout", 0, "ring: failure detector's probe timeout (0: DefaultConfig's)")
	flag.IntVar(&o.suspicionMult, "suspicion-mult", 0, "ring: failure detector's suspicion multiplier (0: DefaultConfig's)")
	flag.StringVar(&o.soakProfile, "soak-cpuprofile", "", "ring: write a CPU profile of the quiet soak with state to this file")
	flag.StringVar(&o.pprof, "pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060) while running")
	flag.StringVar(&o.newcomer, "newcomer", "both", "join: run each new host in the ring's process (in), in its own process (own), or alternate (both)")
	flag.StringVar(&o.newcomerProfile, "newcomer-cpuprofile", "", "join: each own-process newcomer writes a CPU profile to this prefix plus its name")
	flag.DurationVar(&o.stall, "stall", 0, "ring, memberlist: a CPU hog of this long beside the ring (when: -stall-at; memberlist: after its idle window), then a minute's watch of false downs (0: none; the ring's later scenarios are then skipped)")
	flag.StringVar(&o.stallAt, "stall-at", "soak", "ring: when the -stall hog starts: soak (after it, the ring quiet) or setup (as the hosts attach and put their endpoints)")
	flag.StringVar(&o.setupProfile, "setup-cpuprofile", "", "ring: write a CPU profile of the set-up (attach, one endpoint each) to this file")
	flag.StringVar(&o.stallProfile, "stall-cpuprofile", "", "ring, memberlist: write a CPU profile of the minute after the -stall hog to this file (refused with -setup-cpuprofile and -stall-at setup: they overlap)")
	flag.IntVar(&o.stallThreads, "stall-threads", 4, "ring, memberlist: threads the -stall hog spins")
	flag.StringVar(&o.ringProfile, "ring-cpuprofile", "", "join: write a CPU profile of the ring's process while new hosts join, per order, to this prefix")
	// The child of -newcomer own (mode newcomer); not for use by hand.
	flag.StringVar(&o.name, "name", "", "newcomer: host name")
	flag.StringVar(&o.order, "order", "", "newcomer: attach-then-join or join-then-attach")
	flag.StringVar(&o.seed, "seed", "", "newcomer: the ring's first host")
	flag.IntVar(&o.ringSize, "ring-size", 0, "newcomer: hosts in the ring before it")
	flag.IntVar(&o.vtepIndex, "vtep-index", 0, "newcomer: index for its made-up VTEP address")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "newcomer: write a CPU profile of its run to this file")
	flag.Parse()
	if o.pprof != "" {
		// Loopback only: the profiles show the benchmark's keys and state.
		ap, err := netip.ParseAddrPort(o.pprof)
		if err != nil || !ap.Addr().IsLoopback() {
			fmt.Fprintf(os.Stderr, "scalebench: -pprof %q: want a loopback address and port, e.g. 127.0.0.1:6060\n", o.pprof)
			os.Exit(2)
		}
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			fmt.Fprintf(os.Stderr, "scalebench: -pprof: %v\n", err)
			os.Exit(2)
		}
		go func() { log.Println(http.Serve(ln, nil)) }()
	}
	log.SetFlags(log.Lmicroseconds)
	var err error
	if o.mode != "report" && (o.stall < 0 || o.stall > 0 && o.stallThreads <= 0) {
		fmt.Fprintf(os.Stderr, "scalebench: -stall %s with -stall-threads %d: want a length of 0 or more and, with one, threads above 0\n", o.stall, o.stallThreads)
		os.Exit(2)
	}
	switch o.mode {
	case "ring":
		if o.stallAt != "soak" && o.stallAt != "setup" {
			err = fmt.Errorf("-stall-at %q: must be soak or setup", o.stallAt)
			break
		}
		if o.setupEach < 1 {
			err = fmt.Errorf("-setup-endpoints %d: must be at least 1", o.setupEach)
			break
		}
		if o.stall > 0 && o.stallAt == "setup" && o.stallProfile != "" && o.setupProfile != "" {
			err = errors.New("-stall-cpuprofile and -setup-cpuprofile with -stall-at setup: the two profiles would overlap; give one")
			break
		}
		err = runRing(&o)
	case "memberlist":
		err = runMemberlist(&o)
	case "join":
		err = runJoin(&o)
	case "tombstones":
		err = runTombstones(&o)
	case "newcomer":
		err = runNewcomer(&o)
	case "hog":
		err = runHog(&o)
	case "report":
		err = runReport(o.report)
	default:
		err = fmt.Errorf("-mode %q: must be ring, memberlist, join, tombstones, newcomer or report", o.mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

type options struct {
	mode                           string
	formTrace, paceByCPU           bool
	setupRate                      float64
	n                              int
	spread, idle, soak             time.Duration
	changes, burst, writers, kills int
	setupEach                      int
	endpoints, networks, repeat    int
	lanDefaults                    bool
	report                         string
	soakProfile                    string
	pprof                          string
	probeInterval, probeTimeout    time.Duration
	suspicionMult                  int
	newcomer, name, order, seed    string
	ringSize, vtepIndex            int
	newcomerProfile, cpuprofile    string
	ringProfile                    string
	stall                          time.Duration
	stallThreads                   int
	stallAt, setupProfile          string
	stallProfile                   string
}

// result prints one figure for the summary table.
func result(scenario string, n int, impl, metric string, value any) {
	switch v := value.(type) {
	case float64:
		value = num(v)
	case time.Duration:
		value = num(v.Seconds() * 1000)
		metric += "_ms"
	}
	fmt.Printf("RESULT %s %d %s %s %v\n", scenario, n, impl, metric, value)
}

// tenetCompresses is whether gossip.New leaves memberlist's compression of
// every packet on, so that memberlist alone is measured as Tenet runs it.
const tenetCompresses = false

// num prints v with three significant digits, without an exponent.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
