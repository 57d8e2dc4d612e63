package core

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/tenet-net/tenet/internal/atomicfile"
	"github.com/tenet-net/tenet/internal/rules"
	"github.com/tenet-net/tenet/overlay"
)

// stateVersion is the format of state.json. Version 1 (tenetd before the
// core) keyed endpoints by Docker network ID and also held a copy of other
// hosts' state, which is ignored now.
const stateVersion = 2

type savedState struct {
	Version int `json:"version"`
	// Gen is the saver's count when it wrote the file: journal records
	// at or below it are in the file already.
	Gen       uint64          `json:"gen,omitempty"`
	Networks  []savedNetwork  `json:"networks"`
	Endpoints []savedEndpoint `json:"endpoints"`
}

type savedNetwork struct {
	Tenant   string       `json:"tenant"`
	Name     string       `json:"name"`
	VNI      uint32       `json:"vni"`
	Subnet   netip.Prefix `json:"subnet"`
	Gateway  netip.Addr   `json:"gateway,omitzero"`
	Internal bool         `json:"internal,omitempty"`
	MTU      int          `json:"mtu,omitempty"`
	// Encrypted: added without a version change (older tenetds ignore
	// it, and a file without it holds no encrypted network).
	Encrypted bool      `json:"encrypted,omitempty"`
	Ref       string    `json:"ref,omitempty"`
	DockerID  string    `json:"docker_id,omitempty"` // version 1's Ref
	Created   time.Time `json:"created,omitzero"`
}

type savedEndpoint struct {
	ID      string           `json:"id"`
	Network string           `json:"network"` // key; version 1: the Docker network ID
	IP      netip.Prefix     `json:"ip"`
	MAC     net.HardwareAddr `json:"mac"`
	Names   []string         `json:"names,omitempty"`
	Netns   string           `json:"netns,omitempty"`
	Seen    bool             `json:"netns_seen,omitempty"`
	Sandbox string           `json:"sandbox,omitempty"` // version 1's Netns
	Ports   []savedPort      `json:"ports,omitempty"`
	Created time.Time        `json:"created,omitzero"`
}

type savedPort struct {
	Proto    string     `json:"proto"` // "tcp", "udp"
	HostIP   netip.Addr `json:"host_ip,omitzero"`
	HostPort uint16     `json:"host_port"`
	Port     uint16     `json:"port"`
}

