// Package gossip keeps the cluster's shared state replicated on every host,
// with no central store: the networks, which endpoint lives on which host
// (with that host's VTEP), which host owns which IPAM address block, and
// which hosts have which network. Hosts form an encrypted, authenticated
// hashicorp/memberlist ring (AES-GCM cluster keys, rotatable without
// downtime).
//
// What it owns: the ring membership, the failure detector's tuning, the
// wire format, and the tables. Each table entry belongs to the host that
// wrote it; only that host changes it, with Lamport versions, so every host
// ends in the same state whatever order messages arrive in. Deletes are
// tombstones reaped after Config.TombstoneTTL. Changes are sent directly to
// the hosts that need them. Endpoints are kept, sent and repaired only
// among the hosts attached to their network (a per-network sync); the
// other tables are on every host and repaired by memberlist's push/pull.
// The entries of a host that memberlist declares dead are hidden (deleted
// for subscribers) and return if it comes back; they are dropped after
// Config.ReapDeadAfter. See ARCHITECTURE-gossip.md for the state model and
// the failure timeline.
//
// What it never does: touch the kernel (no netlink, no namespaces), read
// flags or the environment, or decide policy such as which block to claim;
// the datapath and IPAM consume its events.
//
// Concurrency: a Node is safe for concurrent use. Table writes return once
// the change is stored and handed to the network; subscribers receive
// events on their own channel, which never blocks the node (events queue
// until read). memberlist callbacks never call back into memberlist.
package gossip
