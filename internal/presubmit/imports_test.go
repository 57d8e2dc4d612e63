// Package presubmit holds repository-wide checks that run with the unit tests.
package presubmit

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// kernelImports may be imported only where ARCHITECTURE.md says kernel state
// is touched: overlay's *_linux.go files, overlay/nstest, and the e2e testbed.
var kernelImports = []string{
	"github.com/vishvananda/netlink",
	"github.com/vishvananda/netns",
	"github.com/google/nftables",
	"github.com/mdlayher/netlink",
	"github.com/mdlayher/genetlink",
	"golang.zx2c4.com/wireguard/wgctrl",
	"golang.org/x/sys/unix",
}

func allowedKernelImporter(path string) bool {
	switch {
	case strings.HasPrefix(path, "e2e/"):
		return true
	case strings.HasPrefix(path, "overlay/nstest/"):
		return true
	case strings.HasPrefix(path, "overlay/") && strings.HasSuffix(path, "_linux.go"):
		return true
	case strings.HasPrefix(path, "overlay/") && strings.HasSuffix(path, "_linux_test.go"):
		return true
	}
	return false
}

func TestOnlyTheDatapathImportsNetlink(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			for _, k := range kernelImports {
				if (p == k || strings.HasPrefix(p, k+"/")) && !allowedKernelImporter(filepath.ToSlash(rel)) {
					t.Errorf("%s imports %s: only overlay/*_linux.go, overlay/nstest and e2e may", rel, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 5 {
		t.Fatalf("checked only %d Go files from %s; is the walk rooted right?", checked, root)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("root %s has no go.mod: %v", root, err)
	}
}
