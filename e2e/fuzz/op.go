package fuzz

import (
	"fmt"
	"strings"
)

// Kind names an operation. The names are what --weights takes.
type Kind string

// The operations, as an admin or a user of the cluster would do them.
const (
	TenantCreate  Kind = "tenant-create"   // tenetctl tenant create T
	TenantRm      Kind = "tenant-rm"       // tenetctl tenant rm T
	NetCreate     Kind = "net-create"      // tenetctl network create T/N --subnet S
	NetRm         Kind = "net-rm"          // tenetctl network rm T/N
	HandNetCreate Kind = "hand-net-create" // docker network create -d tenet ... on some hosts
	HandNetRm     Kind = "hand-net-rm"     // docker network rm on the hosts that have it
	RunOne        Kind = "run"             // docker run -d, one container
	RunMany       Kind = "run-many"        // docker run -d, 2-5 containers at once on several hosts
	Burst         Kind = "burst"           // docker run -d, 20 containers at once across hosts
	Stop          Kind = "stop"            // docker stop
	Start         Kind = "start"           // docker start
	Restart       Kind = "restart"         // docker restart
	Remove        Kind = "rm"              // docker rm -f, one container
	RemoveMany    Kind = "rm-many"         // docker rm -f, several on each host at once
	Connect       Kind = "connect"         // docker network connect [--ip]
	Disconnect    Kind = "disconnect"      // docker network disconnect
	KillTenetd    Kind = "kill-tenetd"     // kill -9 tenetd, start it again
	RestartDocker Kind = "restart-docker"  // stop dockerd, start it again
	Cut           Kind = "cut"             // the host's underlay link down
	Heal          Kind = "heal"            // the host's underlay link up
	KillHost      Kind = "kill-host"       // the host dies for good
	RemoveHost    Kind = "host-remove"     // tenetctl host remove NAME, retried until the ring agrees
)

// Kinds lists every operation, in the order the generator weighs them.
var Kinds = []Kind{TenantCreate, TenantRm, NetCreate, NetRm, HandNetCreate, HandNetRm, RunOne, RunMany, Burst,
	Stop, Start, Restart, Remove, RemoveMany, Connect, Disconnect, KillTenetd, RestartDocker, Cut, Heal,
	KillHost, RemoveHost}

// Op is one step. Every field it needs is explicit, so a logged Op replays
// without the generator that made it.
type Op struct {
	Kind      Kind      `json:"kind"`
	Host      string    `json:"host,omitempty"` // where the command runs, or the host acted on
	Tenant    string    `json:"tenant,omitempty"`
	Network   string    `json:"network,omitempty"`
	Subnet    string    `json:"subnet,omitempty"`
	Internal  bool      `json:"internal,omitempty"`
	Hosts     []string  `json:"hosts,omitempty"` // hand-made networks: the engines, in order
	Container string    `json:"container,omitempty"`
	IP        string    `json:"ip,omitempty"`
	Runs      []RunSpec `json:"runs,omitempty"`   // run, run-many, burst; rm-many: name and host
	Target    string    `json:"target,omitempty"` // host-remove: the host removed
}

// RunSpec is one docker run.
type RunSpec struct {
	Name   string `json:"name"`
	Host   string `json:"host"`
	Net    string `json:"net"` // tenant/network
	IP     string `json:"ip,omitempty"`
	Policy bool   `json:"policy,omitempty"` // --restart unless-stopped
}

// Key is the tenant/network an op names.
func (o Op) Key() string { return o.Tenant + "/" + o.Network }

// HandName is the Docker name of a hand-made network: tenant-network, as the
// README's example does.
func HandName(tenant, network string) string { return tenant + "-" + network }

// String renders the op as the commands it runs, for the operation log.
func (o Op) String() string {
	switch o.Kind {
	case TenantCreate:
		return fmt.Sprintf("%s$ tenetctl tenant create %s", o.Host, o.Tenant)
	case TenantRm:
		return fmt.Sprintf("%s$ tenetctl tenant rm %s", o.Host, o.Tenant)
	case NetCreate:
		s := fmt.Sprintf("%s$ tenetctl network create %s --subnet %s", o.Host, o.Key(), o.Subnet)
		if o.Internal {
			s += " --internal"
		}
		return s
	case NetRm:
		return fmt.Sprintf("%s$ tenetctl network rm %s", o.Host, o.Key())
	case HandNetCreate:
		return fmt.Sprintf("on %s in turn$ docker network create -d tenet --ipam-driver tenet --ipam-opt tenant=%s -o tenant=%s -o network=%s --subnet %s %s",
			strings.Join(o.Hosts, ","), o.Tenant, o.Tenant, o.Network, o.Subnet, HandName(o.Tenant, o.Network))
	case HandNetRm:
		return fmt.Sprintf("on %s in turn$ docker network rm %s", strings.Join(o.Hosts, ","), HandName(o.Tenant, o.Network))
	case RunOne, RunMany, Burst:
		var parts []string
		for _, r := range o.Runs {
			parts = append(parts, r.String())
		}
		if len(parts) == 1 {
			return parts[0]
		}
		return fmt.Sprintf("%d at once: %s", len(parts), strings.Join(parts, " & "))
	case Stop, Start, Restart:
		return fmt.Sprintf("%s$ docker %s %s", o.Host, o.Kind, o.Container)
	case Remove:
		return fmt.Sprintf("%s$ docker rm -f %s", o.Host, o.Container)
	case RemoveMany:
		var parts []string
		for _, r := range o.Runs {
			parts = append(parts, r.Host+":"+r.Name)
		}
		return fmt.Sprintf("at once$ docker rm -f %s", strings.Join(parts, " "))
	case Connect:
		ip := ""
		if o.IP != "" {
			ip = " --ip " + o.IP
		}
		return fmt.Sprintf("%s$ docker network connect%s <%s> %s", o.Host, ip, o.Key(), o.Container)
	case Disconnect:
		return fmt.Sprintf("%s$ docker network disconnect <%s> %s", o.Host, o.Key(), o.Container)
	case KillTenetd:
		return fmt.Sprintf("%s$ kill -9 tenetd; start tenetd", o.Host)
	case RestartDocker:
		return fmt.Sprintf("%s$ stop dockerd; start dockerd", o.Host)
	case Cut:
		return fmt.Sprintf("cut %s off the underlay", o.Host)
	case Heal:
		return fmt.Sprintf("heal %s's underlay link", o.Host)
	case KillHost:
		return fmt.Sprintf("kill %s for good (processes and link)", o.Host)
	case RemoveHost:
		return fmt.Sprintf("%s$ tenetctl host remove %s", o.Host, o.Target)
	}
	return fmt.Sprintf("%s %+v", o.Kind, o.Runs)
}

func (r RunSpec) String() string {
	s := fmt.Sprintf("%s$ docker run -d --name %s --network <%s>", r.Host, r.Name, r.Net)
	if r.IP != "" {
		s += " --ip " + r.IP
	}
	if r.Policy {
		s += " --restart unless-stopped"
	}
	return s
}
