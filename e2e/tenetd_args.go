package e2e

import "context"

// RestartWith kills the daemon, adds args to its command line, and starts
// it again: for tests of a flag on a running cluster.
func (t *Tenetd) RestartWith(ctx context.Context, args ...string) error {
	if err := t.Daemon.Kill(ctx); err != nil {
		return err
	}
	t.argv = append(t.argv, args...)
	return t.Start(ctx)
}
