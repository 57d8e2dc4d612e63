package resolver

import (
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per source address: Rate queries a second,
// bursts of Burst. It forgets sources idle for a minute, and keeps at
// most maxSources (a flood from many sources then shares one bucket).
type limiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex // guards the fields below
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

const maxSources = 65536

func newLimiter(rate, burst int) *limiter {
	return &limiter{rate: float64(rate), burst: float64(burst), now: time.Now, buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token of src's bucket; false if it has none. A nil
// limiter allows everything.
func (l *limiter) allow(src netip.Addr) bool {
	if l == nil {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		for a, b := range l.buckets {
			if now.Sub(b.last) > time.Minute {
				delete(l.buckets, a)
			}
		}
		l.swept = now
	}
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxSources {
			src = netip.Addr{}
			b = l.buckets[src]
		}
		if b == nil {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[src] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