func savePorts(ps []PortBinding) []savedPort {
	var out []savedPort
	for _, p := range ps {
		out = append(out, savedPort{Proto: p.Proto.String(), HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	return out
}

// loadPorts reads saved ports back; ok is false if one breaks the rules.
func loadPorts(ps []savedPort) (out []PortBinding, ok bool) {
	for _, p := range ps {
		proto := map[string]overlay.Proto{"tcp": overlay.TCP, "udp": overlay.UDP}[p.Proto]
		r := PortRequest{Proto: proto, HostIP: p.HostIP, HostPort: p.HostPort, Port: p.Port}
		if proto == 0 || p.HostPort == 0 || r.check() != nil {
			return nil, false
		}
		if r.anyHost() {
			r.HostIP = netip.Addr{}
		}
		out = append(out, PortBinding{Proto: proto, HostIP: r.HostIP, HostPort: p.HostPort, Port: p.Port})
	}
	return out, true
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// journalPath is the journal beside state.json: what was saved since
// state.json was written, one JSON record (journalRecord) a line.
func journalPath(dir string) string { return filepath.Join(dir, "state.journal") }

// loadState reads state.json (either version) and the journal's records
// after it, and returns the saver's count they end at. Entries that no
// longer pass validation are dropped with a warning through warn.
func loadState(dir string, warn func(msg string, args ...any)) (map[string]*Network, map[string]*Endpoint, uint64, error) {
	nets, eps := map[string]*Network{}, map[string]*Endpoint{}
	b, err := atomicfile.Read(statePath(dir))
	if err != nil || b == nil {
		return nets, eps, 0, err
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, 0, fmt.Errorf("core: read %s: %w", statePath(dir), err)
	}
	if s.Version > stateVersion {
		return nil, nil, 0, fmt.Errorf("core: read %s: format version %d is newer than this tenetd's %d", statePath(dir), s.Version, stateVersion)
	}
	if err := replayJournal(dir, &s, warn); err != nil {
		return nil, nil, 0, err
	}
	byRef := map[string]string{}
	for _, n := range s.Networks {
		spec := NetworkSpec{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet, Gateway: n.Gateway,
			Internal: n.Internal, MTU: n.MTU, Encrypted: n.Encrypted, Ref: n.Ref}
		if spec.Ref == "" {
			spec.Ref = n.DockerID
		}
		if err := rules.Tenant(spec.Tenant); err != nil {
			warn("dropping a saved network", "network", spec.Key(), "err", err)
			continue
		}
		nets[spec.Key()] = &Network{NetworkSpec: spec, Created: n.Created}
		if spec.Ref != "" {
			byRef[spec.Ref] = spec.Key()
		}
	}
	for _, e := range s.Endpoints {
		key := e.Network
		if s.Version < 2 {
			key = byRef[e.Network]
		}
		if nets[key] == nil {
			warn("dropping a saved endpoint of an unknown network", "endpoint", e.ID, "network", e.Network)
			continue
		}
		netns := e.Netns
		if netns == "" {
			netns = e.Sandbox
		}
		// Version 1 did not record whether the namespace was seen; an
		// endpoint it knew had joined long ago.
		seen := e.Seen || s.Version < 2
		ports, ok := loadPorts(e.Ports)
		if !ok {
			warn("dropping the published ports of a saved endpoint: one breaks the rules", "endpoint", e.ID)
		}
		eps[e.ID] = &Endpoint{EndpointSpec: EndpointSpec{ID: e.ID, Network: key, IP: e.IP, MAC: e.MAC, Names: e.Names}, Netns: netns, NetnsSeen: seen,
			Ports: ports, Created: e.Created}
	}
	dropClashingPorts(eps, warn)
	return nets, eps, s.Gen, nil
}

// replayJournal applies to s the journal's records above its gen, in
// order, and moves s.Gen to the last. A last line without its newline was
// being written when tenetd stopped: its save never returned, so it is
// left out. A whole line that does not read ends the replay, with a
// warning (what follows it cannot be trusted in order).
func replayJournal(dir string, s *savedState, warn func(msg string, args ...any)) error {
	b, err := os.ReadFile(journalPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("core: read %s: %w", journalPath(dir), err)
	}
	byID := make(map[string]int, len(s.Endpoints))
	for i, e := range s.Endpoints {
		byID[e.ID] = i
	}
	dropped := map[string]bool{}
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			warn("ignoring the journal's last record: it was cut short (tenetd stopped while writing it)", "file", journalPath(dir))
			break
		}
		line := b[:i]
		b = b[i+1:]
		var r journalRecord
		if err := json.Unmarshal(line, &r); err != nil {
			warn("ignoring the rest of the journal: a record does not read", "file", journalPath(dir), "err", err)
			break
		}
		if r.Gen <= s.Gen {
			continue // in state.json already
		}
		s.Gen = r.Gen
		if r.NetsSet {
			s.Networks = s.Networks[:0]
			for _, raw := range r.Networks {
				var n savedNetwork
				if err := json.Unmarshal(raw, &n); err != nil {
					warn("dropping a journaled network that does not read", "err", err)
					continue
				}
				s.Networks = append(s.Networks, n)
			}
		}
		for _, raw := range r.Set {
			var e savedEndpoint
			if err := json.Unmarshal(raw, &e); err != nil {
				warn("dropping a journaled endpoint that does not read", "err", err)
				continue
			}
			if j, ok := byID[e.ID]; ok {
				s.Endpoints[j] = e
				delete(dropped, e.ID)
			} else {
				byID[e.ID] = len(s.Endpoints)
				s.Endpoints = append(s.Endpoints, e)
			}
		}
		for _, id := range r.Del {
			if _, ok := byID[id]; ok {
				dropped[id] = true
			}
		}
	}
	if len(dropped) > 0 {
		s.Endpoints = slices.DeleteFunc(s.Endpoints, func(e savedEndpoint) bool { return dropped[e.ID] })
	}
	return nil
}

// dropClashingPorts drops the published ports of a saved endpoint (in ID
// order) that publishes a host port an earlier one has, or one host port
// in ways that clash, so that an edited state file cannot make every
// reconcile fail.
func dropClashingPorts(eps map[string]*Endpoint, warn func(msg string, args ...any)) {
	ids := make([]string, 0, len(eps))
	for id := range eps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	owner := map[l4]string{}
	for _, id := range ids {
		e := eps[id]
		mine := map[l4][]PortBinding{}
		ok := true
		for _, p := range e.Ports {
			k := l4{p.Proto, p.HostPort}
			if _, taken := owner[k]; taken {
				ok = false
			}
			for _, m := range mine[k] {
				if m.Port != p.Port || m.Reservation().IP.IsUnspecified() || p.Reservation().IP.IsUnspecified() || m.HostIP == p.HostIP {
					ok = false
				}
			}
			mine[k] = append(mine[k], p)
		}
		if !ok {
			warn("dropping the published ports of a saved endpoint: they clash", "endpoint", id)
			e.Ports = nil
			continue
		}
		for k := range mine {
			owner[k] = id
		}
	}
}

func encodeState(nets []Network, eps []Endpoint) ([]byte, error) {
	s := savedState{Version: stateVersion, Networks: []savedNetwork{}, Endpoints: []savedEndpoint{}}
	for _, n := range nets {
		s.Networks = append(s.Networks, saveNetwork(n))
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, saveEndpoint(e))
	}
	slices.SortFunc(s.Networks, func(a, b savedNetwork) int { return cmp.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) })
	slices.SortFunc(s.Endpoints, func(a, b savedEndpoint) int { return cmp.Compare(a.ID, b.ID) })
	return json.Marshal(s) // no indentation: it doubled the cost of every save
}

