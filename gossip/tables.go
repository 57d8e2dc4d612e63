package gossip

// The replicated tables and the encodings of their values. Each value
// encodes to a compact byte string (wire.go carries it opaquely); decoding
// validates every field and re-derives the entry key, so an entry whose key
// does not match its value is dropped rather than stored.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// tableID names a replicated table on the wire.
type tableID uint8

const (
	tableNetworks  tableID = 1
	tableEndpoints tableID = 2
	// 3 was the IPAM blocks table, unused since ipam keeps its ownership in
	// kv. Never reuse it: an old peer may still send it (dropped and
	// counted as unknown-table).
	tableAttachments tableID = 4
	tableKV          tableID = 5
	numTableIDs              = 6
)

// knownTables are the tables this version keeps.
var knownTables = []tableID{tableNetworks, tableEndpoints, tableAttachments, tableKV}

// Table names a replicated table in events and stats.
type Table string

// The tables.
const (
	TableNetworks    Table = "networks"
	TableEndpoints   Table = "endpoints"
	TableAttachments Table = "attachments"
	TableKV          Table = "kv"
)

func (t tableID) name() Table {
	switch t {
	case tableNetworks:
		return TableNetworks
	case tableEndpoints:
		return TableEndpoints
	case tableAttachments:
		return TableAttachments
	case tableKV:
		return TableKV
	}
	return Table(fmt.Sprintf("table-%d", uint8(t)))
}

func (t tableID) known() bool {
	return t == tableNetworks || t == tableEndpoints || t == tableAttachments || t == tableKV
}

// Network is one overlay network, owned by the host that created it.
type Network struct {
	ID     string // Docker network ID; the key
	Name   string
	Tenant string
	VNI    uint32
	Subnet netip.Prefix
	Host   string // owner; filled in by gossip
}

// Endpoint is one container interface, owned by the host it runs on.
type Endpoint struct {
	ID      string // Docker endpoint ID; the key
	Network string // Network.ID
	MAC     net.HardwareAddr
	IP      netip.Addr
	VTEP    netip.Addr // the owner's underlay address; set by gossip on Put
	// Names are the DNS names the endpoint answers to cluster-wide: its
	// container's name and network aliases. Each is 1-253 bytes of
	// dot-separated labels of 1-63 letters, digits, '-' and '_'; at most
	// MaxNames, no two the same (ignoring case).
	Names []string
	Host  string // owner; filled in by gossip
	// DownSince is when gossip reported the owner down; zero while it is
	// up. Set only on reads that include hidden entries (and on the hidden
	// deletes of events).
	DownSince time.Time
	// Version is the Lamport version of the owner's write; set by gossip
	// on reads (Get, List, ListNetwork, ListRemote).
	Version uint64
}

// MaxNames is the most DNS names one endpoint may have.
const MaxNames = 32

// Attachment records that a host has a network: endpoint changes for that
// network are sent directly to the hosts attached to it.
type Attachment struct {
	Network string // the key
	Host    string // owner; filled in by gossip
	// DownSince is when gossip reported the host down; zero while it is up.
	DownSince time.Time
}

// tombstoneValue is what a tombstone of an entry with value v keeps.
func tombstoneValue(t tableID, v []byte) []byte {
	if t == tableEndpoints {
		return appendStr(nil, endpointNetwork(v))
	}
	return nil
}

var (
	errBadValue = errors.New("malformed value")
	errKey      = errors.New("key does not match value")
	errTable    = errors.New("unknown table")
)

func checkID(field, s string) error {
	if s == "" || len(s) > maxKeyLen {
		return fmt.Errorf("%s %q: must be 1-%d bytes", field, s, maxKeyLen)
	}
	return nil
}

func (n *Network) validate() error {
	if err := checkID("ID", n.ID); err != nil {
		return err
	}
	if len(n.Name) > maxKeyLen || len(n.Tenant) > maxKeyLen {
		return fmt.Errorf("network %q: name and tenant must be at most %d bytes", n.ID, maxKeyLen)
	}
	if n.Subnet.IsValid() && n.Subnet != n.Subnet.Masked() {
		return fmt.Errorf("network %q: subnet %s: host bits set", n.ID, n.Subnet)
	}
	return nil
}

