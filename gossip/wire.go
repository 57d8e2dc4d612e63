package gossip

// Wire format, version 2. Every message we send, whatever carries it (a
// sealed frame on our transport, see transport.go; the push/pull state of a
// join through memberlist), has the same shape, so one decoder guards every
// input:
//
//	version  u8      wireVersion (2)
//	type     u8      msgUpdate ... msgJoinAnswer
//	flags    u8      bit 0: done (msgEntries: the complete answer for its
//	                 scopes); bit 1: live only (msgEntries with wants: the
//	                 asker holds nothing of the owners it wants, so send no
//	                 tombstones); bit 2: admitted (msgJoinAnswer only,
//	                 which may carry no other bit; msgJoinAsk carries
//	                 none); no other bit may be set
//	sender   str     name of the host that encoded the message
//	owners   uvarint count, then count × str: a dictionary, so a message
//	                 names each host once
//	scopes   uvarint count, then count × str: the scopes ("" for the global
//	                 tables, else a network) the message is about
//	digests  uvarint count, then count × (uvarint scope index, uvarint owner
//	                 (0: the whole scope, i+1: owners[i]), u8 bucket (0:
//	                 all the owner's entries, b+1: those in bucket b of
//	                 numBuckets, by key), uvarint count, u64 sum,
//	                 little-endian, uvarint as-of version)
//	wants    uvarint count, then count × (uvarint scope index, uvarint owner
//	                 index): entries the receiver is asked to send back
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
// has exactly one encoding. Every length and count is checked against both
// a fixed maximum and the bytes remaining before anything is allocated, so
// a hostile length cannot make the decoder allocate much more than the
// message size. Values are opaque here; tables.go decodes them.
//
// Version 1 (before issue 12) had no flags, digests or wants, and rode
// memberlist's user messages. The versions do not mix: a message of the
// other version is dropped and counted as wire-version, and a host sends
// table traffic only to hosts whose metadata says they speak version 2.
// A ring with hosts of both versions keeps one membership but two sets of
// tables; upgrade every host.

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	wireVersion = 2

	msgUpdate  = 1 // changes sent by their owner, with its digest of each scope touched
	msgState   = 2 // the global tables at a join (memberlist's push/pull); entries of any owner
	msgSyncReq = 3 // "send me every live entry of these scopes" (a first sync)
	msgDigest  = 4 // root digests of some scopes: answer where they differ
	msgOwners  = 5 // per-owner digests of some scopes: answer with entries and wants
	msgEntries = 6 // entries of the listed scopes, of any owner; wants ask for more
	// msgJoinAsk asks a seed whether this host may join now; msgJoinAnswer
	// says yes (flagAdmitted) or later (admit.go). Both carry nothing else.
	msgJoinAsk    = 7
	msgJoinAnswer = 8
	maxMsgType    = msgJoinAnswer

	flagDone      = 1 << 0 // message: the complete answer for its scopes
	flagLiveOnly  = 1 << 1 // message: answer the wants without tombstones
	flagAdmitted  = 1 << 2 // msgJoinAnswer: join now
	flagTombstone = 1 << 0 // entry

	maxNameLen    = 128      // host names
	maxKeyLen     = 256      // entry keys and scopes
	maxValueLen   = 16 << 10 // encoded values (an endpoint with 32 names of 253 bytes fits)
	maxKVValueLen = 4096     // kv values
	maxFrameLen   = 4 << 20  // one message on a stream
	minEntryLen   = 5        // table, flags, owner index, empty key, one-byte version
	minDigestLen  = 1 + 1 + 1 + 1 + 8 + 1
)

// Decode errors; each one is a drop reason in Stats.
var (
	errTruncated    = errors.New("truncated")
	errWireVersion  = errors.New("unsupported wire version")
	errMsgType      = errors.New("unknown message type")
	errTooLong      = errors.New("field too long")
	errTrailing     = errors.New("trailing bytes")
	errBadOwner     = errors.New("owner index out of range")
	errBadScope     = errors.New("scope index out of range")
	errBadFlags     = errors.New("unknown flags")
	errNonCanonical = errors.New("non-canonical encoding")
)

