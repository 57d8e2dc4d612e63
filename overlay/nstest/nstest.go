// Package nstest helps root tests of the datapath: it makes uniquely named
// network namespaces that are removed when the test ends, also on failure.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/tenet-net/tenet/overlay"
)

// RequireRoot skips t unless it runs as root and not in -short mode.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("root test: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// SkipIfNotSupported skips t when err says the kernel lacks a feature, with
// the error as the reason ("vxlan: not supported by this kernel").
func SkipIfNotSupported(t testing.TB, err error, notSupported error) {
	t.Helper()
	if errors.Is(err, notSupported) {
		t.Skip(err.Error())
	}
}

// Prefix starts the name of every namespace this process makes:
// "tenet-t-" and a tag chosen once per process, so a leak check of one test
// binary looks only at its own.
var Prefix = "tenet-t-" + randomHex(3) + "-"

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Leaked lists namespaces of this process that still exist.
func Leaked() []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// NewNetNS creates a network namespace named Prefix + random, pinned under
// /run/netns, and removes it when t ends. It returns the name.
func NewNetNS(t testing.TB) string {
	t.Helper()
	name := Prefix + randomHex(4)
	if err := overlay.CreateNamedNetns(name); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}
