// Package adminapi is the admin API between tenetctl and tenetd: the JSON
// types of every call, and a Client over tenetd's root-only unix socket.
// tenetd's server (package admin) answers with exactly these types.
//
// Calls (all JSON; errors are {"err": "..."} with a 4xx or 5xx status):
//
//	GET    /v1/status                    Status
//	GET    /v1/hosts                     []Host
//	POST   /v1/hosts/{name}/remove       Done
//	GET    /v1/tenants                   []Tenant
//	POST   /v1/tenants/{name}            Done
//	DELETE /v1/tenants/{name}            Done
//	GET    /v1/networks                  []Network   (every network this host knows of)
//	GET    /v1/networks/{tenant}/{name}  NetworkDetail
//	GET    /v1/definitions               []Definition (networks defined with tenetctl)
//	POST   /v1/definitions               Definition -> Done
//	DELETE /v1/definitions/{tenant}/{name} Done
//	GET    /v1/endpoints[?tenant=T&network=N&host=H]  []Endpoint
//	GET    /v1/diagnose                  Diagnosis
package adminapi

// Status summarises this host's view of the cluster.
type Status struct {
	Host           string   `json:"host"`
	VTEP           string   `json:"vtep"`
	HostsUp        int      `json:"hosts_up"`
	HostsDown      int      `json:"hosts_down"`
	Networks       int      `json:"networks"`
	LocalEndpoints int      `json:"local_endpoints"`
	Endpoints      int      `json:"endpoints"`
	KeyInUse       string   `json:"key_in_use,omitempty"` // fingerprint of the cluster key this host encrypts with
	Warnings       []string `json:"warnings,omitempty"`
	// Ring is the gossip ring's health as this host sees it.
	Ring Ring `json:"ring"`
	// Convergence summarises how long other hosts' endpoint changes took
	// to be programmed here, over the last Window.
	Convergence Convergence `json:"convergence"`
	// Datapath is the state of the core's datapath writer.
	Datapath Datapath `json:"datapath"`
}

// Ring is the gossip ring's health as this host sees it.
type Ring struct {
	// Health is "ok", "degraded" (some hosts are down) or "isolated"
	// (other hosts are known, none is reachable).
	Health     string            `json:"health"`
	Members    map[string]int    `json:"members,omitempty"` // hosts by state, as gossip reports them
	Sent       uint64            `json:"messages_sent"`
	Received   uint64            `json:"messages_received"`
	SendErrors uint64            `json:"send_errors"`
	Dropped    map[string]uint64 `json:"dropped,omitempty"` // refused messages and entries since start, by reason
}

