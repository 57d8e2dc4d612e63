package fuzz

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Shrink looks for a shorter sequence of ops that fails the same way as
// rep (same op kind, same checks), by removing chunks of the steps before
// the failing one and replaying what is left on a fresh testbed each time
// (delta debugging). It stops after budget and returns the shortest
// failing report found (rep itself if none is shorter). Every attempt costs
// a testbed, about 20 s, plus its steps.
func Shrink(ctx context.Context, cfg Config, rep *Report, budget time.Duration) *Report {
	return shrink(ctx, cfg, rep, budget, Run)
}

// shrink is Shrink with the run function given, for tests.
func shrink(ctx context.Context, cfg Config, rep *Report, budget time.Duration, run func(context.Context, Config) (*Report, error)) *Report {
	if rep.Failure == nil || rep.Failure.Step < 2 {
		return rep
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	want := rep.Failure.Signature()
	best := rep
	ops := make([]Op, 0, rep.Failure.Step)
	for _, l := range rep.Ops[:rep.Failure.Step] {
		ops = append(ops, l.Op)
	}
	deadline := time.Now().Add(budget)
	n := 2
	attempt := 0
	for len(ops) >= 2 && time.Now().Before(deadline) && ctx.Err() == nil {
		// The failing op stays last; chunks come from the ones before it.
		head := ops[:len(ops)-1]
		chunk := (len(head) + n - 1) / n
		reduced := false
		for i := 0; i < len(head) && time.Now().Before(deadline); i += chunk {
			cand := append(append(append([]Op(nil), head[:i]...), head[min(len(head), i+chunk):]...), ops[len(ops)-1])
			attempt++
			fmt.Fprintf(out, "shrink: attempt %d: %d of %d steps (without steps %d-%d)\n", attempt, len(cand), len(ops), i+1, min(len(head), i+chunk))
			c := cfg
			c.Ops, c.Out, c.Budget = cand, io.Discard, 0
			r, err := run(ctx, c)
			if err != nil || r.Failure == nil || r.Failure.Step == 0 || r.Failure.Signature() != want {
				got := "passed"
				if err != nil {
					got = "testbed error: " + err.Error()
				} else if r.Failure != nil {
					got = "failed differently: " + r.Failure.Signature()
				}
				fmt.Fprintf(out, "shrink:   %s\n", got)
				continue
			}
			fmt.Fprintf(out, "shrink:   fails the same way at step %d\n", r.Failure.Step)
			best = r
			ops = cand[:r.Failure.Step]
			n = max(n-1, 2)
			reduced = true
			break
		}
		if !reduced {
			if n >= len(head) {
				break
			}
			n = min(2*n, len(head))
		}
	}
	return best
}
