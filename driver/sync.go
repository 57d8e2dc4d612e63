package driver

// Realising the registry's networks in the local engine: every host creates
// the Docker network of every network admins defined, and removes those of
// removed definitions. An engine network realises a definition when its
// options name the same tenant and network, whatever its name, so a
// network is never removed or recreated because of a name, and a name
// taken by another network is reported, never fought over.

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/tenet-net/tenet/internal/registry"
)

// labelDefined marks the engine networks the syncer created, with the
// network's key: only those are ever removed by it.
const labelDefined = "net.tenet.defined"

// Syncer keeps the local engine's networks in line with the registry.
type Syncer struct {
	Registry *registry.Registry
	Engine   *Engine
	Logger   *slog.Logger
	// Interval between rounds when nothing asks for one (3 s).
	Interval time.Duration

	kick chan struct{}
	once sync.Once

	mu       sync.Mutex        // guards reported
	reported map[string]string // key -> last problem logged, so each is logged once
}

func (s *Syncer) init() {
	s.once.Do(func() {
		s.kick = make(chan struct{}, 1)
		s.reported = map[string]string{}
		if s.Interval == 0 {
			s.Interval = 3 * time.Second
		}
	})
}

// Kick asks for a round now.
func (s *Syncer) Kick() {
	s.init()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run syncs on every kick and every Interval until ctx is done.
func (s *Syncer) Run(ctx context.Context) error {
	s.init()
	tick := time.NewTicker(s.Interval)
	defer tick.Stop()
	for {
		s.Registry.Sync()
		s.syncEngine(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-tick.C:
		}
	}
}

// realises says whether engine network n is definition d's.
func realises(n EngineNetwork, d registry.Definition) bool {
	return n.Options[OptTenant] == d.Tenant && n.Options[OptNetwork] == d.Name
}

// current says whether n matches d's subnet, VNI and encryption (else it
// is a stale realisation of an earlier definition of the same key).
func current(n EngineNetwork, d registry.Definition) bool {
	subnet := ""
	if len(n.IPAM.Config) == 1 {
		subnet = n.IPAM.Config[0].Subnet
	}
	enc := false
	if v, ok := n.Options[OptEncrypted]; ok {
		enc, _ = ParseEncrypted(v)
	}
	return subnet == d.Subnet && n.Options[OptVNI] == strconv.FormatUint(uint64(d.VNI), 10) && enc == d.Encrypted
}

func (s *Syncer) report(key, problem string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reported[key] == problem {
		return
	}
	s.reported[key] = problem
	if problem != "" {
		s.Logger.Warn("cannot realise a defined network in this engine", "network", key, "err", problem)
	}
}

func (s *Syncer) syncEngine(ctx context.Context) {
	nets, err := s.Engine.Networks(ctx)
	if err != nil {
		s.report("", err.Error())
		return
	}
	s.report("", "")
	for _, d := range s.Registry.Winners() {
		if d.Name == "" {
			continue
		}
		key := d.NetworkKey()
		var mine []EngineNetwork
		for _, n := range nets {
			if realises(n, d) {
				mine = append(mine, n)
			}
		}
		if d.Removed {
			for _, n := range mine {
				if n.Labels[labelDefined] != key {
					continue // made by hand: not the registry's to remove
				}
				if err := s.Engine.RemoveNetwork(ctx, n.ID); err != nil {
					s.report(key, err.Error())
					continue
				}
				s.Logger.Info("removed defined network from the engine", "network", key, "docker_name", n.Name)
			}
			continue
		}
		ok := false
		for _, n := range mine {
			if current(n, d) {
				ok = true
				continue
			}
			if n.Labels[labelDefined] == key && len(n.Containers) == 0 {
				// An earlier definition of the same key: replace it.
				if err := s.Engine.RemoveNetwork(ctx, n.ID); err != nil {
					s.report(key, err.Error())
				}
			}
		}
		if ok {
			s.report(key, "")
			continue
		}
		if err := s.checkName(ctx, d); err != nil {
			s.report(key, err.Error())
			continue
		}
		if err := s.Engine.CreateNetwork(ctx, createRequest(d)); err != nil {
			s.report(key, err.Error())
			continue
		}
		s.report(key, "")
		s.Logger.Info("created defined network in the engine", "network", key, "docker_name", d.DockerName())
	}
}

// checkName refuses a definition whose Docker name another network of this
// engine already has.
func (s *Syncer) checkName(ctx context.Context, d registry.Definition) error {
	n, ok, err := s.Engine.NetworkByName(ctx, d.DockerName())
	if err != nil || !ok || realises(n, d) {
		return err
	}
	if n.Driver != PluginName {
		return fmt.Errorf("docker network %s already exists here (driver %s)", d.DockerName(), n.Driver)
	}
	return fmt.Errorf("docker network %s already exists here for tenant %q network %q", d.DockerName(), n.Options[OptTenant], n.Options[OptNetwork])
}

// CheckRealizable is registry.Registry.CheckRealizable for this engine.
func (s *Syncer) CheckRealizable(d registry.Definition) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.checkName(ctx, d)
}

func createRequest(d registry.Definition) map[string]any {
	opts := map[string]string{OptTenant: d.Tenant, OptNetwork: d.Name, OptVNI: strconv.FormatUint(uint64(d.VNI), 10)}
	if d.MTU != 0 {
		opts[OptMTU] = strconv.Itoa(d.MTU)
	}
	if d.Encrypted {
		opts[OptEncrypted] = "true"
	}
	return map[string]any{
		"Name": d.DockerName(), "Driver": PluginName, "CheckDuplicate": true, "Internal": d.Internal,
		"Options": opts, "Labels": map[string]string{labelDefined: d.NetworkKey()},
		"IPAM": map[string]any{"Driver": PluginName, "Options": map[string]string{"tenant": d.Tenant},
			"Config": []map[string]string{{"Subnet": d.Subnet}}},
	}
}
