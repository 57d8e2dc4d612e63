package gossip

// Wire format, version 1. Every message memberlist carries for us (direct
// sends, and the push/pull state) has the same shape, so one decoder guards
// every input:
//
//	version  u8      wireVersion
//	type     u8      msgUpdate | msgState | msgSyncReq | msgSyncResp
//	sender   str     name of the host that encoded the message
//	networks uvarint count, then count × str; only in msgSyncReq and
//	                 msgSyncResp: the networks synced
//	owners   uvarint count, then count × str (dictionary, so a full state
//	                 names each host once, not once per entry)
//	entries  uvarint count, then count × entry
//	entry:   table u8, flags u8 (bit 0: tombstone), owner uvarint (index
//	         into owners), key str, version uvarint, value bytes (for an
//	         endpoint tombstone: its network as a str; for other
//	         tombstones: empty)
//
// str is a uvarint header h then the string: h>>1 is the string's length;
// if h&1 is set the string is lower-case hex (Docker's 64-character IDs)
// and is carried as h>>1/2 raw bytes, halving the size of IDs. Varints
// must be minimal and hex strings must use the hex form, so every message
// has exactly one encoding. Every length and count is checked
// against both a fixed maximum and the bytes remaining before anything is
// allocated, so a hostile length cannot make the decoder allocate much more
// than the message size. Values are opaque here; tables.go decodes them.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	wireVersion = 1

	msgUpdate   = 1 // changes sent by their owner; every entry's owner must be the sender
	msgState    = 2 // the global tables (push/pull); entries of any owner
	msgSyncReq  = 3 // some networks' endpoints, of any owner; answer with ours
	msgSyncResp = 4 // the answer to msgSyncReq

	flagTombstone = 1 << 0

	maxNameLen  = 128  // host names
	maxKeyLen   = 256  // entry keys
	maxValueLen = 4096 // encoded values
	// minEntryLen is the smallest encoded entry: table, flags, owner index,
	// empty key, one-byte version.
	minEntryLen = 5
)

// Decode errors; each one is a drop reason in Stats.
var (
	errTruncated    = errors.New("truncated")
	errWireVersion  = errors.New("unsupported wire version")
	errMsgType      = errors.New("unknown message type")
	errTooLong      = errors.New("field too long")
	errTrailing     = errors.New("trailing bytes")
	errBadOwner     = errors.New("owner index out of range")
	errBadFlags     = errors.New("unknown flags")
	errNonCanonical = errors.New("non-canonical encoding")
)

// entry is one replicated record: the owner's latest word on (table, owner,
// key). value is the table's encoding of the record; nil for tombstones.
type entry struct {
	table   tableID
	owner   string
	key     string
	version uint64
	deleted bool
	value   []byte
}

// message is a decoded wire message.
type message struct {
	typ      byte
	sender   string
	networks []string // msgSyncReq and msgSyncResp only
	entries  []entry
}

// encodeMessage appends the encoding of m to buf.
func encodeMessage(buf []byte, m *message) []byte {
	buf = append(buf, wireVersion, m.typ)
	buf = appendStr(buf, m.sender)
	if isSync(m.typ) {
		buf = binary.AppendUvarint(buf, uint64(len(m.networks)))
		for _, nw := range m.networks {
			buf = appendStr(buf, nw)
		}
	}
	idx := make(map[string]uint64)
	var owners []string
	for i := range m.entries {
		o := m.entries[i].owner
		if _, ok := idx[o]; !ok {
			idx[o] = uint64(len(owners))
			owners = append(owners, o)
		}
	}
	buf = binary.AppendUvarint(buf, uint64(len(owners)))
	for _, o := range owners {
		buf = appendStr(buf, o)
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.entries)))
	for i := range m.entries {
		e := &m.entries[i]
		var flags byte
		if e.deleted {
			flags |= flagTombstone
		}
		buf = append(buf, byte(e.table), flags)
		buf = binary.AppendUvarint(buf, idx[e.owner])
		buf = appendStr(buf, e.key)
		buf = binary.AppendUvarint(buf, e.version)
		buf = appendBytes(buf, e.value)
	}
	return buf
}

