// Package driver answers Docker's remote NetworkDriver and IpamDriver
// protocols (as of Docker 20.10) on one unix socket: it decodes and
// validates each request into a typed value before any side effect, keeps
// this host's networks and endpoints (state.json), publishes them through
// gossip, follows other hosts' changes, and reconciles the overlay datapath
// with the whole desired state after every change. IPAM calls go to package
// ipam. It also serves the admin API tenetctl uses, and keeps the registry
// of admin-defined tenants and networks, creating their Docker networks in
// the local engine.
//
// It never touches the kernel itself (package overlay does). Driver is safe
// for concurrent use: plugin calls and cluster events are applied under one
// mutex; each plugin call is answered within Config.RequestTimeout, and one
// whose deadline passed is rolled back rather than committed.
package driver
