// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)) without cgo: each state is one datagram to the unix socket
// systemd names in $NOTIFY_SOCKET (a path, or an abstract name written
// with a leading '@'). With Type=notify, READY=1 tells systemd the service
// is up, so units ordered after it (docker.service) start then; with
// WatchdogSec=, WATCHDOG=1 must come at least that often or systemd
// restarts the service.
//
// It reads no environment itself (cmd/tenetd passes $NOTIFY_SOCKET and the
// watchdog variables). A Notifier is safe for concurrent use.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends states to systemd; the zero value (no socket) sends
// nothing.
type Notifier struct {
	addr string
}

// New returns a Notifier for the socket in $NOTIFY_SOCKET (socket); an
// empty socket gives one that sends nothing.
func New(socket string) *Notifier {
	if strings.HasPrefix(socket, "@") {
		socket = "\x00" + socket[1:]
	}
	return &Notifier{addr: socket}
}

// Enabled says whether systemd listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != "" }

// Notify sends states, such as "READY=1", "STATUS=joining the ring",
// "WATCHDOG=1" or "STOPPING=1", in one datagram; a no-op when not
// Enabled.
func (n *Notifier) Notify(states ...string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// WatchdogInterval is how often to send WATCHDOG=1, from $WATCHDOG_USEC
// and $WATCHDOG_PID (usec, pid) for the process pid: half the timeout
// systemd set, or 0 when it set none or set it for another process.
func WatchdogInterval(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil {
			return 0, fmt.Errorf("WATCHDOG_PID %q: not a number", pid)
		}
		if p != self {
			return 0, nil
		}
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return 0, fmt.Errorf("WATCHDOG_USEC %q: must be a positive number of microseconds", usec)
	}
	return time.Duration(us) * time.Microsecond / 2, nil
}

// Watchdog sends WATCHDOG=1 every interval while healthy says so, until
// ctx is done. When healthy fails, it logs why and sends nothing, so that
// systemd restarts the service once its watchdog timeout passes.
func (n *Notifier) Watchdog(ctx context.Context, every time.Duration, healthy func(context.Context) error, log *slog.Logger) {
	if !n.Enabled() || every <= 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := healthy(ctx); err != nil {
			log.Error("unhealthy: not feeding systemd's watchdog", "err", err)
			continue
		}
		if err := n.Notify("WATCHDOG=1"); err != nil {
			log.Warn("feed systemd's watchdog", "err", err)
		}
	}
}
