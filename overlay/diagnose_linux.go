package overlay

import (
	"context"
	"errors"
	"fmt"
)

// Diagnose compares the kernel with s and changes nothing: the findings are
// what Reconcile(s) would fix now, each naming the object and the op that
// repairs it. It reads the whole kernel state (as Reconcile does) while
// holding off reconciles, so it never sees one half done.
func (d *Datapath) Diagnose(ctx context.Context, s State) ([]Finding, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("overlay: datapath is closed")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	addrs, err := d.hostAddrsLocked()
	if err != nil {
		return nil, err
	}
	h, err := d.hostLocked(addrs)
	if err != nil {
		return nil, err
	}
	observed, err := d.observeLocked(viewAll, addrs)
	if err != nil {
		return nil, err
	}
	desired, ok := desire(s, netIndex(s), h, viewAll, observed)
	if !ok {
		return nil, fmt.Errorf("overlay: uplink net %s is full: no /30 left for another tenant's egress", d.cfg.UplinkNet)
	}
	return Findings(Plan(desired, observed), observed), nil
}
