package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesWholeAndLeavesNoTemporaryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "s.json")
	if b, err := Read(path); err != nil || b != nil {
		t.Fatalf("Read of a missing file = %q, %v; want nil, nil", b, err)
	}
	for _, content := range []string{"first, longer content", "second"} {
		if err := Write(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := Read(path)
		if err != nil || !bytes.Equal(b, []byte(content)) {
			t.Fatalf("Read = %q, %v; want %q", b, err, content)
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", st.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the file: %v", len(entries), entries)
	}
}

func TestWriteFailureLeavesTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the file should go cannot be replaced by a rename.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := Write(blocked, []byte("new"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "blocked") {
		t.Fatalf("Write over a non-empty directory: %v; want an error naming it", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("a failed write left files behind: %v", entries)
	}
	if b, _ := Read(path); string(b) != "old" {
		t.Fatalf("old file = %q", b)
	}
}
