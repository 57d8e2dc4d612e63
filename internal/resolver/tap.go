package resolver

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/tenet-net/tenet/overlay"
)

// Docker's embedded DNS answers a name its engine holds itself (an alias
// shared by a local container and containers on other hosts) with the
// local addresses only, and never asks Tenet. So in every container with a
// Tenet network here, its answers pass through tenetd on their way
// (overlay's DNS tap, which fails open), and those for a shared name get
// the other hosts' addresses too (Widen).

// Tap is one container's queue of answers from Docker's embedded DNS:
// *overlay.DNSTap.
type Tap interface {
	Read() ([]overlay.TappedAnswer, error)
	Pass(a overlay.TappedAnswer) error
	Replace(a overlay.TappedAnswer, msg []byte) error
	Close() error
	NS() overlay.NSID
}

// Taps opens and removes the taps, by Docker sandbox key: OverlayTaps.
type Taps interface {
	Tap(sandbox string) (Tap, error)
	Untap(sandbox string) error
}

// OverlayTaps are the datapath's taps.
func OverlayTaps(d *overlay.Datapath) Taps { return overlayTaps{d} }

type overlayTaps struct{ d *overlay.Datapath }

func (o overlayTaps) Tap(sandbox string) (Tap, error) { return o.d.TapDockerDNS(sandbox) }
func (o overlayTaps) Untap(sandbox string) error      { return o.d.UntapDockerDNS(sandbox) }

// tapped is a running tap and its reader.
type tapped struct {
	tap  Tap
	done chan struct{}
}

func (t *tapped) close() {
	_ = t.tap.Close()
	<-t.done
}

// sandboxNS is the identity of the namespace at sandbox; ok is false when
// it is not there (yet, or any more).
func sandboxNS(sandbox string) (overlay.NSID, bool) {
	fi, err := os.Stat(sandbox)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return overlay.NSID(st.Ino), true
}

// tapsGap is the least time between two rounds of syncTaps set off by
// gossip's changes.
const tapsGap = 20 * time.Millisecond

// syncTaps keeps a tap in every sandbox holding an endpoint of a network
// where a name of a container here is also another host's container's
// (only there can Docker's answer lack addresses; elsewhere answers go
// straight to the container), made anew when the sandbox's namespace is;
// a sandbox left with no such endpoint loses its tap and the table (the
// container may run on).
func (r *Resolver) syncTaps(st *runState) {
	if r.cfg.Taps == nil {
		return
	}
	eps := r.cfg.Local.Endpoints()
	names := map[string][]string{} // network -> names held here
	for _, e := range eps {
		if e.Netns != "" {
			names[e.Network] = append(names[e.Network], e.Names...)
		}
	}
	shared := map[string]bool{}
	for key, ns := range names {
		remote := r.remoteIndex(key)
		shared[key] = slices.ContainsFunc(ns, func(n string) bool { return len(remote.byName[strings.ToLower(n)]) > 0 })
	}
	want := map[string]bool{}
	for _, e := range eps {
		if e.Netns != "" && shared[e.Network] {
			want[e.Netns] = true
		}
	}
	if !st.tapsSwept {
		// A table left by an earlier run in a sandbox that needs it no
		// more (the name stopped being shared while tenetd was down):
		// harmless (bypassed), but not ours to leave.
		for _, e := range eps {
			if _, ok := sandboxNS(e.Netns); ok && e.Netns != "" && !want[e.Netns] {
				if err := r.cfg.Taps.Untap(e.Netns); err != nil {
					r.log.Debug("remove an earlier run's DNS tap", "sandbox", e.Netns, "err", err)
				}
			}
		}
		st.tapsSwept = true
	}
	for sb, t := range st.taps {
		ns, ok := sandboxNS(sb)
		if want[sb] && ok && ns == t.tap.NS() {
			continue
		}
		t.close()
		delete(st.taps, sb)
		if !want[sb] {
			if err := r.cfg.Taps.Untap(sb); err != nil {
				r.log.Debug("remove the DNS tap", "sandbox", sb, "err", err)
			}
		}
	}
	for sb := range st.warnedTaps {
		if !want[sb] {
			delete(st.warnedTaps, sb)
		}
	}
	for sb := range want {
		if st.taps[sb] != nil {
			continue
		}
		if _, ok := sandboxNS(sb); !ok {
			continue // Docker names it at Join; it appears when the container starts
		}
		tap, err := r.cfg.Taps.Tap(sb)
		if err != nil {
			if !st.warnedTaps[sb] && !errors.Is(err, fs.ErrNotExist) {
				r.log.Warn("cannot tap Docker's DNS answers: names shared across hosts answer with this host's containers only", "sandbox", sb, "err", err)
				st.warnedTaps[sb] = true
			}
			continue
		}
		delete(st.warnedTaps, sb)
		t := &tapped{tap: tap, done: make(chan struct{})}
		go r.serveTap(sb, t)
		st.taps[sb] = t
	}
}

// serveTap lets every answer of t through, widened where Widen finds
// other hosts' addresses, until t is closed. Past the per-source rate
// (a container can send itself datagrams from 127.0.0.11:53) answers go
// through untouched.
func (r *Resolver) serveTap(sandbox string, t *tapped) {
	defer close(t.done)
	lim := newLimiter(r.cfg.Rate, r.cfg.Burst)
	for {
		as, err := t.tap.Read()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// The socket's buffer ran over (the kernel let those answers
			// through); a short pause keeps a lasting error from spinning.
			r.log.Debug("read the DNS tap", "sandbox", sandbox, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for _, a := range as {
			if lim.allow(netip.Addr{}) {
				if out := r.widen(sandbox, a.DNS); out != nil {
					if err := t.tap.Replace(a, out); err != nil {
						r.log.Debug("widen an answer", "sandbox", sandbox, "err", err)
					}
					continue
				}
			}
			_ = t.tap.Pass(a)
		}
	}
}

// widen returns msg widened (Widen) for the container of sandbox, or nil
// to let it through as it is.
func (r *Resolver) widen(sandbox string, msg []byte) []byte {
	if len(msg) < 12 || msg[2]&0x80 == 0 {
		return nil // not a response: no need to decode it
	}
	eps := r.cfg.Local.Endpoints()
	mine := map[string]bool{}
	for _, e := range eps {
		if e.Netns == sandbox {
			mine[e.Network] = true
		}
	}
	var nets []NetNames
	for _, n := range r.cfg.Local.Networks() {
		if mine[n.Key()] {
			var v NetView
			r.addNetwork(&v, n, eps)
			nets = append(nets, NetNames{Local: v.Groups[0], Remote: v.Groups[1]})
		}
	}
	return widenMsg(msg, nets)
}

// widenMsg decodes msg, widens it (Widen) to the size its client takes,
// and returns it encoded, or nil if it does not decode or Widen leaves it
// as it is.
func widenMsg(msg []byte, nets []NetNames) []byte {
	resp := new(dns.Msg)
	if err := resp.Unpack(msg); err != nil {
		return nil
	}
	size := dns.MinMsgSize
	if opt := resp.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
	}
	if !Widen(resp, nets, size) {
		return nil
	}
	out, err := resp.Pack()
	if err != nil {
		return nil
	}
	return out
}
