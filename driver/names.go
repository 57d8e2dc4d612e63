package driver

// Container names. Docker tells a network driver no names: an endpoint is
// an ID. The names a container answers to on a network are its name and
// its --network-alias list for that network, which only the engine knows.
// The Namer learns them from the engine's API, outside any plugin call
// (the engine waits on the plugin while it creates an endpoint, so asking
// it from inside one could deadlock), and records them with
// core.SetEndpointNames: the container's name first, then each alias, in
// Docker's order, without repeats, without the short container ID Docker
// adds to the aliases of user-defined networks, and without a name the
// core's rule refuses (logged once).
//
// It follows the engine's events (a network connect, a container rename or
// start) and, at every (re)connection to the engine and every Interval,
// inspects every container on this host's Tenet networks, so that an event
// missed while tenetd or the engine was down is made up for.

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tenet-net/tenet/internal/core"
)

// NameSetter is what the Namer needs of the core: *core.Core.
type NameSetter interface {
	Networks() []core.Network
	NetworkByRef(ref string) (core.Network, bool)
	Endpoint(id string) (core.Endpoint, bool)
	SetEndpointNames(ctx context.Context, id string, names []string) error
}

// Namer keeps the names of this host's endpoints in line with the engine.
type Namer struct {
	Engine *Engine
	Core   NameSetter
	Logger *slog.Logger
	// Interval between full rounds (1 min).
	Interval time.Duration
	// MaxBackoff bounds the wait before reconnecting to the engine's
	// events (5 s).
	MaxBackoff time.Duration

	mu      sync.Mutex          // guards the fields below
	pending map[string]bool     // container IDs to inspect
	full    bool                // inspect every container of every local network
	refused map[string]struct{} // "endpoint name" already logged as refused
	wake    chan struct{}
}

// Run follows the engine until ctx is done.
func (n *Namer) Run(ctx context.Context) error {
	if n.Interval == 0 {
		n.Interval = time.Minute
	}
	if n.MaxBackoff == 0 {
		n.MaxBackoff = 5 * time.Second
	}
	n.mu.Lock()
	n.pending, n.refused, n.wake = map[string]bool{}, map[string]struct{}{}, make(chan struct{}, 1)
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.follow(ctx); close(done) }()
	defer func() { <-done }()
	tick := time.NewTicker(n.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			n.queue("", true)
		case <-n.wake:
		}
		n.round(ctx)
	}
}

// queue asks for a container (or, full, every one) to be inspected.
func (n *Namer) queue(container string, full bool) {
	n.mu.Lock()
	if container != "" {
		n.pending[container] = true
	}
	n.full = n.full || full
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// follow reads the engine's events, reconnecting with backoff; each
// connection starts with a full round.
func (n *Namer) follow(ctx context.Context) {
	backoff := 100 * time.Millisecond
	warned := false
	for ctx.Err() == nil {
		err := n.Engine.Events(ctx, []string{"container", "network"}, []string{"connect", "rename", "start"},
			func() {
				backoff, warned = 100*time.Millisecond, false
				n.queue("", true)
			},
			func(ev EngineEvent) {
				switch {
				case ev.Type == "network" && ev.Action == "connect":
					n.queue(ev.Actor.Attributes["container"], false)
				case ev.Type == "container":
					n.queue(ev.Actor.ID, false)
				}
			})
		if ctx.Err() != nil {
			return
		}
		if !warned {
			n.Logger.Warn("cannot follow the engine's events; container names may lag", "err", err)
			warned = true
		} else {
			n.Logger.Debug("follow the engine's events", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, n.MaxBackoff)
	}
}

// round inspects what is pending.
func (n *Namer) round(ctx context.Context) {
	n.mu.Lock()
	pending, full := n.pending, n.full
	n.pending, n.full = map[string]bool{}, false
	n.mu.Unlock()
	if full {
		for _, net := range n.Core.Networks() {
			if net.Ref == "" {
				continue
			}
			en, ok, err := n.Engine.NetworkByName(ctx, net.Ref)
			if err != nil {
				n.Logger.Debug("inspect network for container names", "network", net.Key(), "err", err)
				continue
			}
			if ok {
				for id := range en.Containers {
					pending[id] = true
				}
			}
		}
	}
	for id := range pending {
		if ctx.Err() != nil {
			return
		}
		if err := n.name(ctx, id); err != nil {
			n.Logger.Debug("learn container names", "container", short(id), "err", err)
		}
	}
}

// name records the names of container id's endpoints on Tenet networks.
func (n *Namer) name(ctx context.Context, id string) error {
	c, ok, err := n.Engine.Container(ctx, id)
	if err != nil || !ok {
		return err
	}
	var errs []error
	for _, ep := range c.NetworkSettings.Networks {
		if _, ok := n.Core.NetworkByRef(ep.NetworkID); !ok {
			continue
		}
		if _, ok := n.Core.Endpoint(ep.EndpointID); !ok {
			continue // not created yet, or gone: a later round sees it
		}
		names := n.names(ep.EndpointID, c, ep)
		if err := n.Core.SetEndpointNames(ctx, ep.EndpointID, names); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// names lists what a container answers to on one network: its name, then
// its aliases there.
func (n *Namer) names(endpoint string, c EngineContainer, ep EngineEndpoint) []string {
	var out []string
	for _, name := range append([]string{strings.TrimPrefix(c.Name, "/")}, ep.Aliases...) {
		if name == "" || slices.Contains(out, name) || (len(c.ID) >= 12 && name == c.ID[:12]) || name == c.ID {
			continue
		}
		if err := core.CheckName(name); err != nil {
			n.refuse(endpoint, name, err)
			continue
		}
		if len(out) == core.MaxNames {
			n.refuse(endpoint, name, errors.New("too many names"))
			continue
		}
		out = append(out, name)
	}
	return out
}

func (n *Namer) refuse(endpoint, name string, err error) {
	n.mu.Lock()
	_, seen := n.refused[endpoint+" "+name]
	if len(n.refused) > 1000 { // bounded: an old refusal may be logged again
		n.refused = map[string]struct{}{}
	}
	n.refused[endpoint+" "+name] = struct{}{}
	n.mu.Unlock()
	if !seen {
		n.Logger.Warn("container name left out", "endpoint", short(endpoint), "name", name, "err", err)
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
