package ipam

// The allocator is the pure, single-host half of IPAM: given the parts of
// one pool this host owns, it hands out and takes back addresses. It knows
// nothing of other hosts; blocks.go decides what is ours.
//
// A pool's allocation range is cut into aligned blocks (default /26 or
// /122), numbered from 0 in address order: the unit of the genesis split
// and of bookkeeping. Ownership is finer: any aligned part of a block, down
// to a single address, can be owned, because an owner short of whole empty
// blocks splits an empty part off one it uses and hands that over. So each
// block this host touches has an owned bitmap beside its used bitmap. Only
// such blocks get bitmaps: an IPv6 /64 pool costs as much as the few blocks
// actually in use.

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
)

// maxBlocks caps the number of blocks in a pool; the space beyond it is never
// used (only reachable with huge IPv6 pools).
const maxBlocks = 1 << 62

// geometry maps a pool's allocation range onto numbered blocks.
type geometry struct {
	rng   netip.Prefix // allocation range, masked
	bits  int          // block prefix length, >= rng.Bits()
	shift int          // host bits of a block, <= 16
	count uint64       // number of blocks, <= maxBlocks
}

func newGeometry(rng netip.Prefix, blockBits int) geometry {
	// A block never has more than 16 host bits, whatever the caller asked.
	b := max(blockBits, rng.Bits(), rng.Addr().BitLen()-16)
	n := b - rng.Bits()
	count := uint64(maxBlocks)
	if n < 62 {
		count = 1 << n
	}
	return geometry{rng: rng, bits: b, shift: rng.Addr().BitLen() - b, count: count}
}

// size is the number of addresses in a block.
func (g geometry) size() int { return 1 << g.shift }

func (g geometry) block(i uint64) netip.Prefix {
	start := toU128(g.rng.Addr()).add(u128{lo: i}.shl(g.shift))
	return netip.PrefixFrom(fromU128(start, g.rng.Addr().Is6()), g.bits)
}

// index returns the block holding a and a's offset in it.
func (g geometry) index(a netip.Addr) (i uint64, off int, ok bool) {
	if !g.rng.Contains(a) {
		return 0, 0, false
	}
	d := toU128(a).sub(toU128(g.rng.Addr()))
	q := d.shr(g.shift)
	if q.hi != 0 || q.lo >= g.count {
		return 0, 0, false
	}
	return q.lo, int(d.lo & uint64(g.size()-1)), true
}

// blockIndex parses a block prefix of this geometry.
func (g geometry) blockIndex(p netip.Prefix) (uint64, bool) {
	if p.Bits() != g.bits {
		return 0, false
	}
	i, off, ok := g.index(p.Addr())
	return i, ok && off == 0
}

// partOf maps p, an aligned part of one block (the block itself down to a
// single address), to the block and the offsets it covers.
func (g geometry) partOf(p netip.Prefix) (i uint64, off, n int, ok bool) {
	if !p.IsValid() || p.Addr().Is4() != g.rng.Addr().Is4() || p.Addr().Zone() != "" || p.Masked() != p || p.Bits() < g.bits {
		return 0, 0, 0, false
	}
	i, off, ok = g.index(p.Addr())
	if !ok {
		return 0, 0, 0, false
	}
	return i, off, 1 << (p.Addr().BitLen() - p.Bits()), true
}

// addrAt is the address at offset off of block i.
func (g geometry) addrAt(i uint64, off int) netip.Addr {
	base := g.block(i).Addr()
	return fromU128(toU128(base).add(u128{lo: uint64(off)}), base.Is6())
}

// prefixAt is the aligned part of n addresses (a power of two) at off in
// block i.
func (g geometry) prefixAt(i uint64, off, n int) netip.Prefix {
	return netip.PrefixFrom(g.addrAt(i, off), g.rng.Addr().BitLen()-bits.TrailingZeros(uint(n)))
}

// blockAlloc is the state of one block this host owns part of, or still
// has addresses allocated in.
type blockAlloc struct {
	owned  []uint64 // bit set: this host owns the address
	used   []uint64 // bit set: allocated to a container (owned, or lost to a conflict while allocated)
	nOwned int      // owned count
	n      int      // allocated count
	avail  int      // owned, not allocated, not reserved
}

