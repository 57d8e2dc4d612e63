package ipam

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// u128 is an unsigned 128-bit offset between addresses, so IPv6 pools never
// need a bitmap or a big.Int.
type u128 struct{ hi, lo uint64 }

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func fromU128(v u128, v6 bool) netip.Addr {
	if !v6 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func (v u128) add(w u128) u128 {
	lo, c := bits.Add64(v.lo, w.lo, 0)
	hi, _ := bits.Add64(v.hi, w.hi, c)
	return u128{hi, lo}
}

func (v u128) sub(w u128) u128 {
	lo, b := bits.Sub64(v.lo, w.lo, 0)
	hi, _ := bits.Sub64(v.hi, w.hi, b)
	return u128{hi, lo}
}

// shl and shr shift by n in [0, 127].
func (v u128) shl(n int) u128 {
	switch {
	case n == 0:
		return v
	case n >= 64:
		return u128{hi: v.lo << (n - 64)}
	}
	return u128{hi: v.hi<<n | v.lo>>(64-n), lo: v.lo << n}
}

func (v u128) shr(n int) u128 {
	switch {
	case n == 0:
		return v
	case n >= 64:
		return u128{lo: v.hi >> (n - 64)}
	}
	return u128{hi: v.hi >> n, lo: v.lo>>n | v.hi<<(64-n)}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	host := p.Addr().BitLen() - p.Bits()
	ones := u128{hi: ^uint64(0), lo: ^uint64(0)}.shr(128 - host)
	if host == 0 {
		ones = u128{}
	}
	return fromU128(toU128(p.Addr()).add(ones), p.Addr().Is6())
}
