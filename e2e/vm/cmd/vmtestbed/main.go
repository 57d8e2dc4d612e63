// Command vmtestbed lists, reaps and checks VM testbed runs on this machine
// (scripts/test-vm.sh ls|reap|leaks):
//
//	vmtestbed ls      runs under /var/tmp/tenet-vm, and whether their owner is gone
//	vmtestbed reap    tear down runs whose test process died (QEMU, namespace, files)
//	vmtestbed leaks   list anything of any VM run left on the machine; exit 1 if some
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/tenet-net/tenet/e2e/vm"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: vmtestbed ls|reap|leaks")
		os.Exit(2)
	}
	logf := func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	switch os.Args[1] {
	case "ls":
		runs, err := vm.Runs(vm.DefaultBaseDir)
		if err != nil {
			fail(err)
		}
		for _, r := range runs {
			state := "live"
			if r.Stale {
				state = "stale (owner gone)"
			}
			fmt.Printf("%s\t%s\t%v\n", r.Run, state, r.VMs)
		}
	case "reap":
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		reaped, err := vm.Reap(ctx, vm.DefaultBaseDir, logf)
		fmt.Printf("reaped %d run(s) %v\n", len(reaped), reaped)
		if err != nil {
			fail(err)
		}
	case "leaks":
		leaks := vm.Leaks(vm.DefaultBaseDir, "vm")
		for _, l := range leaks {
			fmt.Println(l)
		}
		if len(leaks) > 0 {
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "vmtestbed: unknown command %q (ls, reap or leaks)\n", os.Args[1])
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vmtestbed:", err)
	os.Exit(1)
}