func saveNetwork(n Network) savedNetwork {
	return savedNetwork{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, Subnet: n.Subnet,
		Gateway: n.Gateway, Internal: n.Internal, MTU: n.MTU, Encrypted: n.Encrypted, Ref: n.Ref, Created: n.Created}
}

func saveEndpoint(e Endpoint) savedEndpoint {
	return savedEndpoint{ID: e.ID, Network: e.Network, IP: e.IP, MAC: e.MAC, Names: e.Names, Netns: e.Netns, Seen: e.NetnsSeen,
		Ports: savePorts(e.Ports), Created: e.Created}
}

func (a savedEndpoint) equal(b savedEndpoint) bool {
	return a.ID == b.ID && a.Network == b.Network && a.IP == b.IP && bytes.Equal(a.MAC, b.MAC) && slices.Equal(a.Names, b.Names) &&
		a.Netns == b.Netns && a.Seen == b.Seen && a.Sandbox == b.Sandbox && slices.Equal(a.Ports, b.Ports) && a.Created == b.Created
}

// stateEncoder keeps the state as last saved, each endpoint encoded, so
// that a save encodes again only the endpoints that changed (encoding every
// endpoint took 4.5 ms at 1,000 endpoints, twice per docker run), and can
// say what changed as a journal record. Only the saver's goroutine uses it.
type stateEncoder struct {
	nets   []byte                      // the networks, encoded
	eps    map[string]*encodedEndpoint // by ID
	list   []*encodedEndpoint          // the same, by ID, if sorted
	sorted bool                        // list is up to date (snapshot)
	gen    uint64                      // updates so far
}

type encodedEndpoint struct {
	saved savedEndpoint
	json  []byte
	gen   uint64 // the last update that saw it
}

// journalRecord is one line of the journal: what changed since the line
// before (or the snapshot), as whole values. Gen orders records and the
// snapshot: a record at or below the snapshot's gen is already in it.
type journalRecord struct {
	Gen      uint64            `json:"gen"`
	Networks []json.RawMessage `json:"networks,omitempty"` // all of them, when they changed
	NetsSet  bool              `json:"nets_set,omitempty"` // Networks holds the whole list (possibly empty)
	Set      []json.RawMessage `json:"set,omitempty"`      // endpoints added or changed
	Del      []string          `json:"del,omitempty"`      // endpoints removed
}

