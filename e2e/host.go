package e2e

import (
	"context"
	"net/netip"
)

// Host is one machine of a test cluster. The namespace testbed implements it with
// NetnsHost; the same tests could drive real VMs through an SSH implementation, so
// the interface holds only what such a host can offer too.
type Host interface {
	// Name is the host's name in the cluster ("h0", "h1", ...).
	Name() string
	// Underlay is the host's address on the underlay network, with its prefix.
	Underlay() netip.Prefix
	// Dir is a scratch directory on the host that belongs to the testbed and is
	// removed with it.
	Dir() string
	// Run runs argv on the host and returns its combined output. A non-zero exit
	// is an error that quotes the command and the output.
	Run(ctx context.Context, argv ...string) (string, error)
	// StartDaemon starts a long-running process on the host. The process is
	// ended when the testbed goes down, whatever happens to the caller.
	StartDaemon(ctx context.Context, spec DaemonSpec) (Daemon, error)
}

// DaemonSpec describes a daemon to start on a host.
type DaemonSpec struct {
	Name string   // short name, used for its log file: Dir()/Name.log
	Argv []string // command and arguments, as seen on the host
}

// Daemon is a process started by Host.StartDaemon.
type Daemon interface {
	Name() string
	PID() int
	// LogPath is the host-side path of the file that receives stdout and stderr.
	LogPath() string
	// Stop asks the daemon to end (SIGTERM) and waits; past ctx's deadline it
	// kills it.
	Stop(ctx context.Context) error
	// Kill ends the daemon at once (SIGKILL), as a crash would, and waits.
	Kill(ctx context.Context) error
	// Done is closed when the daemon has exited.
	Done() <-chan struct{}
}
