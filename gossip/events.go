package gossip

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// EventKind says whether an entry appeared (or changed) or went away.
type EventKind uint8

const (
	// EventPut: the entry is new or has a new value, or its host came back.
	EventPut EventKind = iota + 1
	// EventDelete: the entry was deleted by its host, or (Hidden) its host
	// is down; the event carries the last value.
	EventDelete
)

func (k EventKind) String() string {
	switch k {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Event is one change to a table as this host sees it. Exactly one of
// Network, Endpoint, Attachment and KV is set, according to Table.
type Event struct {
	Kind    EventKind
	Table   Table
	Key     string
	Host    string // the entry's owner
	Version uint64
	// Hidden is set on deletes caused by the host going down (and on the
	// puts that show its entries again when it returns).
	Hidden bool

	Network    *Network
	Endpoint   *Endpoint // DownSince set on hidden deletes
	Attachment *Attachment
	KV         *KVEntry
}

// rawEvent is an event as the store records it, before the value is
// decoded (which happens on the subscriber's goroutine, not under the
// store's lock).
type rawEvent struct {
	kind      EventKind
	table     tableID
	owner     string
	key       string
	version   uint64
	value     []byte
	hidden    bool
	downSince time.Time // hidden deletes: when the owner went down
}

func (r *rawEvent) decode() Event {
	ev := Event{Kind: r.kind, Table: r.table.name(), Key: r.key, Host: r.owner, Version: r.version, Hidden: r.hidden}
	switch r.table {
	case tableNetworks:
		n, _ := decodeNetwork(r.value) // stored values were validated
		n.Host = r.owner
		ev.Network = &n
	case tableEndpoints:
		e, _ := decodeEndpoint(r.key, r.value)
		e.Host = r.owner
		e.DownSince = r.downSince
		ev.Endpoint = &e
	case tableAttachments:
		ev.Attachment = &Attachment{Network: r.key, Host: r.owner, DownSince: r.downSince}
	case tableKV:
		ev.KV = &KVEntry{Key: r.key, Host: r.owner, Value: r.value, Version: r.version}
	}
	return ev
}

// subscription queues events for one subscriber without ever blocking the
// store, drained by the subscriber's goroutine. The queue holds at most one
// event per entry: a newer event of an entry still queued takes the older
// one's place, so a slow subscriber gets each entry's latest state and the
// queue never outgrows the tables (a storm of flapping hosts once queued 3
// GiB of events for one slow subscriber).
type subscription struct {
	out  chan Event
	wake chan struct{}
	done chan struct{}
	once sync.Once

	mu    sync.Mutex       // guards queue and at
	queue []rawEvent       // in the order their entries first changed
	at    map[entryKey]int // an entry's event's index in queue
}

// entryKey names one entry across scopes.
type entryKey struct {
	table      tableID
	owner, key string
}

// emitLocked queues ev for every subscriber; s.mu must be held.
func (s *store) emitLocked(ev rawEvent) {
	for sub := range s.subs {
		sub.push(ev)
	}
}

func (sub *subscription) push(ev rawEvent) {
	k := entryKey{ev.table, ev.owner, ev.key}
	sub.mu.Lock()
	if i, ok := sub.at[k]; ok {
		sub.queue[i] = ev
	} else {
		if sub.at == nil {
			sub.at = map[entryKey]int{}
		}
		sub.at[k] = len(sub.queue)
		sub.queue = append(sub.queue, ev)
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *subscription) run() {
	defer close(sub.out)
	for {
		sub.mu.Lock()
		batch := sub.queue
		sub.queue, sub.at = nil, nil
		sub.mu.Unlock()
		for i := range batch {
			select {
			case sub.out <- batch[i].decode():
			case <-sub.done:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-sub.wake:
		case <-sub.done:
			return
		}
	}
}

// subscribe registers a subscriber and queues a put for every visible
// entry first, so the subscriber needs no separate List.
func (s *store) subscribe(buf int) (<-chan Event, func()) {
	sub := &subscription{
		out:  make(chan Event, buf),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	s.mu.Lock()
	for _, sc := range s.scopes {
		for k, r := range sc.entries {
			if !r.deleted && k.owner.alive {
				sub.queue = append(sub.queue, rawEvent{kind: EventPut, table: k.table, owner: k.owner.name, key: k.key, version: r.version, value: r.value})
			}
		}
	}
	// Replay in table order (networks before their endpoints), then by
	// owner and key, so a subscriber sees a stable order. Sorted before
	// the subscriber is registered: after that, pushes go to the queue.
	sort.Slice(sub.queue, func(i, j int) bool {
		a, b := &sub.queue[i], &sub.queue[j]
		if a.table != b.table {
			return a.table < b.table
		}
		if a.owner != b.owner {
			return a.owner < b.owner
		}
		return a.key < b.key
	})
	sub.at = make(map[entryKey]int, len(sub.queue))
	for i, ev := range sub.queue {
		sub.at[entryKey{ev.table, ev.owner, ev.key}] = i
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	go sub.run()
	cancel := func() {
		sub.once.Do(func() {
			s.mu.Lock()
			delete(s.subs, sub)
			s.mu.Unlock()
			close(sub.done)
		})
	}
	return sub.out, cancel
}

// closeSubs ends every subscription (the node stopped).
func (s *store) closeSubs() {
	s.mu.Lock()
	subs := s.subs
	s.subs = make(map[*subscription]struct{})
	s.mu.Unlock()
	for sub := range subs {
		sub.once.Do(func() { close(sub.done) })
	}
}