// entry is one replicated record: the owner's latest word on (table, owner,
// key). value is the table's encoding of the record; for tombstones see
// tombstoneValue.
type entry struct {
	table   tableID
	owner   string
	key     string
	version uint64
	deleted bool
	value   []byte
}

// digest is a tally of live entries: of one owner in a scope (in one
// bucket of its entries, if bucket > 0: bucket-1 is the bucket), or (owner
// "") of the whole scope. asOf is the sender's clock when it took the
// digest (trails only; else 0).
type digest struct {
	scope  string
	owner  string
	bucket uint8
	count  uint64
	sum    uint64
	asOf   uint64
}

// want asks for one owner's entries in one scope.
type want struct {
	scope string
	owner string
}

// message is a decoded wire message.
type message struct {
	typ     byte
	flags   byte
	sender  string
	scopes  []string
	digests []digest
	wants   []want
	entries []entry
}

// encodeMessage appends the encoding of m to buf. A scope named by a
// digest or want but missing from m.scopes is added to it.
func encodeMessage(buf []byte, m *message) []byte {
	oidx := make(map[string]uint64)
	var owners []string
	addOwner := func(o string) {
		if _, ok := oidx[o]; !ok {
			oidx[o] = uint64(len(owners))
			owners = append(owners, o)
		}
	}
	sidx := make(map[string]uint64, len(m.scopes))
	for i, s := range m.scopes {
		if _, ok := sidx[s]; !ok {
			sidx[s] = uint64(i)
		}
	}
	addScope := func(s string) {
		if _, ok := sidx[s]; !ok {
			sidx[s] = uint64(len(m.scopes))
			m.scopes = append(m.scopes, s)
		}
	}
	for _, d := range m.digests {
		addScope(d.scope)
		if d.owner != "" {
			addOwner(d.owner)
		}
	}
	for _, w := range m.wants {
		addScope(w.scope)
		addOwner(w.owner)
	}
	for i := range m.entries {
		addOwner(m.entries[i].owner)
	}

	buf = append(buf, wireVersion, m.typ, m.flags)
	buf = appendStr(buf, m.sender)
	buf = binary.AppendUvarint(buf, uint64(len(owners)))
	for _, o := range owners {
		buf = appendStr(buf, o)
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.scopes)))
	for _, s := range m.scopes {
		buf = appendStr(buf, s)
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.digests)))
	for _, d := range m.digests {
		buf = binary.AppendUvarint(buf, sidx[d.scope])
		var o uint64
		if d.owner != "" {
			o = oidx[d.owner] + 1
		}
		buf = binary.AppendUvarint(buf, o)
		buf = append(buf, d.bucket)
		buf = binary.AppendUvarint(buf, d.count)
		buf = binary.LittleEndian.AppendUint64(buf, d.sum)
		buf = binary.AppendUvarint(buf, d.asOf)
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.wants)))
	for _, w := range m.wants {
		buf = binary.AppendUvarint(buf, sidx[w.scope])
		buf = binary.AppendUvarint(buf, oidx[w.owner])
	}
	buf = binary.AppendUvarint(buf, uint64(len(m.entries)))
	for i := range m.entries {
		buf = appendEntry(buf, &m.entries[i], oidx[m.entries[i].owner])
	}
	return buf
}

func appendEntry(buf []byte, e *entry, owner uint64) []byte {
	var flags byte
	if e.deleted {
		flags |= flagTombstone
	}
	buf = append(buf, byte(e.table), flags)
	buf = binary.AppendUvarint(buf, owner)
	buf = appendStr(buf, e.key)
	buf = binary.AppendUvarint(buf, e.version)
	return appendBytes(buf, e.value)
}

