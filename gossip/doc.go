// Package gossip keeps the cluster's shared state replicated on every host,
// with no central store: the networks, which endpoint lives on which host
// (with that host's VTEP and the endpoint's DNS names), which hosts have
// which network, and a generic key-value table (ipam keeps its block
// ownership there). Hosts form an encrypted, authenticated
// hashicorp/memberlist ring (AES-GCM cluster keys, rotatable without
// downtime); memberlist carries membership and failure detection, and the
// tables travel beside it on the same port in frames of their own.
//
// What it owns: the ring membership, the failure detector's tuning, the
// transport and wire format, and the tables. Each table entry belongs to
// the host that wrote it; only that host changes it, with Lamport
// versions, so every host ends in the same state whatever order messages
// arrive in. A write is stored, then sent by a sender goroutine straight to
// the hosts that keep it (batched, coalesced, sealed once for all of them);
// endpoints are kept, sent and repaired only among the hosts attached to
// their network. Repair compares digests and sends only what differs.
// Deletes are tombstones that every host drops at the same horizon,
// TombstoneTTL after the delete. The entries of a host that memberlist
// declares down are hidden (deleted for subscribers) and return if it comes
// back; they are dropped after Config.ReapDeadAfter. DESIGN.md beside this
// file has the state model, the protocol, the failure timeline, and the
// reasoning and measurements behind them (issue 12).
//
// What it never does: touch the kernel (no netlink, no namespaces), read
// flags or the environment, or decide policy such as which block to claim;
// the datapath, the host core and IPAM read its tables and consume its
// events.
//
// Concurrency: a Node is safe for concurrent use. Writes (Put, Delete,
// Attach, Detach, KV().Put) return once the change is stored and never wait
// on the network, so a caller may hold its own locks across them.
// Subscribers receive events on their own channel, which never blocks the
// node (events queue until read, at most one per entry). memberlist callbacks never call back into
// memberlist, and no lock of the package is held across a network call.
package gossip