func getBit(b []uint64, k int) bool { return b[k/64]&(1<<(k%64)) != 0 }
func setBit(b []uint64, k int)      { b[k/64] |= 1 << (k % 64) }
func clearBit(b []uint64, k int)    { b[k/64] &^= 1 << (k % 64) }

// countRange counts the bits set in the aligned run [off, off+n), n a power
// of two: inside one word below 64, whole words from 64.
func countRange(b []uint64, off, n int) int {
	if n >= 64 {
		c := 0
		for w := off / 64; w < (off+n)/64; w++ {
			c += bits.OnesCount64(b[w])
		}
		return c
	}
	mask := (uint64(1)<<n - 1) << (off % 64)
	return bits.OnesCount64(b[off/64] & mask)
}

// Allocator hands out addresses from the parts of one pool that this host
// owns. Not safe for concurrent use; IPAM serialises calls per pool.
type Allocator struct {
	geo      geometry
	reserved map[netip.Addr]struct{}
	blocks   map[uint64]*blockAlloc
	order    []uint64 // indexes of blocks with a record, ascending
}

// NewAllocator returns an allocator over rng with blocks of blockBits (made
// longer if needed: a block holds at most 65536 addresses, and never more
// than rng) and the given reserved addresses, owning nothing yet.
func NewAllocator(rng netip.Prefix, blockBits int, reserved []netip.Addr) *Allocator {
	a := &Allocator{geo: newGeometry(rng.Masked(), blockBits), reserved: map[netip.Addr]struct{}{}, blocks: map[uint64]*blockAlloc{}}
	for _, r := range reserved {
		a.reserved[r] = struct{}{}
	}
	return a
}

// Blocks returns the number of blocks in the pool (capped at 2^62).
func (a *Allocator) Blocks() uint64 { return a.geo.count }

// Block returns block i's prefix.
func (a *Allocator) Block(i uint64) netip.Prefix { return a.geo.block(i) }

// BlockOf returns the index of the block holding addr.
func (a *Allocator) BlockOf(addr netip.Addr) (uint64, bool) {
	i, _, ok := a.geo.index(addr)
	return i, ok
}

// Owned returns, in ascending order, the blocks this host owns part of or
// still has addresses allocated in.
func (a *Allocator) Owned() []uint64 { return slices.Clone(a.order) }

// Owns reports whether this host owns any address of block i.
func (a *Allocator) Owns(i uint64) bool { b := a.blocks[i]; return b != nil && b.nOwned > 0 }

// OwnsAddr reports whether this host owns addr.
func (a *Allocator) OwnsAddr(addr netip.Addr) bool {
	i, off, ok := a.geo.index(addr)
	b := a.blocks[i]
	return ok && b != nil && getBit(b.owned, off)
}

// OwnsPrefix reports whether this host owns every address of p, an aligned
// part of a block.
func (a *Allocator) OwnsPrefix(p netip.Prefix) bool {
	i, off, n, ok := a.geo.partOf(p)
	b := a.blocks[i]
	return ok && b != nil && countRange(b.owned, off, n) == n
}

func (a *Allocator) get(i uint64) *blockAlloc {
	if b := a.blocks[i]; b != nil {
		return b
	}
	words := (a.geo.size() + 63) / 64
	b := &blockAlloc{owned: make([]uint64, words), used: make([]uint64, words)}
	a.blocks[i] = b
	pos, _ := slices.BinarySearch(a.order, i)
	a.order = slices.Insert(a.order, pos, i)
	return b
}

func (a *Allocator) dropIfEmpty(i uint64) {
	if b := a.blocks[i]; b != nil && b.nOwned == 0 && b.n == 0 {
		delete(a.blocks, i)
		pos, _ := slices.BinarySearch(a.order, i)
		a.order = slices.Delete(a.order, pos, pos+1)
	}
}

// reservedIn returns the offsets of reserved addresses in block i.
func (a *Allocator) reservedIn(i uint64) map[int]bool {
	out := map[int]bool{}
	for r := range a.reserved {
		if j, off, ok := a.geo.index(r); ok && j == i {
			out[off] = true
		}
	}
	return out
}

