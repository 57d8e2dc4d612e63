package vm_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tenet-net/tenet/e2e/vm"
)

// TestMain fails the package if any VM run of this test binary left
// anything behind: namespace, process, directory or root-namespace link.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if os.Geteuid() == 0 {
		if leaks := vm.Leaks(vm.DefaultBaseDir, vm.ProcessRunPrefix()); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: VM runs of this test binary left %d object(s) behind:\n", len(leaks))
			for _, l := range leaks {
				fmt.Fprintln(os.Stderr, "  ", l)
			}
			code = 1
		}
	}
	os.Exit(code)
}