// update brings the encoder to nets and eps (as snapshot returns them) and
// returns the journal record of what changed, with gen (nil: nothing did).
func (se *stateEncoder) update(nets []Network, eps []Endpoint, gen uint64) ([]byte, error) {
	return se.apply(changes{all: true, nets: nets, netsDirty: true, set: eps}, gen)
}

// apply brings the encoder up to ch: the whole state (ch.all; then
// endpoints it lacks are removed) or what changed (Core.takeChanges); and
// returns the journal record of what did change, with gen (nil: nothing).
// On error the encoder is emptied, so that the next call must be whole.
func (se *stateEncoder) apply(ch changes, gen uint64) (rec []byte, err error) {
	defer func() {
		if err != nil {
			*se = stateEncoder{}
		}
	}()
	if se.eps == nil && !ch.all {
		return nil, errors.New("core: the state encoder needs the whole state first")
	}
	r := journalRecord{Gen: gen}
	if ch.netsDirty {
		saved := make([]savedNetwork, 0, len(ch.nets))
		for _, n := range ch.nets {
			saved = append(saved, saveNetwork(n))
		}
		slices.SortFunc(saved, func(a, b savedNetwork) int { return cmp.Compare(a.Tenant+"/"+a.Name, b.Tenant+"/"+b.Name) })
		nj, err := json.Marshal(saved)
		if err != nil {
			return nil, err
		}
		if se.eps == nil || !bytes.Equal(nj, se.nets) {
			r.NetsSet = true
			for _, n := range saved {
				b, _ := json.Marshal(n)
				r.Networks = append(r.Networks, b)
			}
		}
		se.nets = nj
	}
	if se.eps == nil {
		se.eps = map[string]*encodedEndpoint{}
	}
	se.gen++
	for _, e := range ch.set {
		s := saveEndpoint(e)
		enc := se.eps[e.ID]
		if enc == nil || !enc.saved.equal(s) {
			b, err := json.Marshal(s)
			if err != nil {
				return nil, err
			}
			// Kept apart from the endpoint's own slices, which a later
			// change could alter in place.
			s.Names, s.MAC = slices.Clone(s.Names), bytes.Clone(s.MAC)
			enc = &encodedEndpoint{saved: s, json: b}
			se.eps[e.ID] = enc
			r.Set = append(r.Set, b)
			se.sorted = false
		}
		enc.gen = se.gen
	}
	if ch.all {
		for id, enc := range se.eps {
			if enc.gen != se.gen {
				r.Del = append(r.Del, id)
			}
		}
	} else {
		for _, id := range ch.del {
			if se.eps[id] != nil {
				r.Del = append(r.Del, id)
			}
		}
	}
	for _, id := range r.Del {
		delete(se.eps, id)
		se.sorted = false
	}
	slices.Sort(r.Del)
	if !r.NetsSet && len(r.Set) == 0 && len(r.Del) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// snapshot returns the whole state as of the last update, marked gen
// (encodeState's bytes, byte for byte, but for gen).
func (se *stateEncoder) snapshot(gen uint64) []byte {
	if !se.sorted {
		se.list = se.list[:0]
		for _, enc := range se.eps {
			se.list = append(se.list, enc)
		}
		slices.SortFunc(se.list, func(a, b *encodedEndpoint) int { return cmp.Compare(a.saved.ID, b.saved.ID) })
		clear(se.list[len(se.list):cap(se.list)])
		se.sorted = true
	}
	size := len(se.nets) + 64
	for _, e := range se.list {
		size += len(e.json) + 1
	}
	out := make([]byte, 0, size)
	out = fmt.Appendf(out, `{"version":%d,`, stateVersion)
	if gen > 0 {
		out = fmt.Appendf(out, `"gen":%d,`, gen)
	}
	out = append(out, `"networks":`...)
	if se.nets == nil {
		out = append(out, "[]"...)
	}
	out = append(out, se.nets...)
	out = append(out, `,"endpoints":[`...)
	for i, e := range se.list {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, e.json...)
	}
	return append(out, "]}"...)
}