// AddBlock starts allocating from the whole of block i; no-op for the
// addresses already owned.
func (a *Allocator) AddBlock(i uint64) {
	if i < a.geo.count {
		a.AddPrefix(a.geo.block(i))
	}
}

// AddPrefix starts allocating from p, an aligned part of one block; no-op
// for the addresses already owned. It reports false if p is no such part.
func (a *Allocator) AddPrefix(p netip.Prefix) bool {
	i, off, n, ok := a.geo.partOf(p)
	if !ok {
		return false
	}
	b, res := a.get(i), a.reservedIn(i)
	for k := off; k < off+n; k++ {
		if getBit(b.owned, k) {
			continue
		}
		setBit(b.owned, k)
		b.nOwned++
		if !getBit(b.used, k) && !res[k] {
			b.avail++
		}
	}
	return true
}

// RemoveBlock stops allocating from block i. It refuses while any address
// of the block is allocated: only empty parts change owner.
func (a *Allocator) RemoveBlock(i uint64) error {
	if a.blocks[i] == nil {
		return nil
	}
	return a.RemovePrefix(a.geo.block(i))
}

// RemovePrefix stops allocating from p, an aligned part of one block. It
// refuses while any address of p is allocated.
func (a *Allocator) RemovePrefix(p netip.Prefix) error {
	i, off, n, ok := a.geo.partOf(p)
	if !ok {
		return fmt.Errorf("%s: not a part of a block of %s", p, a.geo.rng)
	}
	b := a.blocks[i]
	if b == nil {
		return nil
	}
	if used := countRange(b.used, off, n); used > 0 {
		return fmt.Errorf("%s: %d addresses still allocated", p, used)
	}
	a.disown(i, off, n)
	return nil
}

// Disown stops allocating from p, an aligned part of one block, even where
// addresses are allocated: they stay allocated until released, and are not
// handed out again. Used when another host turns out to own p (a conflict).
func (a *Allocator) Disown(p netip.Prefix) {
	if i, off, n, ok := a.geo.partOf(p); ok && a.blocks[i] != nil {
		a.disown(i, off, n)
	}
}

func (a *Allocator) disown(i uint64, off, n int) {
	b, res := a.blocks[i], a.reservedIn(i)
	for k := off; k < off+n; k++ {
		if !getBit(b.owned, k) {
			continue
		}
		clearBit(b.owned, k)
		b.nOwned--
		if !getBit(b.used, k) && !res[k] {
			b.avail--
		}
	}
	a.dropIfEmpty(i)
}

// Freeze stops allocating from the whole of block i while keeping its
// allocations (Disown of the block).
func (a *Allocator) Freeze(i uint64) {
	if i < a.geo.count {
		a.Disown(a.geo.block(i))
	}
}

// Frozen reports whether block i has addresses allocated that this host no
// longer owns (lost to a conflict).
func (a *Allocator) Frozen(i uint64) bool {
	b := a.blocks[i]
	if b == nil {
		return false
	}
	for w := range b.used {
		if b.used[w]&^b.owned[w] != 0 {
			return true
		}
	}
	return false
}

// Used returns the number of addresses allocated in block i.
func (a *Allocator) Used(i uint64) int {
	if b := a.blocks[i]; b != nil {
		return b.n
	}
	return 0
}

// Free returns the number of addresses still available in owned parts.
func (a *Allocator) Free() int {
	n := 0
	for _, b := range a.blocks {
		n += b.avail
	}
	return n
}

// Avail returns the number of addresses still available in block i.
func (a *Allocator) Avail(i uint64) int {
	if b := a.blocks[i]; b != nil {
		return b.avail
	}
	return 0
}

// OwnedCount returns the number of addresses of block i this host owns.
func (a *Allocator) OwnedCount(i uint64) int {
	if b := a.blocks[i]; b != nil {
		return b.nOwned
	}
	return 0
}