// decodeMessage parses b. It never panics and copies what it keeps, so b
// may be reused by the caller. Entries of unknown tables are returned; the
// node drops them and counts them.
func decodeMessage(b []byte) (*message, error) {
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return nil, fmt.Errorf("version %d: %w", v, errWireVersion)
	}
	m := &message{typ: r.byte(), flags: r.byte()}
	if r.err == nil && (m.typ < msgUpdate || m.typ > maxMsgType) {
		return nil, fmt.Errorf("type %d: %w", m.typ, errMsgType)
	}
	allowed := byte(flagDone | flagLiveOnly)
	switch m.typ {
	case msgJoinAsk:
		allowed = 0
	case msgJoinAnswer:
		allowed = flagAdmitted
	}
	if r.err == nil && m.flags&^allowed != 0 {
		return nil, fmt.Errorf("message flags %#x: %w", m.flags, errBadFlags)
	}
	m.sender = r.str(maxNameLen)
	nOwners := r.count(1)
	owners := make([]string, 0, nOwners)
	for i := 0; i < nOwners && r.err == nil; i++ {
		owners = append(owners, r.str(maxNameLen))
	}
	if k := r.count(1); k > 0 {
		m.scopes = make([]string, 0, k)
	}
	for i := 0; i < cap(m.scopes) && r.err == nil; i++ {
		m.scopes = append(m.scopes, r.str(maxKeyLen))
	}
	scope := func(what string, i int) (string, error) {
		si := r.uvarint()
		if r.err == nil && si >= uint64(len(m.scopes)) {
			return "", fmt.Errorf("%s %d: scope %d of %d: %w", what, i, si, len(m.scopes), errBadScope)
		}
		if r.err != nil {
			return "", r.err
		}
		return m.scopes[si], nil
	}
	if k := r.count(minDigestLen); k > 0 {
		m.digests = make([]digest, 0, k)
		for i := 0; i < k && r.err == nil; i++ {
			var d digest
			var err error
			if d.scope, err = scope("digest", i); err != nil {
				return nil, err
			}
			oi := r.uvarint()
			if r.err == nil && oi > uint64(len(owners)) {
				return nil, fmt.Errorf("digest %d: owner %d of %d: %w", i, oi, len(owners), errBadOwner)
			}
			if oi > 0 {
				d.owner = owners[oi-1]
			}
			if d.bucket = r.byte(); r.err == nil && int(d.bucket) > numBuckets {
				return nil, fmt.Errorf("digest %d: bucket %d of %d: %w", i, d.bucket, numBuckets, errBadScope)
			}
			d.count = r.uvarint()
			d.sum = r.u64()
			d.asOf = r.uvarint()
			m.digests = append(m.digests, d)
		}
	}
	if k := r.count(2); k > 0 {
		m.wants = make([]want, 0, k)
		for i := 0; i < k && r.err == nil; i++ {
			var w want
			var err error
			if w.scope, err = scope("want", i); err != nil {
				return nil, err
			}
			oi := r.uvarint()
			if r.err == nil && oi >= uint64(len(owners)) {
				return nil, fmt.Errorf("want %d: owner %d of %d: %w", i, oi, len(owners), errBadOwner)
			}
			if r.err == nil {
				w.owner = owners[oi]
			}
			m.wants = append(m.wants, w)
		}
	}
	nEntries := r.count(minEntryLen)
	if nEntries > 0 {
		m.entries = make([]entry, 0, nEntries)
	}
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
	if (m.typ == msgJoinAsk || m.typ == msgJoinAnswer) && len(owners)+len(m.scopes)+len(m.digests)+len(m.wants)+len(m.entries) > 0 {
		return nil, fmt.Errorf("type %d with a body: %w", m.typ, errMsgType)
	}
	return m, nil
}

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

func (r *reader) u64() uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail(errTruncated)
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
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
