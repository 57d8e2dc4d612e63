package ipam

import "sync"

// Store persists one host's IPAM state across restarts of tenetd. Save is
// called without the IPAM's lock, one call at a time, after changes (calls
// made while a save is under way share the next one), and must not call
// back into IPAM. An address is handed out only once a Save holding it has
// returned, so Save should be quick (a local file write); if it fails, the
// request fails. Load returns nil, nil when nothing was saved yet.
type Store interface {
	Load() ([]byte, error)
	Save(state []byte) error
}

// MemStore is a Store in memory, for tests and for hosts that accept losing
// state on restart (they then rely on Docker's request replay). Safe for
// concurrent use.
type MemStore struct {
	mu sync.Mutex // guards b
	b  []byte
}

// Load returns the last saved state.
func (m *MemStore) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b, nil
}

// Save keeps a copy of state.
func (m *MemStore) Save(state []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.b = append(m.b[:0:0], state...)
	return nil
}
