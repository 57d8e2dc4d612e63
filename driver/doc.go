// Package driver is Tenet's Docker front end. It answers Docker's remote
// NetworkDriver and IpamDriver protocols (as of Docker 20.10) on one unix
// socket, turning each call into a typed request to the host core
// (package core) or to IPAM (package ipam): decode, validate Docker's
// options, call, encode the answer or the error. It also realises the
// networks admins define with tenetctl (package registry) in the local
// engine, through the engine's API (Syncer), and learns the names of this
// host's containers there (Namer: the container's name, then its
// --network-alias list, per network; Docker tells a driver no names), which
// it records in the core. Neither ever calls the engine from inside a
// plugin call: the engine waits on the plugin while it creates an endpoint.
// A container's published ports (-p, -P) arrive with
// ProgramExternalConnectivity, for its gateway endpoint, and go to the core
// (PublishPorts); RevokeExternalConnectivity withdraws them.
//
// What it owns: Docker's wire types and options, the mapping from Docker's
// network IDs to the core's networks (the core stores the ID as the
// network's Ref), and the choice of Docker names for defined networks
// (rules.DockerName). What it never does: keep state of its own, touch the
// kernel, or talk to gossip.
//
// Concurrency: a Driver is safe for concurrent use and holds no lock; each
// plugin call runs on its own goroutine with a deadline
// (Config.RequestTimeout), which the core and IPAM check at their commit
// points, so a call Docker has given up on leaves nothing behind (but for
// a network the kernel was still building, kept a minute for Docker's
// retry: core.Config.AbandonedKeep).
package driver
