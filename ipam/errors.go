package ipam

import (
	"errors"
	"fmt"
)

// Errors callers branch on with errors.Is. Every error this package returns
// wraps one of them and names the input and the rule it broke.
var (
	// ErrInvalid: malformed input (bad CIDR, bad address, bad tenant name).
	ErrInvalid = errors.New("invalid")
	// ErrOverlap: a subnet overlaps another pool of the same tenant.
	ErrOverlap = errors.New("overlaps an existing pool")
	// ErrNotInPool: an address lies outside the pool (or outside its ip-range).
	ErrNotInPool = errors.New("not in pool")
	// ErrUnknownPool: no pool with that ID on this host.
	ErrUnknownPool = errors.New("unknown pool")
	// ErrInUse: a requested address is already allocated or reserved.
	ErrInUse = errors.New("already in use")
	// ErrExhausted: no free address on this host and no host could hand over
	// a block.
	ErrExhausted = errors.New("exhausted")
	// ErrNotOwned: the address lies in a block this host does not own, so
	// this host cannot allocate or release it.
	ErrNotOwned = errors.New("block not owned by this host")
	// ErrUnavailable: the owner of the space needed did not answer in time
	// (unreachable or partitioned); retrying later may succeed.
	ErrUnavailable = errors.New("owner unavailable")
	// ErrRemoved: this host was removed from the cluster by an admin and may
	// not allocate any more.
	ErrRemoved = errors.New("host removed from the cluster")
	// ErrUnsafe: an admin action was refused because it could not be done
	// safely now (for example a host to remove is still alive).
	ErrUnsafe = errors.New("refused: unsafe")
)

// kindError reads as its message alone but matches its kind with
// errors.Is, so messages do not end in a repeated sentinel text.
type kindError struct {
	msg   string
	kinds []error // the sentinel, and a cause wrapped with %w if any
}

func (e *kindError) Error() string   { return e.msg }
func (e *kindError) Unwrap() []error { return e.kinds }

// kindErrorf formats like fmt.Errorf (a %w operand stays matchable) and
// makes the result match kind.
func kindErrorf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	kinds := []error{kind}
	if u := errors.Unwrap(err); u != nil {
		kinds = append(kinds, u)
	}
	return &kindError{msg: err.Error(), kinds: kinds}
}
