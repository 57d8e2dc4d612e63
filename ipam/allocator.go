package ipam

// The allocator is the pure, single-host half of IPAM: given the blocks this
// host owns in one pool, it hands out and takes back addresses. It knows
// nothing of other hosts; blocks.go decides which blocks are ours.
//
// A block is an aligned prefix (default /26 or /122) of the pool's allocation
// range, numbered from 0 in address order. Only owned blocks get a bitmap, so
// an IPv6 /64 pool costs as much as the few blocks actually in use.

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

// blockAlloc is the bitmap of one owned block.
type blockAlloc struct {
	used   []uint64 // bit set: allocated to a container
	n      int      // allocated count
	avail  int      // free and not reserved
	frozen bool     // lost to a conflict: keep what is allocated, add nothing
}

// Allocator hands out addresses from the blocks of one pool that this host
// owns. Not safe for concurrent use; IPAM serialises calls per pool.
type Allocator struct {
	geo      geometry
	reserved map[netip.Addr]struct{}
	blocks   map[uint64]*blockAlloc
	order    []uint64 // owned block indexes, ascending
}

// NewAllocator returns an allocator over rng with blocks of blockBits (made
// longer if needed: a block holds at most 65536 addresses, and never more
// than rng) and the given reserved addresses, owning no block yet.
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

// Owned returns the owned block indexes in ascending order.
func (a *Allocator) Owned() []uint64 { return slices.Clone(a.order) }

// Owns reports whether block i is owned.
func (a *Allocator) Owns(i uint64) bool { _, ok := a.blocks[i]; return ok }

// AddBlock starts allocating from block i; no-op if already owned.
func (a *Allocator) AddBlock(i uint64) {
	if i >= a.geo.count || a.blocks[i] != nil {
		return
	}
	b := &blockAlloc{used: make([]uint64, (a.geo.size()+63)/64)}
	b.avail = a.geo.size() - a.reservedIn(i)
	a.blocks[i] = b
	pos, _ := slices.BinarySearch(a.order, i)
	a.order = slices.Insert(a.order, pos, i)
}

// RemoveBlock stops allocating from block i. It refuses while any address of
// the block is allocated: only empty blocks change owner.
func (a *Allocator) RemoveBlock(i uint64) error {
	b := a.blocks[i]
	if b == nil {
		return nil
	}
	if b.n > 0 {
		return fmt.Errorf("block %s: %d addresses still allocated", a.geo.block(i), b.n)
	}
	delete(a.blocks, i)
	pos, _ := slices.BinarySearch(a.order, i)
	a.order = slices.Delete(a.order, pos, pos+1)
	return nil
}

// Used returns the number of addresses allocated in block i.
func (a *Allocator) Used(i uint64) int {
	if b := a.blocks[i]; b != nil {
		return b.n
	}
	return 0
}

// Free returns the number of addresses still available in owned blocks.
func (a *Allocator) Free() int {
	n := 0
	for _, b := range a.blocks {
		if !b.frozen {
			n += b.avail
		}
	}
	return n
}

// Avail returns the number of addresses still available in block i.
func (a *Allocator) Avail(i uint64) int {
	if b := a.blocks[i]; b != nil && !b.frozen {
		return b.avail
	}
	return 0
}

// Frozen reports whether block i is frozen.
func (a *Allocator) Frozen(i uint64) bool { b := a.blocks[i]; return b != nil && b.frozen }

// Freeze stops allocating from block i while keeping its allocations; used
// when another host turns out to own it (a conflict).
func (a *Allocator) Freeze(i uint64) {
	if b := a.blocks[i]; b != nil {
		b.frozen = true
	}
}

func (a *Allocator) reservedIn(i uint64) int {
	n := 0
	for r := range a.reserved {
		if j, _, ok := a.geo.index(r); ok && j == i {
			n++
		}
	}
	return n
}

