package driver

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// Probe checks that the plugin at socket answers as Docker would find it:
// it connects and asks /Plugin.Activate, which must name NetworkDriver.
// For readiness checks; it never calls the core.
func Probe(ctx context.Context, socket string) error {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/Plugin.Activate", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("plugin socket %s: %w", socket, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "NetworkDriver") {
		return fmt.Errorf("plugin socket %s: Plugin.Activate answered %s %q", socket, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
