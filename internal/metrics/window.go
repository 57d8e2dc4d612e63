package metrics

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Summary describes the convergence samples of a recent window.
type Summary struct {
	Count int           // samples in the window
	Span  time.Duration // what the window covers: Window, or less if it filled up
	P50   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// window keeps the most recent samples (at most cap) with their times, so
// that quantiles of the last minute are exact rather than bucketed.
type window struct {
	span time.Duration

	mu   sync.Mutex // guards the fields below
	at   []time.Time
	d    []time.Duration
	next int // where the next sample goes
	full bool
}

func newWindow(span time.Duration, capacity int) *window {
	return &window{span: span, at: make([]time.Time, capacity), d: make([]time.Duration, capacity)}
}

func (w *window) add(at time.Time, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.at[w.next], w.d[w.next] = at, d
	w.next++
	if w.next == len(w.at) {
		w.next, w.full = 0, true
	}
}

// summary summarises the samples taken in the span before now.
func (w *window) summary(now time.Time) Summary {
	w.mu.Lock()
	n := w.next
	if w.full {
		n = len(w.at)
	}
	from := now.Add(-w.span)
	var ds []time.Duration
	oldest := now
	for i := range n {
		if !w.at[i].Before(from) && !w.at[i].After(now) {
			ds = append(ds, w.d[i])
			if w.at[i].Before(oldest) {
				oldest = w.at[i]
			}
		}
	}
	// A full ring whose oldest kept sample is inside the span has lost
	// older ones: the window covers less.
	lost := w.full && len(ds) == len(w.at)
	w.mu.Unlock()
	s := Summary{Count: len(ds), Span: w.span}
	if lost {
		s.Span = now.Sub(oldest)
	}
	if len(ds) == 0 {
		return s
	}
	slices.Sort(ds)
	s.P50, s.P99, s.Max = quantile(ds, 0.50), quantile(ds, 0.99), ds[len(ds)-1]
	return s
}

// quantile is the nearest-rank quantile q of sorted ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}
