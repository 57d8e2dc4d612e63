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
//	GET    /v1/definitions               []Definition (networks defined with tenetctl)
//	POST   /v1/definitions               Definition -> Done
//	DELETE /v1/definitions/{tenant}/{name} Done
//	GET    /v1/endpoints                 []Endpoint
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
	State   string   `json:"state"` // "up", or "host-down" while kept programmed in the grace period
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
