package overlay_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/tenet-net/tenet/e2e"
	"github.com/tenet-net/tenet/overlay/nstest"
)

// TestMain fails the package if its root tests left a namespace, process,
// mount or directory behind.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if os.Geteuid() == 0 {
		leaks := append(e2e.Leaks(e2e.DefaultBaseDir, e2e.ProcessRunPrefix()), nstest.Leaked()...)
		if len(leaks) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: overlay tests left %d object(s) behind:\n", len(leaks))
			for _, l := range leaks {
				fmt.Fprintln(os.Stderr, "  ", l)
			}
			code = 1
		}
	}
	os.Exit(code)
}