// encode is update then snapshot, without a gen.
func (se *stateEncoder) encode(nets []Network, eps []Endpoint) ([]byte, error) {
	if _, err := se.update(nets, eps, 0); err != nil {
		return nil, err
	}
	return se.snapshot(0), nil
}

// saver is the one goroutine that writes state.json. A caller asks for the
// state as it is now to be on disk and waits; requests that arrive while a
// write is in progress are served by the next write, which holds them all.
type saver struct {
	c    *Core
	mu   sync.Mutex // guards the fields below
	want uint64     // generations asked for
	done uint64     // generation last written
	err  error      // result of the last write
	cond chan struct{}
	wake chan struct{}

	// run's own: the state as last saved, the journal (nil until a
	// snapshot has been written since start, or after it failed), its
	// size and the snapshot's, and the count of writes (the last record's
	// or snapshot's gen).
	enc                   stateEncoder
	journal               *os.File
	journalSize, snapSize int
	gen                   uint64
}

// journalMin is the size under which the journal is never folded into
// state.json; above it, once it outgrows state.json.
const journalMin = 256 << 10

func newSaver(c *Core, gen uint64) *saver {
	return &saver{c: c, cond: make(chan struct{}), wake: make(chan struct{}, 1), gen: gen}
}

// write saves ch (Core.takeChanges; whole the first time): what changed
// since the last write, as one record appended to the journal and synced;
// or, the first time after start, after a failure, or once the journal has
// outgrown it, the whole state as state.json (written atomically), which
// empties the journal.
func (s *saver) write(ch changes) error {
	s.gen++
	rec, err := s.enc.apply(ch, s.gen)
	if err != nil {
		s.journal = closeFile(s.journal)
		return err
	}
	if s.journal != nil && rec == nil {
		return nil // nothing changed
	}
	dir := s.c.cfg.StateDir
	if s.journal != nil && s.journalSize+len(rec) <= max(journalMin, s.snapSize) {
		_, err := s.journal.Write(rec)
		if err == nil {
			err = s.journal.Sync()
		}
		if err == nil {
			s.journalSize += len(rec)
			return nil
		}
		// A partly written record: the snapshot below holds it all, and
		// leaves the journal empty.
		s.journal = closeFile(s.journal)
	}
	if s.journal == nil {
		// Made before the snapshot, whose write syncs the directory:
		// the journal's name is then as durable as the file.
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(journalPath(dir), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		s.journal = f
	}
	b := s.enc.snapshot(s.gen)
	if err := atomicfile.Write(statePath(dir), b, 0o600); err != nil {
		s.journal = closeFile(s.journal)
		return err
	}
	s.snapSize = len(b)
	// Its records are in state.json now (their gens are not above its).
	if err := s.journal.Truncate(0); err != nil {
		s.journal = closeFile(s.journal)
		return nil // saved; the next write makes a snapshot again
	}
	s.journalSize = 0
	return nil
}

func closeFile(f *os.File) *os.File {
	if f != nil {
		_ = f.Close()
	}
	return nil
}

// save waits until the state as it is when save is called is on disk.
func (s *saver) save(ctx context.Context) error {
	s.mu.Lock()
	s.want++
	gen := s.want
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	for {
		s.mu.Lock()
		done, err, cond := s.done, s.err, s.cond
		s.mu.Unlock()
		if done >= gen {
			return err
		}
		select {
		case <-cond:
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting to save the state: %w", ctx.Err())
		}
	}
}

func (s *saver) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		gen := s.want
		s.mu.Unlock()
		// Only what changed since the last write is copied and compared
		// (copying and comparing every endpoint cost a millisecond a save
		// at 1,000); everything when the encoder has nothing yet.
		err := s.write(s.c.takeChanges(s.enc.eps == nil))
		if err != nil {
			err = fmt.Errorf("save state: %w", err)
		}
		s.mu.Lock()
		s.done, s.err = gen, err
		close(s.cond)
		s.cond = make(chan struct{})
		s.mu.Unlock()
	}
}
