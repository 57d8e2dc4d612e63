// Package core is Tenet's host core: the one owner of this host's networks
// and endpoints, with no knowledge of Docker. Front ends (the Docker plugin
// protocol in package driver, the admin API, later a CNI plugin) turn their
// requests into typed specs (NetworkSpec, EndpointSpec) and call the core;
// the core validates them against the naming and address rules (package
// rules), feeds the datapath, persists this host's own state, and publishes
// it through gossip.
//
// What it owns: this host's networks and endpoints with their published
// ports (state.json in Config.StateDir, written atomically, and the
// changes since it in state.journal, one synced record each), the choice
// of host ports for ports published without one, and the single goroutine that
// writes the datapath. What it never does: speak Docker's protocol, keep a
// copy of other hosts' state (it reads the remote view from gossip each
// time it plans), touch the kernel itself (package overlay does), or hold a
// lock across a kernel, disk or network call.
//
// How a change reaches the kernel: every change (a call, or a gossip event
// about another host) marks a Scope — the tenants, networks, endpoints and
// remote entries it affects — and wakes the writer. The writer merges what
// is queued, builds the desired datapath state from the local state and
// gossip's view at that moment (desired.go, pure), and asks the datapath to
// reconcile only the scope, so the cost of a call does not grow with the
// rest of the host. A full reconcile runs at start-up, periodically for
// repair, and after a failure.
//
// Level-triggered, so giving up leaves nothing behind: a call that fails or
// whose deadline passes removes its object from the local state and marks
// its scope again; the writer then removes whatever it had built. Every
// call checks its deadline at its commit point (after the datapath and the
// state file hold the change, before it is published). One exception, for
// slow hosts: a network whose creation's deadline passed while the kernel
// built it stays in the datapath (not in the local state) for
// Config.AbandonedKeep, so that the front end's retry of the same network
// finds it built; removed at once, each retry started over and, where a
// network takes longer to build than a call may wait, none succeeded (seen
// on emulated VMs). A network that conflicts with a kept one replaces it.
//
// After a restart, other hosts' entries already in the kernel are adopted
// (kept as they are) for each network until gossip reports that network
// synced, so a restart withdraws nothing. Entries of a host gossip reports
// down stay programmed for Config.HiddenGrace.
//
// What it reports: Config.Observer hears of every writer pass (full or
// scoped, its duration) and of remote changes converging (programmed here,
// timed from the owner's gossip version); Writer says what the writer is
// doing; Started closes once the saved state is reconciled; Diagnose
// compares, between two passes, the desired state with the kernel (through
// the datapath's Diagnose) and the ring's copy of this host's entries with
// the local state, and names what differs.
//
// Concurrency: a Core is safe for concurrent use. One mutex guards the
// local state and is held only for memory operations.
package core
