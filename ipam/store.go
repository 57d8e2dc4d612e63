package ipam

// Store persists one host's IPAM state (EncodeState's bytes) across restarts
// of tenetd. Save is called after every change, under the IPAM's lock, so it
// must be quick (a local file or bbolt write) and must not call back into
// IPAM. Load returns nil, nil when nothing was saved yet.
type Store interface {
	Load() ([]byte, error)
	Save(state []byte) error
}

// MemStore is a Store in memory, for tests and for hosts that accept losing
// state on restart (they then rely on Docker's request replay). Safe for
// concurrent use by one IPAM.
type MemStore struct{ b []byte }

// Load returns the last saved state.
func (m *MemStore) Load() ([]byte, error) { return m.b, nil }

// Save keeps a copy of state.
func (m *MemStore) Save(state []byte) error { m.b = append(m.b[:0:0], state...); return nil }
