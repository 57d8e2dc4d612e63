package ipam

import (
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Config configures an IPAM instance. Start from DefaultConfig.
type Config struct {
	// Host is this host's name, exactly as the replication layer names the
	// writer of an entry.
	Host string
	// Seeds are the hosts that own every pool's space when the pool first
	// appears, split block by block (block i belongs to Seeds[i%len(Seeds)]).
	// It must be the same list on every host, like Weave's seed list: it is
	// what makes the first ownership of a block known everywhere without any
	// message. Other hosts obtain blocks by handover.
	Seeds []string
	// BlockBitsV4 and BlockBitsV6 are the prefix lengths of the address
	// blocks that are the unit of ownership (a pool smaller than a block is
	// one block). A block holds at most 65536 addresses.
	BlockBitsV4 int
	BlockBitsV6 int
	// DefaultTenant is the address space used when a request names none.
	DefaultTenant string
	// AnswerTimeout is how long a host short of space waits for one owner to
	// answer a handover request before it asks the next one.
	AnswerTimeout time.Duration
	// Store persists this host's allocation state; nil keeps it in memory
	// only.
	Store Store
	// Logger receives lifecycle and conflict logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with /26 IPv4 and /122 IPv6 blocks. Host and
// Seeds must still be set.
func DefaultConfig() Config {
	return Config{
		BlockBitsV4:   26,
		BlockBitsV6:   122,
		DefaultTenant: "default",
		AnswerTimeout: 2 * time.Second,
	}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	if err := validName(c.Host); err != nil {
		return fmt.Errorf("ipam: Host %q: %w", c.Host, err)
	}
	if len(c.Seeds) == 0 {
		return fmt.Errorf("ipam: Seeds: must name at least one host, the same list on every host")
	}
	for i, s := range c.Seeds {
		if err := validName(s); err != nil {
			return fmt.Errorf("ipam: Seeds[%d] %q: %w", i, s, err)
		}
	}
	if !slices.IsSorted(c.Seeds) || len(slices.Compact(slices.Clone(c.Seeds))) != len(c.Seeds) {
		return fmt.Errorf("ipam: Seeds %v: must be sorted and without duplicates", c.Seeds)
	}
	if c.BlockBitsV4 < 16 || c.BlockBitsV4 > 30 {
		return fmt.Errorf("ipam: BlockBitsV4 %d: must be 16-30", c.BlockBitsV4)
	}
	if c.BlockBitsV6 < 112 || c.BlockBitsV6 > 126 {
		return fmt.Errorf("ipam: BlockBitsV6 %d: must be 112-126", c.BlockBitsV6)
	}
	if err := validTenant(c.DefaultTenant); err != nil {
		return fmt.Errorf("ipam: DefaultTenant %q: %w", c.DefaultTenant, err)
	}
	if c.AnswerTimeout <= 0 {
		return fmt.Errorf("ipam: AnswerTimeout %v: must be positive", c.AnswerTimeout)
	}
	return nil
}

func validName(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("must be 1-253 bytes")
	}
	for _, r := range s {
		if r <= ' ' || r == '/' || r == '|' || r > '~' {
			return fmt.Errorf("must be printable ASCII without space, '/' or '|'")
		}
	}
	return nil
}
