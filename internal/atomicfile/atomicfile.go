// Package atomicfile writes files so that a reader, or the next start after
// a crash or power loss, sees either the old content or the new, never a
// mix: the data goes to a temporary file beside the target, is synced, and
// renamed over the target; then the directory is synced so that the rename
// itself is durable. It is the one file writer of Tenet's state files.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces the file at path with data (mode perm), creating its
// directory (0700) if needed. On error the old file is left as it was.
func Write(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// Read returns the file's content, or nil and no error if it does not
// exist.
func Read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// Store keeps one blob in a file (ipam.Store): Load returns nil before the
// first Save.
type Store struct{ Path string }

// Load returns the saved blob, or nil if there is none yet.
func (s Store) Load() ([]byte, error) { return Read(s.Path) }

// Save replaces the blob atomically and durably.
func (s Store) Save(b []byte) error { return Write(s.Path, b, 0o600) }