// Convergence summarises convergence samples: from another host publishing
// an endpoint change to it being programmed in this host's kernel (as
// exact as the two hosts' clocks agree).
type Convergence struct {
	Window  string  `json:"window"` // what the figures cover, e.g. "1m0s"
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// Datapath is the state of the core's datapath writer.
type Datapath struct {
	Queued    int    `json:"queued"`               // changes waiting
	BusyMs    int64  `json:"busy_ms"`              // how long the pass under way has run
	LastError string `json:"last_error,omitempty"` // of the last pass, if it failed
	RetryAt   string `json:"retry_at,omitempty"`   // when a failed reconcile is retried (RFC 3339)
}

// Host is a host of the cluster as this host sees it.
type Host struct {
	Name     string `json:"name"`
	VTEP     string `json:"vtep"`
	State    string `json:"state"` // "up" or "down"
	Self     bool   `json:"self,omitempty"`
	LastSeen string `json:"last_seen"` // "now" while up, else when it went down (RFC 3339) or "unknown"
}

// Tenant is a tenant defined with tenetctl.
type Tenant struct {
	Tenant string `json:"tenant"`
	Gen    uint64 `json:"gen"`
	Origin string `json:"origin"` // the host where it was defined
}

// Network is a Tenet network this host knows of: defined with tenetctl,
// created here, or published by another host.
type Network struct {
	Tenant     string   `json:"tenant"`
	Name       string   `json:"name"`
	VNI        uint32   `json:"vni"`
	Subnet     string   `json:"subnet"`
	Gateway    string   `json:"gateway,omitempty"`
	Internal   bool     `json:"internal,omitempty"`
	MTU        int      `json:"mtu,omitempty"`
	Encrypted  bool     `json:"encrypted,omitempty"`   // its traffic between hosts goes through WireGuard
	Local      bool     `json:"local"`                 // present on this host
	DockerID   string   `json:"docker_id,omitempty"`   // this host's engine's ID for it
	DockerName string   `json:"docker_name,omitempty"` // the name tenetctl-defined networks get in every engine
	Defined    bool     `json:"defined,omitempty"`     // defined with tenetctl
	Hosts      []string `json:"hosts"`                 // hosts that have it
}

// NetworkDetail is one network with the hosts that have it.
type NetworkDetail struct {
	Network
	// MTU is the network's effective MTU here (Network.MTU is what was
	// asked for; 0 there means the underlay's less 50).
	EffectiveMTU int `json:"effective_mtu,omitempty"`
	// HostEndpoints lists the hosts that have the network, with their
	// endpoints on it. The counts are complete only where this host has
	// the network (EndpointsKnown): gossip sends a network's endpoints
	// only to the hosts that have it.
	HostEndpoints  []NetworkHost `json:"host_endpoints"`
	EndpointsKnown bool          `json:"endpoints_known"`
}

// NetworkHost is a host that has a network.
type NetworkHost struct {
	Host      string `json:"host"`
	State     string `json:"state"` // "up" or "down"
	Self      bool   `json:"self,omitempty"`
	Endpoints int    `json:"endpoints"`
}

// Definition is a network as defined with tenetctl network create.
type Definition struct {
	Tenant     string `json:"tenant"`
	Name       string `json:"name"`
	Subnet     string `json:"subnet"`
	VNI        uint32 `json:"vni,omitempty"`
	Internal   bool   `json:"internal,omitempty"`
	MTU        int    `json:"mtu,omitempty"`
	Encrypted  bool   `json:"encrypted,omitempty"`
	Gen        uint64 `json:"gen,omitempty"`
	Origin     string `json:"origin,omitempty"`
	DockerName string `json:"docker_name,omitempty"`
}

// Endpoint is a container endpoint somewhere in the cluster.
type Endpoint struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`    // the container's name, where known
	Aliases []string `json:"aliases,omitempty"` // its other names on the network
	Tenant  string   `json:"tenant"`
	Network string   `json:"network"` // tenant/name
	IP      string   `json:"ip"`
	MAC     string   `json:"mac"`
	Host    string   `json:"host"`
	VTEP    string   `json:"vtep"`
	// State is "up"; on this host "created" until Docker attaches the
	// endpoint to its container; "host-down" while a down host's endpoint
	// stays programmed in the grace period.
	State string `json:"state"`
	// Ports are its published ports as docker ps shows them
	// ("0.0.0.0:8080->80/tcp"); this host's endpoints only. Docker
	// cannot show a remote driver's ports.
	Ports []string `json:"ports,omitempty"`
}

// Diagnosis is what tenetctl diagnose reports of one host.
type Diagnosis struct {
	Host     string    `json:"host"`
	Findings []Finding `json:"findings"` // empty: nothing wrong found
}

// Finding is one thing wrong on a host.
type Finding struct {
	// Area is "kernel" (the datapath differs from what should be
	// programmed), "gossip" (what the ring holds of this host differs
	// from its state), "cluster" (hosts down, conflicting claims) or
	// "writer" (reconciles failing).
	Area string `json:"area"`
	// Problem is "missing", "stale", "differs", "conflict", "down",
	// "isolated" or "failing".
	Problem  string `json:"problem"`
	Object   string `json:"object"`
	Tenant   string `json:"tenant,omitempty"`
	Network  string `json:"network,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Host     string `json:"host,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

// Done answers a change: what was done to what.
type Done struct {
	Created string `json:"created,omitempty"`
	Removed string `json:"removed,omitempty"`
}

// ErrorBody is the body of every failed call.
type ErrorBody struct {
	Err string `json:"err"`
}
