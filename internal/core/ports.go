package core

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tenet-net/tenet/overlay"
)

// PortBinding is a published port of an endpoint: HostPort of Proto on
// HostIP (unset: every address of the host) reaches Port on the
// endpoint's address.
type PortBinding = overlay.Port

// PortRequest asks to publish a container port: on HostPort, or on the
// first free one of HostPort-HostPortEnd, or with HostPort 0 on a free one
// of Config.DynamicPorts; on HostIP, or (unset or 0.0.0.0) on every
// address of the host.
type PortRequest struct {
	Proto       overlay.Proto
	HostIP      netip.Addr
	HostPort    uint16
	HostPortEnd uint16 // 0: HostPort alone
	Port        uint16
}

func (r PortRequest) String() string {
	hp := fmt.Sprint(r.HostPort)
	if r.HostPort == 0 {
		hp = "any"
	} else if r.HostPortEnd > r.HostPort {
		hp = fmt.Sprintf("%d-%d", r.HostPort, r.HostPortEnd)
	}
	ip := "0.0.0.0"
	if r.HostIP.IsValid() {
		ip = r.HostIP.String()
	}
	return fmt.Sprintf("%s:%s->%d/%s", ip, hp, r.Port, r.Proto)
}

// PortRange is a range of host ports, First to Last.
type PortRange struct{ First, Last uint16 }

// maxPortTries bounds how often a flexible request (a range, or any
// port) moves on to another port that another program turned out to hold.
const maxPortTries = 16