// Reserve adds addr to the reserved set. It fails with ErrInUse if addr is
// allocated to a container.
func (a *Allocator) Reserve(addr netip.Addr) error {
	if _, ok := a.reserved[addr]; ok {
		return nil
	}
	i, off, ok := a.geo.index(addr)
	if ok {
		if b := a.blocks[i]; b != nil {
			if b.used[off/64]&(1<<(off%64)) != 0 {
				return kindErrorf(ErrInUse, "reserve %s: allocated to a container", addr)
			}
			b.avail--
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
	if i, _, ok := a.geo.index(addr); ok {
		if b := a.blocks[i]; b != nil {
			b.avail++
		}
	}
}

// Reserved reports whether addr is reserved.
func (a *Allocator) Reserved(addr netip.Addr) bool { _, ok := a.reserved[addr]; return ok }

// Allocate hands out the lowest free address of the lowest owned block with
// space. ok is false when every owned block is full.
func (a *Allocator) Allocate() (addr netip.Addr, ok bool) {
	for _, i := range a.order {
		b := a.blocks[i]
		if b.avail == 0 || b.frozen {
			continue
		}
		base := a.geo.block(i).Addr()
		for w, word := range b.used {
			for free := ^word; free != 0; free &= free - 1 {
				off := w*64 + bits.TrailingZeros64(free)
				if off >= a.geo.size() {
					break
				}
				cand := fromU128(toU128(base).add(u128{lo: uint64(off)}), base.Is6())
				if _, r := a.reserved[cand]; r {
					continue
				}
				b.used[w] |= 1 << (off % 64)
				b.n++
				b.avail--
				return cand, true
			}
		}
	}
	return netip.Addr{}, false
}

// AllocateAddr allocates exactly addr. It fails with ErrNotInPool outside the
// range, ErrNotOwned if its block is not owned, ErrInUse if taken or reserved.
func (a *Allocator) AllocateAddr(addr netip.Addr) error {
	i, off, ok := a.geo.index(addr)
	if !ok {
		return kindErrorf(ErrNotInPool, "address %s: not in %s", addr, a.geo.rng)
	}
	b := a.blocks[i]
	if b == nil || b.frozen {
		return kindErrorf(ErrNotOwned, "address %s: block %s is not owned by this host", addr, a.geo.block(i))
	}
	if _, r := a.reserved[addr]; r {
		return kindErrorf(ErrInUse, "address %s: reserved (network, broadcast, gateway or aux)", addr)
	}
	if b.used[off/64]&(1<<(off%64)) != 0 {
		return kindErrorf(ErrInUse, "address %s: already allocated", addr)
	}
	b.used[off/64] |= 1 << (off % 64)
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
	return a.blocks[i].used[off/64]&(1<<(off%64)) != 0
}

// Release frees addr. Releasing a free address of an owned block is a no-op
// (released is false); an address outside the range or in a block not owned
// is an error.
func (a *Allocator) Release(addr netip.Addr) (released bool, err error) {
	i, off, ok := a.geo.index(addr)
	if !ok {
		return false, kindErrorf(ErrNotInPool, "address %s: not in %s", addr, a.geo.rng)
	}
	b := a.blocks[i]
	if b == nil {
		return false, kindErrorf(ErrNotOwned, "address %s: block %s is not owned by this host", addr, a.geo.block(i))
	}
	if b.used[off/64]&(1<<(off%64)) == 0 {
		return false, nil
	}
	b.used[off/64] &^= 1 << (off % 64)
	b.n--
	b.avail++
	return true, nil
}

// Addresses returns every allocated address of block i in ascending order.
func (a *Allocator) Addresses(i uint64) []netip.Addr {
	b := a.blocks[i]
	if b == nil {
		return nil
	}
	base := a.geo.block(i).Addr()
	var out []netip.Addr
	for w, word := range b.used {
		for ; word != 0; word &= word - 1 {
			off := w*64 + bits.TrailingZeros64(word)
			out = append(out, fromU128(toU128(base).add(u128{lo: uint64(off)}), base.Is6()))
		}
	}
	return out
}
