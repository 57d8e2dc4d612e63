package ipam

// Replica is what IPAM needs from the replication layer (package gossip): a
// table replicated to every host, eventually consistent, where each host
// writes only its own entries. Several hosts may hold an entry under the same
// key; they are distinct entries told apart by Host. A thin adapter maps it
// onto gossip's generic owner-writes-only table; ipamtest.Cluster is an
// in-memory fake with delays and partitions.
//
// IPAM never relies on delivery order between keys, on timely delivery, or
// on a winner chosen by the table: it computes ownership itself (blocks.go).
type Replica interface {
	// Put writes or overwrites this host's entry under key. It returns once
	// the local replica has it; other hosts see it later.
	Put(key string, value []byte) error
	// Delete removes this host's entry under key (a tombstone).
	Delete(key string) error
	// List returns every entry under keys starting with prefix, of every
	// host, this host's own included. It must include the entries of hosts
	// currently declared dead (memberlist hides them from readers; IPAM needs
	// them to reclaim a removed host's blocks). Callers may not modify Value.
	List(prefix string) []Entry
	// Subscribe delivers a notice of every change to the local replica until
	// cancel is called. Dropping notices when buf is full is allowed: IPAM
	// also rescans periodically.
	Subscribe(buf int) (events <-chan Event, cancel func())
	// Members returns every host the membership layer knows of, this host
	// included, alive or not.
	Members() []Member
}

// Entry is one host's entry in the replicated table.
type Entry struct {
	Key     string
	Host    string // writer; only it can change or delete the entry
	Value   []byte
	Version uint64 // Lamport version of the write
}

// Event notes a change to the local replica.
type Event struct {
	Key     string
	Host    string
	Deleted bool
}

// Member is a host as the membership layer sees it.
type Member struct {
	Name  string
	Alive bool
}
