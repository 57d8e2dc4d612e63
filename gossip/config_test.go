package gossip

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func validConfig(t *testing.T) Config {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeName = "h0"
	cfg.BindAddr = netip.MustParseAddr("127.0.0.1")
	cfg.VTEP = netip.MustParseAddr("203.0.113.1")
	cfg.Keys = [][]byte{key}
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

func TestValidateNamesTheField(t *testing.T) {
	if err := func() *Config { c := validConfig(t); return &c }().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*Config)
	}{
		{"NodeName", func(c *Config) { c.NodeName = "" }},
		{"NodeName", func(c *Config) { c.NodeName = strings.Repeat("x", maxNameLen+1) }},
		{"BindAddr", func(c *Config) { c.BindAddr = netip.Addr{} }},
		{"BindPort 70000", func(c *Config) { c.BindPort = 70000 }},
		{"AdvertiseAddr", func(c *Config) { c.BindAddr = netip.IPv4Unspecified() }},
		{"AdvertiseAddr", func(c *Config) { c.AdvertiseAddr = netip.IPv6Unspecified() }},
		{"VTEP", func(c *Config) { c.VTEP = netip.Addr{} }},
		{"Keys", func(c *Config) { c.Keys = nil }},
		{"Keys[1]: 5 bytes", func(c *Config) { c.Keys = append(c.Keys, []byte("short")) }},
		{"ProbeTimeout", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }},
		{"SuspicionMult", func(c *Config) { c.SuspicionMult = 0 }},
		{"PushPullInterval", func(c *Config) { c.PushPullInterval = 0 }},
		{"TombstoneTTL", func(c *Config) { c.TombstoneTTL = -time.Second }},
		{"Logger", func(c *Config) { c.Logger = nil }},
	} {
		c := validConfig(t)
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "gossip: "+tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming %q", tc.field, err, tc.field)
		}
	}
}

func TestDefaultDetectionBound(t *testing.T) {
	c := DefaultConfig()
	// The target: a killed host hidden everywhere within 5 s in a
	// LAN of simulated hosts (the benchmark uses 50).
	if b := c.DetectionBound(50); b > 5*time.Second {
		t.Errorf("default DetectionBound(50) = %s, want at most 5s", b)
	}
}

func TestMemberlistLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := memberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, line := range []string{"[DEBUG] memberlist: a", "[WARN] memberlist: b", "[ERR] memberlist: c", "plain d"} {
		l.Print(line)
	}
	for _, want := range []string{"level=DEBUG msg=a source=memberlist", "level=WARN msg=b source=memberlist",
		"level=ERROR msg=c source=memberlist", "level=INFO msg=\"plain d\" source=memberlist"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log output lacks %q:\n%s", want, buf.String())
		}
	}
}
