package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config configures one host's gossip node. Build it with DefaultConfig and
// override fields; New calls Validate.
//
// The failure-detection defaults are tuned for a LAN of up to a few hundred
// hosts so that a killed host's entries are hidden everywhere within about
// 5 s (see DESIGN.md, "Failure timeline"). Faster detection costs
// more probe traffic and more false suspicions on a loaded host; slower
// detection leaves stale endpoints in every FDB for longer.
type Config struct {
	// NodeName is this host's unique, stable name in the ring. A host
	// restarted with the same name takes over its earlier entries.
	NodeName string
	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	// BindPort 0 picks a free port (tests).
	BindAddr netip.Addr
	BindPort int
	// AdvertiseAddr is the address other hosts reach this one at; the zero
	// value means BindAddr. It must be a concrete address.
	AdvertiseAddr netip.Addr
	// VTEP is this host's underlay address for VXLAN; it is advertised in
	// the node's metadata and stamped on every endpoint it owns.
	VTEP netip.Addr
	// Seeds are "host[:port]" addresses joined at start and re-joined every
	// RejoinInterval while any of them is not an alive member.
	Seeds []string
	// PeersFile, if set, keeps the addresses of the ring's hosts across
	// restarts: the alive ones, and those down (not left) for less than
	// ReapDeadAfter, at most 256; rewritten when that changes, checked
	// every RejoinInterval, never while this host is alone. At start, when
	// no seed answers (or there are none), kept peers are joined one at a
	// time (up to four) until one answers; each rejoin round tries one
	// while fewer than half of them are alive members. So a host whose seeds are
	// down after a reboot, or a few hosts restarted together that found
	// only each other, still find the ring, which does not contact hosts
	// that left cleanly.
	PeersFile string
	// Keys are the cluster keys (16, 24 or 32 bytes, AES-GCM). Keys[0] is
	// the primary (encrypts); the others are accepted on receive. At least
	// one key is required: the ring is never run in plaintext.
	Keys [][]byte
	// Cluster labels the ring; it is authenticated with every message, so
	// two rings with the same key but different labels do not mix.
	Cluster string

	// ProbeInterval, ProbeTimeout, SuspicionMult and SuspicionMaxTimeoutMult
	// set memberlist's failure detector. A dead host is declared after
	// roughly ProbeInterval + ProbeTimeout + SuspicionMult ×
	// max(1, log10 n) × ProbeInterval (up to SuspicionMaxTimeoutMult times
	// that without confirmations from other hosts).
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval and GossipNodes set how fast membership news (suspect,
	// dead) spreads. Table changes do not depend on them: they are sent
	// directly to the hosts that keep them.
	GossipInterval time.Duration
	GossipNodes    int
	// PushPullInterval is how often memberlist exchanges the membership
	// with one random host (scaled up above 32 hosts). The tables ride only
	// the exchange of a join; anti-entropy repairs them (SyncInterval).
	PushPullInterval time.Duration
	// SyncInterval is how often a host compares each scope it keeps (the
	// global tables, and each network's endpoints) with one random host
	// that keeps it too, by digest, and pulls what differs (stretched like
	// PushPullInterval above 32 hosts). Losses are usually repaired within
	// a second by the writer's trailing digest; this round catches the
	// rest.
	SyncInterval time.Duration
	// RejoinInterval is how often seeds and recently failed peers that are
	// not alive members are joined again, so a long partition heals.
	RejoinInterval time.Duration
	// DeadNodeReclaimTime lets a host that was declared dead come back with
	// the same name at a new address after this long.
	DeadNodeReclaimTime time.Duration
	// TombstoneTTL is how long a deletion marker lives, counted from the
	// delete (its version is the writer's clock): every host drops it then
	// and refuses it after, so it is gone everywhere within TombstoneTTL
	// plus the clocks' skew. A copy of a deleted entry kept by a host cut
	// off for longer is ended by its owner when they meet again.
	TombstoneTTL time.Duration
	// ReapDeadAfter is how long the entries of a dead host stay hidden
	// (ready to return if it comes back) before they are dropped.
	ReapDeadAfter time.Duration
	// ReapInterval is how often tombstones and dead hosts' entries are
	// checked against the two bounds above.
	ReapInterval time.Duration

	// Logger receives lifecycle and dropped-message logs; required.
	Logger *slog.Logger

	// WrapTransport, if set, wraps the UDP/TCP transport (tests use it to
	// drop traffic between groups of nodes).
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// tuneMemberlist, if set, adjusts memberlist's config last (tests use
	// it to make memberlist forget dead peers quickly).
	tuneMemberlist func(*memberlist.Config)
}

// DefaultConfig returns a Config for a LAN, with the tuned failure detector:
// probes every 500 ms with 400 ms to answer, suspicion 2 × log10 n probe
// intervals. At 200 hosts in one process on 2 cores, 350/200 ms probes
// (with suspicion 3×) turned a burst of container starts into a storm of
// suspicions that did not end (thousands of false "down" a minute); these
// timings keep it at none and still hide a crashed host within 5 s at 50
// hosts (DetectionBound) and 4 s measured at 200 (gossip/DESIGN.md).
// NodeName, BindAddr, VTEP, Keys and Logger must still be set.
func DefaultConfig() Config {
	return Config{
		BindPort:                7946,
		Cluster:                 "tenet",
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            400 * time.Millisecond,
		SuspicionMult:           2,
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          100 * time.Millisecond,
		GossipNodes:             4,
		PushPullInterval:        15 * time.Second,
		SyncInterval:            15 * time.Second,
		RejoinInterval:          10 * time.Second,
		DeadNodeReclaimTime:     2 * time.Second,
		TombstoneTTL:            30 * time.Minute,
		ReapDeadAfter:           30 * time.Minute,
		ReapInterval:            10 * time.Second,
	}
}

// Validate reports the first field that is missing or out of range.
func (c *Config) Validate() error {
	switch {
	case c.NodeName == "":
		return errors.New("gossip: NodeName: must not be empty")
	case len(c.NodeName) > maxNameLen:
		return fmt.Errorf("gossip: NodeName %q: must be at most %d bytes", c.NodeName, maxNameLen)
	case !c.BindAddr.IsValid():
		return errors.New("gossip: BindAddr: must be set")
	case c.BindPort < 0 || c.BindPort > 65535:
		return fmt.Errorf("gossip: BindPort %d: must be 0-65535", c.BindPort)
	case c.AdvertiseAddr.IsValid() && c.AdvertiseAddr.IsUnspecified():
		return fmt.Errorf("gossip: AdvertiseAddr %s: must be a concrete address", c.AdvertiseAddr)
	case !c.AdvertiseAddr.IsValid() && c.BindAddr.IsUnspecified():
		return fmt.Errorf("gossip: AdvertiseAddr: must be set when BindAddr is %s", c.BindAddr)
	case !c.VTEP.IsValid() || c.VTEP.IsUnspecified():
		return errors.New("gossip: VTEP: must be a concrete address")
	case len(c.Keys) == 0:
		return errors.New("gossip: Keys: at least one cluster key is required (see GenerateKey)")
	case len(c.Cluster) > memberlist.LabelMaxSize:
		return fmt.Errorf("gossip: Cluster %q: must be at most %d bytes", c.Cluster, memberlist.LabelMaxSize)
	case c.ProbeInterval <= 0:
		return fmt.Errorf("gossip: ProbeInterval %s: must be positive", c.ProbeInterval)
	case c.ProbeTimeout <= 0 || c.ProbeTimeout >= c.ProbeInterval:
		return fmt.Errorf("gossip: ProbeTimeout %s: must be positive and below ProbeInterval %s", c.ProbeTimeout, c.ProbeInterval)
	case c.SuspicionMult < 1:
		return fmt.Errorf("gossip: SuspicionMult %d: must be at least 1", c.SuspicionMult)
	case c.SuspicionMaxTimeoutMult < 1:
		return fmt.Errorf("gossip: SuspicionMaxTimeoutMult %d: must be at least 1", c.SuspicionMaxTimeoutMult)
	case c.GossipInterval <= 0:
		return fmt.Errorf("gossip: GossipInterval %s: must be positive", c.GossipInterval)
	case c.GossipNodes < 1:
		return fmt.Errorf("gossip: GossipNodes %d: must be at least 1", c.GossipNodes)
	case c.PushPullInterval <= 0:
		return fmt.Errorf("gossip: PushPullInterval %s: must be positive", c.PushPullInterval)
	case c.SyncInterval <= 0:
		return fmt.Errorf("gossip: SyncInterval %s: must be positive", c.SyncInterval)
	case c.RejoinInterval <= 0:
		return fmt.Errorf("gossip: RejoinInterval %s: must be positive", c.RejoinInterval)
	case c.DeadNodeReclaimTime < 0:
		return fmt.Errorf("gossip: DeadNodeReclaimTime %s: must not be negative", c.DeadNodeReclaimTime)
	case c.TombstoneTTL <= 0:
		return fmt.Errorf("gossip: TombstoneTTL %s: must be positive", c.TombstoneTTL)
	case c.ReapDeadAfter <= 0:
		return fmt.Errorf("gossip: ReapDeadAfter %s: must be positive", c.ReapDeadAfter)
	case c.ReapInterval <= 0:
		return fmt.Errorf("gossip: ReapInterval %s: must be positive", c.ReapInterval)
	case c.Logger == nil:
		return errors.New("gossip: Logger: must be set")
	}
	for i, k := range c.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("gossip: Keys[%d]: %d bytes: must be 16, 24 or 32", i, n)
		}
	}
	return nil
}

// DetectionBound estimates the longest time, in a ring of n hosts, from a
// host's crash until every other host has declared it dead and hidden its
// entries, when no other host confirms the suspicion early: a probe
// interval for the probe to start, the probe timeout, the longest
// suspicion timeout, and a few gossip rounds to spread the verdict.
// Usually it is shorter: independent confirmations cut the suspicion
// timeout down to SuspicionMult × max(1, log10 n) × ProbeInterval.
func (c *Config) DetectionBound(n int) time.Duration {
	scale := 1.0
	if n > 10 {
		scale = math.Log10(float64(n))
	}
	suspicion := time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval))
	rounds := int(math.Ceil(math.Log2(float64(max(n, 2))))) + 1
	return c.ProbeInterval + c.ProbeTimeout + time.Duration(c.SuspicionMaxTimeoutMult)*suspicion +
		time.Duration(rounds)*c.GossipInterval
}
