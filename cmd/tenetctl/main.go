// Command tenetctl is the cluster admin's CLI: tenants, networks, hosts,
// endpoints and health, spoken over tenetd's admin socket. As of this commit it
// knows only "version"; the commands land with the cluster admin issue.
package main

import (
	"fmt"
	"os"
)

var version = "dev"

const usage = `usage: tenetctl COMMAND
  version    print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version", "--version":
		fmt.Println("tenetctl", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tenetctl: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}
