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
)

// tableID names a replicated table on the wire.
type tableID uint8

const (
	tableNetworks    tableID = 1
	tableEndpoints   tableID = 2
	tableBlocks      tableID = 3
	tableAttachments tableID = 4
	tableKV          tableID = 5
)

// Table names a replicated table in events and stats.
type Table string

// The tables.
const (
	TableNetworks    Table = "networks"
	TableEndpoints   Table = "endpoints"
	TableBlocks      Table = "blocks"
	TableAttachments Table = "attachments"
	TableKV          Table = "kv"
)

func (t tableID) name() Table {
	switch t {
	case tableNetworks:
		return TableNetworks
	case tableEndpoints:
		return TableEndpoints
	case tableBlocks:
		return TableBlocks
	case tableAttachments:
		return TableAttachments
	case tableKV:
		return TableKV
	}
	return Table(fmt.Sprintf("table-%d", uint8(t)))
}

func (t tableID) known() bool { return t >= tableNetworks && t <= tableKV }

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
	Host    string     // owner; filled in by gossip
}

// Block is one address block claimed by a host for IPAM. Two hosts may
// claim the same block; Blocks.Get returns the earliest claim (lowest
// version, then host name), the same on every host, and the loser is
// expected to release its claim.
type Block struct {
	Prefix  netip.Prefix // the key (its String form)
	Network string
	Host    string // owner; filled in by gossip
}

// Attachment records that a host has a network: endpoint changes for that
// network are sent directly to the hosts attached to it.
type Attachment struct {
	Network string // the key
	Host    string // owner; filled in by gossip
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
	return nil
}

func (b *Block) validate() error {
	if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() {
		return fmt.Errorf("block %s: must be a valid prefix without host bits", b.Prefix)
	}
	if len(b.Network) > maxKeyLen {
		return fmt.Errorf("block %s: network must be at most %d bytes", b.Prefix, maxKeyLen)
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
	return appendAddr(b, e.VTEP)
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
	if err := r.done(); err != nil {
		return Endpoint{}, err
	}
	if err := e.validate(); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %w", errBadValue, err)
	}
	return e, nil
}

func encodeBlock(bl *Block) []byte {
	b := appendPrefix(nil, bl.Prefix)
	return appendStr(b, bl.Network)
}

func decodeBlock(b []byte) (Block, error) {
	r := reader{b: b}
	var bl Block
	bl.Prefix = r.prefix()
	bl.Network = r.str(maxKeyLen)
	if err := r.done(); err != nil {
		return Block{}, err
	}
	if err := bl.validate(); err != nil {
		return Block{}, fmt.Errorf("%w: %w", errBadValue, err)
	}
	return bl, nil
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
	case tableBlocks:
		bl, err := decodeBlock(e.value)
		if err != nil {
			return err
		}
		key = bl.Prefix.String()
	case tableKV:
		if e.key == "" || len(e.key) > maxKeyLen {
			return fmt.Errorf("kv: %w", errKey)
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