func (e *Endpoint) validate() error {
	if err := checkID("ID", e.ID); err != nil {
		return err
	}
	if err := checkID("Network", e.Network); err != nil {
		return fmt.Errorf("endpoint %q: %w", e.ID, err)
	}
	if len(e.MAC) != 0 && len(e.MAC) != 6 {
		return fmt.Errorf("endpoint %q: MAC %s: must be 6 bytes", e.ID, e.MAC)
	}
	if len(e.Names) > MaxNames {
		return fmt.Errorf("endpoint %q: %d names: must be at most %d", e.ID, len(e.Names), MaxNames)
	}
	for i, name := range e.Names {
		if err := checkDNSName(name); err != nil {
			return fmt.Errorf("endpoint %q: name %q: %w", e.ID, name, err)
		}
		for _, prev := range e.Names[:i] {
			if strings.EqualFold(prev, name) {
				return fmt.Errorf("endpoint %q: name %q: given twice", e.ID, name)
			}
		}
	}
	return nil
}

// checkDNSName checks one endpoint name: 1-253 bytes, dot-separated labels
// of 1-63 letters, digits, '-' and '_'.
func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("must be 1-253 bytes, is %d", len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q: must be 1-63 bytes", label)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q: byte %q: must be a letter, digit, '-' or '_'", label, c)
			}
		}
	}
	return nil
}

func appendAddr(buf []byte, a netip.Addr) []byte {
	switch {
	case !a.IsValid():
		return append(buf, 0)
	case a.Is4():
		b := a.As4()
		return append(append(buf, 4), b[:]...)
	default:
		b := a.As16()
		return append(append(buf, 16), b[:]...) // zones are not carried
	}
}

func (r *reader) addr() netip.Addr {
	switch n := r.byte(); {
	case r.err != nil || n == 0:
		return netip.Addr{}
	case n == 4 && len(r.b) >= 4:
		a := netip.AddrFrom4([4]byte(r.b[:4]))
		r.b = r.b[4:]
		return a
	case n == 16 && len(r.b) >= 16:
		a := netip.AddrFrom16([16]byte(r.b[:16]))
		r.b = r.b[16:]
		return a
	default:
		r.fail(errBadValue)
		return netip.Addr{}
	}
}

func appendPrefix(buf []byte, p netip.Prefix) []byte {
	buf = appendAddr(buf, p.Addr())
	if p.IsValid() {
		buf = append(buf, byte(p.Bits()))
	}
	return buf
}

func (r *reader) prefix() netip.Prefix {
	a := r.addr()
	if r.err != nil || !a.IsValid() {
		return netip.Prefix{}
	}
	bits := int(r.byte())
	if r.err != nil {
		return netip.Prefix{}
	}
	p := netip.PrefixFrom(a, bits)
	if !p.IsValid() {
		r.fail(errBadValue)
	}
	return p
}

// done checks that r consumed its input without error.
func (r *reader) done() error {
	if r.err != nil {
		return fmt.Errorf("%w: %w", errBadValue, r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errBadValue, len(r.b))
	}
	return nil
}

func encodeNetwork(n *Network) []byte {
	b := appendStr(nil, n.ID)
	b = appendStr(b, n.Name)
	b = appendStr(b, n.Tenant)
	b = binary.AppendUvarint(b, uint64(n.VNI))
	return appendPrefix(b, n.Subnet)
}

func decodeNetwork(b []byte) (Network, error) {
	r := reader{b: b}
	var n Network
	n.ID = r.str(maxKeyLen)
	n.Name = r.str(maxKeyLen)
	n.Tenant = r.str(maxKeyLen)
	vni := r.uvarint()
	n.Subnet = r.prefix()
	if err := r.done(); err != nil {
		return Network{}, err
	}
	if vni > 1<<24-1 {
		return Network{}, fmt.Errorf("%w: VNI %d above 24 bits", errBadValue, vni)
	}
	n.VNI = uint32(vni)
	if err := n.validate(); err != nil {
		return Network{}, fmt.Errorf("%w: %w", errBadValue, err)
	}
	return n, nil
}