// Reserve adds addr to the reserved set. It fails with ErrInUse if addr is
// allocated to a container.
func (a *Allocator) Reserve(addr netip.Addr) error {
	if _, ok := a.reserved[addr]; ok {
		return nil
	}
	if i, off, ok := a.geo.index(addr); ok {
		if b := a.blocks[i]; b != nil {
			if getBit(b.used, off) {
				return kindErrorf(ErrInUse, "reserve %s: allocated to a container", addr)
			}
			if getBit(b.owned, off) {
				b.avail--
			}
		}
	}
	a.reserved[addr] = struct{}{}
	return nil
}

// Unreserve removes addr from the reserved set; no-op if it was not.
func (a *Allocator) Unreserve(addr netip.Addr) {
	if _, ok := a.reserved[addr]; !ok {
		return
	}
	delete(a.reserved, addr)
	if i, off, ok := a.geo.index(addr); ok {
		if b := a.blocks[i]; b != nil && getBit(b.owned, off) && !getBit(b.used, off) {
			b.avail++
		}
	}
}

// Reserved reports whether addr is reserved.
func (a *Allocator) Reserved(addr netip.Addr) bool { _, ok := a.reserved[addr]; return ok }

// Allocate hands out the lowest free owned address of the lowest block with
// space. ok is false when nothing owned is free.
func (a *Allocator) Allocate() (addr netip.Addr, ok bool) {
	for _, i := range a.order {
		b := a.blocks[i]
		if b.avail == 0 {
			continue
		}
		for w := range b.used {
			for free := b.owned[w] &^ b.used[w]; free != 0; free &= free - 1 {
				off := w*64 + bits.TrailingZeros64(free)
				cand := a.geo.addrAt(i, off)
				if _, r := a.reserved[cand]; r {
					continue
				}
				setBit(b.used, off)
				b.n++
				b.avail--
				return cand, true
			}
		}
	}
	return netip.Addr{}, false
}

// AllocateAddr allocates exactly addr. It fails with ErrNotInPool outside the
// range, ErrNotOwned if this host does not own it, ErrInUse if taken or
// reserved.
func (a *Allocator) AllocateAddr(addr netip.Addr) error {
	i, off, ok := a.geo.index(addr)
	if !ok {
		return kindErrorf(ErrNotInPool, "address %s: not in %s", addr, a.geo.rng)
	}
	b := a.blocks[i]
	if b == nil || !getBit(b.owned, off) {
		if b != nil && getBit(b.used, off) {
			return kindErrorf(ErrInUse, "address %s: already allocated", addr)
		}
		return kindErrorf(ErrNotOwned, "address %s: not owned by this host", addr)
	}
	if _, r := a.reserved[addr]; r {
		return kindErrorf(ErrInUse, "address %s: reserved (network, broadcast, gateway or aux)", addr)
	}
	if getBit(b.used, off) {
		return kindErrorf(ErrInUse, "address %s: already allocated", addr)
	}
	setBit(b.used, off)
	b.n++
	b.avail--
	return nil
}

// Allocated reports whether addr is allocated to a container.
func (a *Allocator) Allocated(addr netip.Addr) bool {
	i, off, ok := a.geo.index(addr)
	if !ok || a.blocks[i] == nil {
		return false
	}
	return getBit(a.blocks[i].used, off)
}

// Release frees addr. Releasing a free address this host owns is a no-op
// (released is false); an address outside the range, or neither owned nor
// allocated here, is an error.
func (a *Allocator) Release(addr netip.Addr) (released bool, err error) {
	i, off, ok := a.geo.index(addr)
	if !ok {
		return false, kindErrorf(ErrNotInPool, "address %s: not in %s", addr, a.geo.rng)
	}
	b := a.blocks[i]
	if b == nil || !getBit(b.used, off) && !getBit(b.owned, off) {
		return false, kindErrorf(ErrNotOwned, "address %s: not owned by this host", addr)
	}
	if !getBit(b.used, off) {
		return false, nil
	}
	clearBit(b.used, off)
	b.n--
	if _, r := a.reserved[addr]; getBit(b.owned, off) && !r {
		b.avail++
	}
	a.dropIfEmpty(i)
	return true, nil
}