// check applies the rules of a request on its own.
func (r PortRequest) check() error {
	switch {
	case r.Proto != overlay.TCP && r.Proto != overlay.UDP:
		return fmt.Errorf("port %d: protocol %d: only tcp (6) and udp (17) can be published", r.Port, uint8(r.Proto))
	case r.Port == 0:
		return fmt.Errorf("%s: the container port must be 1-65535", r)
	case r.HostPortEnd != 0 && r.HostPortEnd < r.HostPort:
		return fmt.Errorf("%s: host port range ends before it starts", r)
	case r.HostPort == 0 && r.HostPortEnd != 0:
		return fmt.Errorf("%s: a host port range must start at 1 or above", r)
	case r.HostIP.IsValid() && !r.HostIP.Is4():
		return fmt.Errorf("%s: host address %s: only IPv4 host addresses can be published", r, r.HostIP)
	case r.HostIP.IsValid() && (r.HostIP.IsMulticast() || r.HostIP == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return fmt.Errorf("%s: host address %s: must be a unicast address of this host", r, r.HostIP)
	}
	return nil
}

func (r PortRequest) anyHost() bool { return !r.HostIP.IsValid() || r.HostIP.IsUnspecified() }

// candidates are the host ports r may get, in order.
func (r PortRequest) candidates(dyn PortRange) (first, last uint16) {
	switch {
	case r.HostPort == 0:
		return dyn.First, dyn.Last
	case r.HostPortEnd > r.HostPort:
		return r.HostPort, r.HostPortEnd
	}
	return r.HostPort, r.HostPort
}

func (r PortRequest) flexible() bool { return r.HostPort == 0 || r.HostPortEnd > r.HostPort }

type l4 struct {
	proto overlay.Proto
	port  uint16
}

// PublishPorts makes reqs the published ports of a local endpoint (none:
// withdraws them), and returns what each request got. A request its
// current ports already satisfy keeps its port, so asking again changes
// nothing. A host port of a protocol belongs to one endpoint on the host;
// a port another program holds is refused (a range or any port moves on to
// the next one). On failure the endpoint keeps the ports it had.
func (c *Core) PublishPorts(ctx context.Context, id string, reqs []PortRequest) ([]PortBinding, error) {
	what := fmt.Sprintf("publish ports of endpoint %.12s", id)
	if len(reqs) > overlay.MaxPorts {
		return nil, kindErrorf(ErrInvalid, "%s: %d ports: at most %d", what, len(reqs), overlay.MaxPorts)
	}
	for _, r := range reqs {
		if err := r.check(); err != nil {
			return nil, kindErrorf(ErrInvalid, "%s: %v", what, err)
		}
	}
	skip := map[l4]bool{}
	for try := 0; ; try++ {
		c.mu.Lock()
		e := c.eps[id]
		if e == nil || !c.ready[id] {
			c.mu.Unlock()
			return nil, kindErrorf(ErrNotFound, "%s: no such endpoint", what)
		}
		n := c.nets[e.Network]
		what = fmt.Sprintf("publish ports of endpoint %.12s (network %s)", id, e.Network)
		if len(reqs) > 0 && !n.Egress() {
			c.mu.Unlock()
			return nil, kindErrorf(ErrInvalid, "%s: the network has no egress (--internal): it publishes no ports", what)
		}
		binds, err := c.allocatePortsLocked(e, reqs, skip)
		if err != nil {
			c.mu.Unlock()
			return nil, wrapKind(ErrConflict, err, "%s", what)
		}
		old := e.Ports
		if slices.Equal(binds, old) {
			c.mu.Unlock()
			return binds, nil
		}
		e.Ports = binds
		c.touchLocked(id)
		c.mu.Unlock()

		scope := Scope{Endpoints: []string{id}}
		err = c.commit(ctx, scope)
		if err == nil {
			c.log.Info("endpoint ports", "endpoint", id, "network", n.Key(), "ports", fmt.Sprint(binds))
			return binds, nil
		}
		c.mu.Lock()
		if c.eps[id] == e {
			e.Ports = old
			c.touchLocked(id)
		}
		c.mu.Unlock()
		var inUse *overlay.PortInUseError
		if errors.As(err, &inUse) && !inUse.NotLocal && try < maxPortTries && flexibleFor(reqs, binds, inUse.Res) {
			// Another program holds a port we picked: pick another.
			skip[l4{inUse.Res.Proto, inUse.Res.Port}] = true
			continue
		}
		c.undo(scope)
		if inUse != nil {
			return nil, wrapKind(ErrConflict, inUse, "%s", what)
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
}

// flexibleFor reports whether the binding on res came from a request that
// may move to another port.
func flexibleFor(reqs []PortRequest, binds []PortBinding, res overlay.Reservation) bool {
	for i, b := range binds {
		if b.Proto == res.Proto && b.HostPort == res.Port && reqs[i].flexible() {
			return true
		}
	}
	return false
}

// allocatePortsLocked gives each request a host port: the one e already
// has for it if that still fits, else the first candidate that no other
// endpoint publishes, that skip does not name and that fits this
// endpoint's other requests. binds[i] is reqs[i]'s.
func (c *Core) allocatePortsLocked(e *Endpoint, reqs []PortRequest, skip map[l4]bool) ([]PortBinding, error) {
	others := map[l4]*Endpoint{}
	for _, o := range c.eps {
		if o.ID == e.ID {
			continue
		}
		for _, p := range o.Ports {
			others[l4{p.Proto, p.HostPort}] = o
		}
	}
	mine := map[l4][]PortBinding{} // what this call has given so far
	fits := func(b PortBinding, fixed bool) bool {
		k := l4{b.Proto, b.HostPort}
		if others[k] != nil || skip[k] && !fixed {
			return false
		}
		for _, m := range mine[k] {
			// One host port: one container port, on every address or
			// on distinct ones; a flexible request takes a port alone.
			if !fixed || m.Port != b.Port || m.Reservation().IP.IsUnspecified() || b.Reservation().IP.IsUnspecified() ||
				m.Reservation().IP == b.Reservation().IP {
				return false
			}
		}
		return true
	}
	type span struct {
		proto       overlay.Proto
		first, last uint16
	}
	next := map[span]int{} // where the next flexible request of a span looks first
	binds := make([]PortBinding, len(reqs))
	for i, r := range reqs {
		first, last := r.candidates(c.cfg.DynamicPorts)
		sp := span{r.Proto, first, last}
		ip := r.HostIP
		if r.anyHost() {
			ip = netip.Addr{}
		}
		got := false
		// Keep a port it has.
		for _, p := range e.Ports {
			b := PortBinding{Proto: r.Proto, HostIP: ip, HostPort: p.HostPort, Port: r.Port}
			if p == b && p.HostPort >= first && p.HostPort <= last && fits(b, !r.flexible()) {
				binds[i], got = b, true
				break
			}
		}
		start := int(first)
		if h, ok := next[sp]; ok && r.flexible() {
			start = h
		}
		for hp := start; !got && hp <= int(last); hp++ {
			b := PortBinding{Proto: r.Proto, HostIP: ip, HostPort: uint16(hp), Port: r.Port}
			if fits(b, !r.flexible()) {
				binds[i], got = b, true
				next[sp] = hp + 1
			}
		}
		if !got {
			if !r.flexible() {
				k := l4{r.Proto, r.HostPort}
				if o := others[k]; o != nil {
					return nil, fmt.Errorf("host port %d/%s is already published by endpoint %.12s (network %s) on this host", r.HostPort, r.Proto, o.ID, o.Network)
				}
				return nil, fmt.Errorf("%s: host port %d/%s is asked for twice", r, r.HostPort, r.Proto)
			}
			return nil, fmt.Errorf("%s: no free host port in %d-%d/%s", r, first, last, r.Proto)
		}
		k := l4{r.Proto, binds[i].HostPort}
		mine[k] = append(mine[k], binds[i])
	}
	return binds, nil
}
