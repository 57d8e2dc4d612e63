package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tenet-net/tenet/e2e"
)

// TestEncryptedNetworkRefusedWhereTheKernelCannotEncrypt: on a kernel
// without WireGuard (this machine's), an encrypted network is refused at
// creation with the reason, through Docker's plugin and through tenetctl,
// and nothing of it is left, in clear or otherwise; a clear network beside
// it works. Encrypted traffic itself is tested on the VMs (e2e/vm).
func TestEncryptedNetworkRefusedWhereTheKernelCannotEncrypt(t *testing.T) {
	c := e2e.NewCluster(t, 2)
	ctx := t.Context()
	h0 := c.Hosts[0]
	if _, err := h0.Run(ctx, "ip", "link", "add", "tnwgprobe", "type", "wireguard"); err == nil {
		_, _ = h0.Run(ctx, "ip", "link", "del", "tnwgprobe")
		t.Skip("this kernel has WireGuard: encrypted networks are tested on it by the VM suite (e2e/vm)")
	}
	c.StartTenetds(t)
	e := c.Engine(0)
	ipam := []string{"--ipam-driver", "tenet", "--ipam-opt", "tenant=acme", "-o", "tenant=acme", "-o", "network=secret", "--subnet", "10.5.0.0/24"}
	for _, opt := range []string{"encrypted", "encrypted=true"} {
		args := append(append([]string{"network", "create", "-d", "tenet", "-o", opt}, ipam...), "acme-secret")
		out, err := e.Docker(ctx, args...)
		if err == nil || !strings.Contains(out, "create network acme/secret: encrypted networks need WireGuard") ||
			!strings.Contains(out, "wireguard: not supported by this kernel") {
			t.Errorf("docker network create -o %s: err %v, output %q; want the refusal with its reason", opt, err, out)
		}
	}
	out, err := e.Docker(ctx, append(append([]string{"network", "create", "-d", "tenet", "-o", "encrypted=maybe"}, ipam...), "acme-secret")...)
	if err == nil || !strings.Contains(out, `option encrypted \"maybe\": want true or false`) && !strings.Contains(out, `option encrypted "maybe": want true or false`) {
		t.Errorf("docker network create -o encrypted=maybe: err %v, output %q", err, out)
	}
	if out, _ := e.Docker(ctx, "network", "ls", "--filter", "driver=tenet", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("refused networks left in the engine: %q", out)
	}
	// Nothing in the kernel either: no namespace of the tenant, no crypt
	// namespace, no WireGuard device.
	if out, err := h0.Run(ctx, "sh", "-c", "ls /run/netns; ip -br link"); err != nil || strings.Contains(out, "acme") ||
		strings.Contains(out, "_crypt") || strings.Contains(out, "tnwg") {
		t.Errorf("the refused network left something on %s: %v\n%s", h0.Name(), err, out)
	}
	// The same network in clear is created: the refused attempts gave
	// their pool back and left no setting behind.
	clear := append(append([]string{"network", "create", "-d", "tenet", "-o", "encrypted=false"}, ipam...), "acme-secret")
	if out, err := e.Docker(ctx, clear...); err != nil {
		t.Fatalf("the same network in clear after the refusals: %v %s", err, out)
	}

	// Through tenetctl: the definition is refused on the admin's host.
	ctl := func(h e2e.Host, args ...string) (string, error) {
		return h.Run(ctx, append([]string{c.Dir + "/tenetctl"}, args...)...)
	}
	if out, err := ctl(c.Hosts[1], "tenant", "create", "globex"); err != nil {
		t.Fatal(out)
	}
	out, err = ctl(c.Hosts[1], "network", "create", "globex/secret", "--subnet", "10.6.0.0/24", "--encrypted")
	if err == nil || !strings.Contains(out, "encrypted networks need WireGuard") || !strings.Contains(out, "wireguard: not supported by this kernel") {
		t.Errorf("tenetctl network create --encrypted: err %v, output %q; want the refusal with its reason", err, out)
	}
	if out, err := ctl(c.Hosts[0], "network", "ls"); err != nil || strings.Contains(out, "globex") {
		t.Errorf("tenetctl network ls after the refusal: %v\n%s", err, out)
	}
	// Defined in clear, it reaches every engine; the encrypted one never did.
	if out, err := ctl(c.Hosts[1], "network", "create", "globex/web", "--subnet", "10.6.0.0/24"); err != nil {
		t.Fatal(out)
	}
	for _, e := range c.Engines {
		e2e.Eventually(t, 20*time.Second, func() error {
			_, err := e.Docker(ctx, "network", "inspect", "globex.web")
			return err
		})
		if _, err := e.Docker(ctx, "network", "inspect", "globex.secret"); err == nil {
			t.Errorf("%s has the refused globex.secret", e.Host().Name())
		}
	}
	out, err = ctl(c.Hosts[0], "network", "inspect", "acme/secret")
	if err != nil || !strings.Contains(out, "egress") || strings.Contains(out, "encrypted") {
		t.Errorf("tenetctl network inspect acme/secret (made in clear): %v\n%s", err, out)
	}
}
