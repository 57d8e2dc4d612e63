package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tenet-net/tenet/e2e"
)

// TestMain fails the package if any testbed run of this test binary left
// anything behind: namespace, process, cgroup, mount or directory.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if os.Geteuid() == 0 && os.Getenv(helperEnv) == "" {
		if leaks := e2e.Leaks(e2e.DefaultBaseDir, e2e.ProcessRunPrefix()); len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: testbed runs of this test binary left %d object(s) behind:\n", len(leaks))
			for _, l := range leaks {
				fmt.Fprintln(os.Stderr, "  ", l)
			}
			code = 1
		}
	}
	os.Exit(code)
}
