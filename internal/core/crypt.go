package core

// Encrypted networks (overlay/crypt.go has the datapath). The core owns
// this host's WireGuard key pair: made when the first encrypted network
// needs it, kept in the kernel only (the datapath's device holds it; a
// restarted core reads it back, a rebooted host makes a new one, so the
// static key changes at every boot), and its public half published in
// gossip's key-value table (package crypt), where every host reads its
// peers' keys when it plans. WireGuard itself derives the keys that encrypt
// traffic, anew every two minutes.
//
// Which hosts are WireGuard peers: the hosts that share an encrypted network
// with this one (attachments and remote endpoints), each with the key it
// published. After a restart the peers the kernel holds are kept, like the
// remote entries, until gossip has had SyncWait to deliver their keys.

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tenet-net/tenet/gossip"
	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/overlay"
)

// Crypter is implemented by datapaths that can encrypt networks
// (OverlayDatapath).
type Crypter interface {
	// CryptSupport is nil if the kernel can encrypt, else why not (an
	// error wrapping overlay.ErrNotSupported).
	CryptSupport() error
	// CryptPort is the UDP port this host's encrypted traffic arrives on.
	CryptPort() uint16
	// ObserveCrypt reads the key and peers the kernel holds from an
	// earlier run; ok is false if it holds none.
	ObserveCrypt(ctx context.Context) (key overlay.PrivateKey, peers []overlay.CryptPeer, ok bool, err error)
}

// errNoCrypter answers for a datapath that cannot encrypt at all.
var errNoCrypter = fmt.Errorf("this datapath cannot encrypt: %w", overlay.ErrNotSupported)

// CryptSupport says whether this host can carry encrypted networks: nil,
// or why not (wrapping overlay.ErrNotSupported).
func (c *Core) CryptSupport() error {
	cr, ok := c.dp.(Crypter)
	if !ok {
		return errNoCrypter
	}
	return cr.CryptSupport()
}

// MaxMTUFor is the largest MTU of a network, encrypted or not (0: unknown).
func (c *Core) MaxMTUFor(encrypted bool) (int, error) {
	m, err := c.dp.MaxMTU()
	if err != nil || m == 0 || !encrypted {
		return m, err
	}
	return overlay.EncryptedMaxMTU(m, c.cfg.VTEP), nil
}

// ClusterKV reads a Cluster's key-value table for package crypt.
type ClusterKV struct{ Cluster Cluster }

// List lists the entries under prefix.
func (k ClusterKV) List(prefix string) []gossip.KVEntry { return k.Cluster.KV(prefix) }

// checkCrypt refuses a network whose encryption differs from what another
// host has for it (read from gossip; called without the lock).
func (c *Core) checkCrypt(spec NetworkSpec) error {
	if host, theirs := crypt.Conflict(ClusterKV{c.cl}, spec.Key(), c.cfg.Host, spec.Encrypted); host != "" {
		return fmt.Errorf("%s here, but host %s has it %s: a network is encrypted on every host or on none",
			crypt.Word(spec.Encrypted), host, crypt.Word(theirs))
	}
	return nil
}

// ensureKey makes this host's key if it has none.
func (c *Core) ensureKey() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.key.IsZero() {
		return nil
	}
	k, err := overlay.GeneratePrivateKey()
	if err != nil {
		return err
	}
	c.key = k
	c.log.Info("made this host's wireguard key", "public_key", k.Public().String())
	return nil
}

// hasEncryptedLocked says whether any network the datapath holds (local
// or kept) is encrypted.
func (c *Core) hasEncryptedLocked() bool {
	enc := false
	c.datapathNetsLocked(func(_ string, n *Network) { enc = enc || n.Encrypted })
	return enc
}

// publishCrypt publishes whether this host has network n encrypted and,
// for an encrypted one, this host's public key (if not yet published).
func (c *Core) publishCrypt(n Network) {
	if err := c.cl.PutKV(crypt.NetworkKey(n.Key()), crypt.EncodeNetwork(n.Encrypted)); err != nil {
		c.log.Warn("publish network encryption", "network", n.Key(), "err", err)
	}
	if n.Encrypted {
		c.publishKey()
	}
}

