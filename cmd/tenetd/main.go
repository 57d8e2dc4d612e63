// Command tenetd is Tenet's per-host daemon. It will serve Docker's remote
// network and IPAM driver protocols, program the VXLAN datapath and take part
// in the cluster's gossip ring (see ARCHITECTURE.md). As of this commit it only
// parses its configuration: the components land issue by issue.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("tenetd", version)
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tenetd:", err)
		os.Exit(1)
	}
}

func run() error {
	return errors.New("nothing to serve yet: the driver, datapath and gossip are not built (see ARCHITECTURE.md)")
}