// encodeEndpoint leaves out the ID: it is the entry's key.
func encodeEndpoint(e *Endpoint) []byte {
	b := appendStr(nil, e.Network)
	b = appendBytes(b, e.MAC)
	b = appendAddr(b, e.IP)
	b = appendAddr(b, e.VTEP)
	b = binary.AppendUvarint(b, uint64(len(e.Names)))
	for _, name := range e.Names {
		b = appendStr(b, name)
	}
	return b
}

// claimOf reads an endpoint value's MAC and IP in place, skipping its
// network, without copying or allocating: what claimsOf compares. ok is
// false for a value that does not decode so far (stored values were
// validated when they arrived).
func claimOf(b []byte) (mac []byte, ip netip.Addr, ok bool) {
	r := reader{b: b}
	n := r.uvarint() // the network, as appendStr wrote it
	size := n >> 1
	if n&1 == 1 {
		size /= 2 // hex, stored decoded
	}
	if r.err != nil || size > uint64(len(r.b)) {
		return nil, netip.Addr{}, false
	}
	r.b = r.b[size:]
	n = r.uvarint() // the MAC, read in place (reader.bytes copies)
	if r.err != nil || n > 6 || n > uint64(len(r.b)) {
		return nil, netip.Addr{}, false
	}
	mac, r.b = r.b[:n:n], r.b[n:]
	ip = r.addr()
	return mac, ip, r.err == nil
}

func decodeEndpoint(key string, b []byte) (Endpoint, error) {
	r := reader{b: b}
	e := Endpoint{ID: key}
	e.Network = r.str(maxKeyLen)
	if mac := r.bytes(6); len(mac) > 0 {
		e.MAC = net.HardwareAddr(mac)
	}
	e.IP = r.addr()
	e.VTEP = r.addr()
	if k := r.count(1); k > MaxNames {
		r.fail(errTooLong)
	} else if k > 0 {
		e.Names = make([]string, 0, k)
		for range k {
			e.Names = append(e.Names, r.str(253))
		}
	}
	if err := r.done(); err != nil {
		return Endpoint{}, err
	}
	if err := e.validate(); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %w", errBadValue, err)
	}
	return e, nil
}

// checkValue validates an entry received from another host: a known table,
// a value that decodes, and a key derived from that value. It returns the
// endpoint's network for endpoint entries (used to scope sends).
func checkValue(e *entry) error {
	if !e.table.known() {
		return fmt.Errorf("table %d: %w", e.table, errTable)
	}
	if e.deleted {
		if e.key == "" {
			return fmt.Errorf("tombstone: %w", errKey)
		}
		if e.table == tableEndpoints {
			// An endpoint's tombstone keeps its network, so that it can
			// be scoped like the endpoint.
			r := reader{b: e.value}
			nw := r.str(maxKeyLen)
			if err := r.done(); err != nil || nw == "" {
				return fmt.Errorf("endpoint tombstone %q: %w", e.key, errBadValue)
			}
			return nil
		}
		if len(e.value) != 0 {
			return fmt.Errorf("tombstone %q carries %d bytes: %w", e.key, len(e.value), errBadValue)
		}
		return nil
	}
	var key string
	switch e.table {
	case tableNetworks:
		n, err := decodeNetwork(e.value)
		if err != nil {
			return err
		}
		key = n.ID
	case tableEndpoints:
		if _, err := decodeEndpoint(e.key, e.value); err != nil {
			return err
		}
		key = e.key
	case tableKV:
		if e.key == "" || len(e.key) > maxKeyLen {
			return fmt.Errorf("kv: %w", errKey)
		}
		if len(e.value) > maxKVValueLen {
			return fmt.Errorf("%w: kv value of %d bytes", errBadValue, len(e.value))
		}
		key = e.key
	case tableAttachments:
		if len(e.value) != 0 {
			return fmt.Errorf("%w: attachment carries %d bytes", errBadValue, len(e.value))
		}
		if e.key == "" {
			return fmt.Errorf("attachment: %w", errKey)
		}
		key = e.key
	}
	if key != e.key {
		return fmt.Errorf("key %q, value says %q: %w", e.key, key, errKey)
	}
	return nil
}

// endpointNetwork returns the network of an encoded endpoint, or of an
// endpoint's tombstone, without a full decode (the network is the first
// field of both).
func endpointNetwork(v []byte) string {
	r := reader{b: v}
	return r.str(maxKeyLen)
}
