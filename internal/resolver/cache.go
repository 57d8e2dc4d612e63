package resolver

import (
	"context"
	"sync"

	"github.com/tenet-net/tenet/gossip"
)

// remoteCache keeps, per network, the names of other hosts' endpoints as
// gossip last had them, so that a query costs a map lookup instead of
// decoding every endpoint of the network (a flood of queries on a network
// of 10,000 endpoints would otherwise keep tenetd busy). Gossip's events
// drop a network's entry whenever any endpoint of it changes; while no
// subscription runs, nothing is kept.
type remoteCache struct {
	mu    sync.Mutex // guards the fields below
	live  bool
	gen   map[string]uint64 // bumped by every change of the network
	byNet map[string]*Index
	// changed gets a value (if it has none) at every drop.
	changed chan struct{}
}

func newRemoteCache() *remoteCache {
	return &remoteCache{gen: map[string]uint64{}, byNet: map[string]*Index{}, changed: make(chan struct{}, 1)}
}

func (c *remoteCache) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// get returns network's index, from the cache or read with read (and
// kept, unless the network changed meanwhile).
func (c *remoteCache) get(network string, read func() *Index) *Index {
	c.mu.Lock()
	recs, ok := c.byNet[network]
	gen, live := c.gen[network], c.live
	c.mu.Unlock()
	if ok {
		return recs
	}
	recs = read()
	if live {
		c.mu.Lock()
		if c.live && c.gen[network] == gen {
			c.byNet[network] = recs
		}
		c.mu.Unlock()
	}
	return recs
}

func (c *remoteCache) invalidate(network string) {
	c.mu.Lock()
	c.gen[network]++
	delete(c.byNet, network)
	c.mu.Unlock()
	c.signal()
}

func (c *remoteCache) setLive(live bool) {
	c.mu.Lock()
	c.live = live
	c.byNet = map[string]*Index{}
	for k := range c.gen {
		c.gen[k]++
	}
	c.mu.Unlock()
	c.signal()
}

// follow invalidates networks as gossip's endpoints change, until ctx
// ends or the stream does.
func (c *remoteCache) follow(ctx context.Context, subscribe func(int) (<-chan gossip.Event, func())) {
	events, cancel := subscribe(1024)
	defer cancel()
	c.setLive(true)
	defer c.setLive(false)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Table != gossip.TableEndpoints {
				continue
			}
			if ev.Endpoint != nil && ev.Endpoint.Network != "" {
				c.invalidate(ev.Endpoint.Network)
			} else {
				c.setLive(true) // an endpoint of an unknown network: drop everything
			}
		}
	}
}