// publishKey publishes this host's public key, port and share, once per
// key and share.
func (c *Core) publishKey() {
	cr, ok := c.dp.(Crypter)
	c.mu.Lock()
	key, share, done := c.key, c.share, c.wgPublished
	c.mu.Unlock()
	if !ok || key.IsZero() {
		return
	}
	id := crypt.Host{Port: cr.CryptPort(), Key: key.Public(), Share: share}
	if id == done {
		return
	}
	if err := c.cl.PutKV(crypt.HostKey, crypt.EncodeHost(id)); err != nil {
		c.log.Warn("publish this host's wireguard key", "err", err)
		return
	}
	c.mu.Lock()
	c.wgPublished = id
	c.mu.Unlock()
	if id.Key != done.Key {
		c.log.Info("published this host's wireguard key", "public_key", id.Key.String())
	}
}

// rotateShare replaces this host's share of the preshared keys, and so
// every preshared key it has with its peers: published first, then set in
// the kernel. The sessions in use keep their keys; WireGuard uses the new
// preshared key at each peer's next handshake (every two minutes), by
// which time the peer has the new share from gossip. A peer that has not
// yet (a handshake in between) fails that handshake and WireGuard retries
// it every 5 s while the old session carries traffic, for up to a minute
// more. Nothing is done while this host has no encrypted network.
func (c *Core) rotateShare() {
	s, err := crypt.NewShare()
	if err != nil {
		c.log.Error("rotate the wireguard preshared keys", "err", err)
		return
	}
	c.mu.Lock()
	if !c.hasEncryptedLocked() || c.key.IsZero() {
		c.mu.Unlock()
		return
	}
	c.share = s
	c.mu.Unlock()
	c.publishKey()
	c.log.Info("rotated the wireguard preshared keys with this host's peers")
	c.submitAsync(Scope{Crypt: true}, nil)
}

// adoptCrypt keeps the key and peers the kernel holds from an earlier run,
// and makes a key if a saved network is encrypted and there is none.
func (c *Core) adoptCrypt(ctx context.Context) {
	if cr, ok := c.dp.(Crypter); ok {
		key, peers, found, err := cr.ObserveCrypt(ctx)
		switch {
		case err != nil:
			c.log.Warn("read the wireguard key and peers the kernel holds; a new key is made if needed", "err", err)
		case found:
			c.mu.Lock()
			c.key, c.adoptedPeers = key, peers
			c.mu.Unlock()
			c.log.Info("keeping the wireguard key and peers found in the kernel", "public_key", key.Public().String(), "peers", len(peers))
		}
	}
	c.mu.Lock()
	need := c.hasEncryptedLocked()
	c.mu.Unlock()
	if need {
		if err := c.ensureKey(); err != nil {
			c.log.Error("make this host's wireguard key", "err", err)
		}
	}
}

// cryptPeersOf lists the WireGuard peers of this host: hostOf maps the
// VTEP of every other host that shares an encrypted network with this one
// to its name ("" when only the kernel knew it: an adopted flood entry);
// each gets the key it published, with the preshared key of its share and
// this host's (self, share), or, until gossip has it, the key and
// preshared key the kernel held at start. Hosts with no known key are left
// out (nothing can be sent to them yet), and so is a second host claiming a
// key already taken. Pure.
func cryptPeersOf(self string, share crypt.Share, hostOf map[netip.Addr]string, keys map[string]crypt.Host, adopted []overlay.CryptPeer) []overlay.CryptPeer {
	byVTEP := map[netip.Addr]overlay.CryptPeer{}
	for _, p := range adopted {
		byVTEP[p.VTEP] = p
	}
	vteps := make([]netip.Addr, 0, len(hostOf))
	for v := range hostOf {
		vteps = append(vteps, v)
	}
	slices.SortFunc(vteps, netip.Addr.Compare)
	var out []overlay.CryptPeer
	taken := map[overlay.PublicKey]bool{}
	for _, vtep := range vteps {
		p, ok := overlay.CryptPeer{}, false
		if k, found := keys[hostOf[vtep]]; found && hostOf[vtep] != "" {
			p, ok = overlay.CryptPeer{VTEP: vtep, Port: k.Port, Key: k.Key, PSK: crypt.PresharedKey(self, share, hostOf[vtep], k.Share)}, true
		} else if a, found := byVTEP[vtep]; found {
			p, ok = a, true
		}
		if !ok || taken[p.Key] {
			continue
		}
		taken[p.Key] = true
		out = append(out, p)
	}
	return out
}