// Addresses returns every allocated address of block i in ascending order.
func (a *Allocator) Addresses(i uint64) []netip.Addr {
	b := a.blocks[i]
	if b == nil {
		return nil
	}
	var out []netip.Addr
	for w, word := range b.used {
		for ; word != 0; word &= word - 1 {
			out = append(out, a.geo.addrAt(i, w*64+bits.TrailingZeros64(word)))
		}
	}
	return out
}

// appendRuns appends the allocated addresses of block i to runs, as runs
// of consecutive addresses in ascending order, without listing each one.
func (a *Allocator) appendRuns(runs []addrRun, i uint64) []addrRun {
	b := a.blocks[i]
	if b == nil {
		return runs
	}
	start, prev := -1, -1
	flush := func() {
		if start >= 0 {
			runs = appendRun(runs, addrRun{a.geo.addrAt(i, start), a.geo.addrAt(i, prev)})
		}
	}
	for w, word := range b.used {
		for ; word != 0; word &= word - 1 {
			k := w*64 + bits.TrailingZeros64(word)
			if k != prev+1 || start < 0 {
				flush()
				start = k
			}
			prev = k
		}
	}
	flush()
	return runs
}

// OwnedParts returns the parts of block i this host owns, as the fewest
// aligned prefixes, in address order.
func (a *Allocator) OwnedParts(i uint64) []netip.Prefix {
	b := a.blocks[i]
	if b == nil || b.nOwned == 0 {
		return nil
	}
	var out []netip.Prefix
	var walk func(off, n int)
	walk = func(off, n int) {
		switch c := countRange(b.owned, off, n); {
		case c == 0:
		case c == n:
			out = append(out, a.geo.prefixAt(i, off, n))
		default:
			walk(off, n/2)
			walk(off+n/2, n/2)
		}
	}
	walk(0, a.geo.size())
	return out
}

// PartStats returns the allocated and available addresses of p, an aligned
// part of a block.
func (a *Allocator) PartStats(p netip.Prefix) (used, avail int) {
	i, off, n, ok := a.geo.partOf(p)
	b := a.blocks[i]
	if !ok || b == nil {
		return 0, 0
	}
	res := a.reservedIn(i)
	for k := off; k < off+n; k++ {
		switch {
		case getBit(b.used, k):
			used++
		case getBit(b.owned, k) && !res[k]:
			avail++
		}
	}
	return used, avail
}

// emptyPart finds in block i the aligned part that this host wholly owns,
// with no address allocated, holding the most available addresses but no
// more than limit (ties: the highest part). If within is valid, only parts
// containing that address count. n is the part's available addresses; ok is
// false if no part with at least one qualifies.
func (a *Allocator) emptyPart(i uint64, limit int, within netip.Addr) (p netip.Prefix, n int, ok bool) {
	b := a.blocks[i]
	if b == nil || b.avail == 0 || limit < 1 {
		return netip.Prefix{}, 0, false
	}
	target := -1
	if within.IsValid() {
		j, off, in := a.geo.index(within)
		if !in || j != i {
			return netip.Prefix{}, 0, false
		}
		target = off
	}
	res := a.reservedIn(i)
	reservedIn := func(off, n int) int {
		c := 0
		for k := range res {
			if k >= off && k < off+n {
				c++
			}
		}
		return c
	}
	bestOff, bestN, bestAvail := 0, 0, 0
	var walk func(off, n int)
	walk = func(off, n int) {
		if target >= 0 && (target < off || target >= off+n) {
			return
		}
		owned := countRange(b.owned, off, n)
		if owned == 0 {
			return
		}
		if owned == n && countRange(b.used, off, n) == 0 {
			if av := n - reservedIn(off, n); av <= limit {
				if av > 0 && av >= bestAvail {
					bestOff, bestN, bestAvail = off, n, av
				}
				return
			}
		}
		if n > 1 {
			walk(off, n/2)
			walk(off+n/2, n/2)
		}
	}
	walk(0, a.geo.size())
	if bestAvail == 0 {
		return netip.Prefix{}, 0, false
	}
	return a.geo.prefixAt(i, bestOff, bestN), bestAvail, true
}