// decodeMessage parses b. It never panics and copies what it keeps, so b
// may be reused by the caller. Entries of unknown tables are returned; the
// store drops them and counts them.
func decodeMessage(b []byte) (*message, error) {
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return nil, fmt.Errorf("version %d: %w", v, errWireVersion)
	}
	m := &message{typ: r.byte()}
	if r.err == nil && (m.typ < msgUpdate || m.typ > msgSyncResp) {
		return nil, fmt.Errorf("type %d: %w", m.typ, errMsgType)
	}
	m.sender = r.str(maxNameLen)
	if isSync(m.typ) {
		k := r.count(1)
		m.networks = make([]string, 0, k)
		for i := 0; i < k && r.err == nil; i++ {
			m.networks = append(m.networks, r.str(maxKeyLen))
		}
	}
	nOwners := r.count(1)
	owners := make([]string, 0, nOwners)
	for i := 0; i < nOwners && r.err == nil; i++ {
		owners = append(owners, r.str(maxNameLen))
	}
	nEntries := r.count(minEntryLen)
	m.entries = make([]entry, 0, nEntries)
	for i := 0; i < nEntries && r.err == nil; i++ {
		var e entry
		e.table = tableID(r.byte())
		flags := r.byte()
		oi := r.uvarint()
		e.key = r.str(maxKeyLen)
		e.version = r.uvarint()
		if r.err != nil {
			break
		}
		if flags&^flagTombstone != 0 {
			return nil, fmt.Errorf("entry %d: flags %#x: %w", i, flags, errBadFlags)
		}
		if oi >= uint64(len(owners)) {
			return nil, fmt.Errorf("entry %d: owner %d of %d: %w", i, oi, len(owners), errBadOwner)
		}
		e.owner = owners[oi]
		e.deleted = flags&flagTombstone != 0
		e.value = r.bytes(maxValueLen)
		m.entries = append(m.entries, e)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes: %w", len(r.b), errTrailing)
	}
	return m, nil
}

func isSync(typ byte) bool { return typ == msgSyncReq || typ == msgSyncResp }

func appendStr(buf []byte, s string) []byte {
	if isHex(s) {
		buf = binary.AppendUvarint(buf, uint64(len(s))<<1|1)
		buf, _ = hex.AppendDecode(buf, []byte(s)) // cannot fail: isHex
		return buf
	}
	buf = binary.AppendUvarint(buf, uint64(len(s))<<1)
	return append(buf, s...)
}

// isHex reports whether s is a non-empty, even-length, lower-case hex
// string.
func isHex(s string) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func appendBytes(buf, b []byte) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	return append(buf, b...)
}

// reader consumes a byte slice; after the first error every read returns
// the zero value, so callers check err once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail(errTruncated)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errTruncated) // n < 0 is an overflow, which is as bad
		return 0
	}
	if n > 1 && r.b[n-1] == 0 {
		// An overlong encoding: refuse it, so that every value has exactly
		// one encoding.
		r.fail(errNonCanonical)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of items that each take at least minLen bytes.
func (r *reader) count(minLen int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/minLen) {
		r.fail(errTruncated)
		return 0
	}
	return int(n)
}

// bytes reads a length-prefixed byte string of at most max bytes, copied.
func (r *reader) bytes(max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(max) {
		r.fail(errTooLong)
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return nil
	}
	v := make([]byte, n)
	copy(v, r.b)
	r.b = r.b[n:]
	return v
}

func (r *reader) str(max int) string {
	h := r.uvarint()
	if r.err != nil {
		return ""
	}
	n, packed := h>>1, h&1 == 1
	if n > uint64(max) {
		r.fail(errTooLong)
		return ""
	}
	if !packed {
		if n > uint64(len(r.b)) {
			r.fail(errTruncated)
			return ""
		}
		s := string(r.b[:n])
		r.b = r.b[n:]
		if isHex(s) {
			r.fail(errNonCanonical)
			return ""
		}
		return s
	}
	if n == 0 || n%2 != 0 {
		r.fail(errNonCanonical)
		return ""
	}
	if n/2 > uint64(len(r.b)) {
		r.fail(errTruncated)
		return ""
	}
	s := hex.EncodeToString(r.b[:n/2])
	r.b = r.b[n/2:]
	return s
}
