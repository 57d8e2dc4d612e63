package gossip

import "time"

// clock is a Lamport clock whose ticks are at least the wall clock in
// microseconds. It keeps the Lamport property (a write is ordered after
// everything its host has seen) and adds one more: a host restarted with
// empty state still writes versions above those it wrote before, because
// time moved on, so its first write after a restart is not ignored as
// stale. A wall clock that jumps backwards is harmless; one far in the
// future only makes versions larger.
type clock struct {
	now  func() time.Time
	last uint64
}

// next returns a version above every version seen or issued.
func (c *clock) next() uint64 {
	v := c.last + 1
	if w := uint64(c.now().UnixMicro()); w > v {
		v = w
	}
	c.last = v
	return v
}

// observe records a version seen from another host.
func (c *clock) observe(v uint64) {
	if v > c.last {
		c.last = v
	}
}
