package fuzz

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// What the cluster shows, read after each step through user-visible
// surfaces only: the docker CLI of each live engine and tenetctl --json on
// each host.

// Obs is one observation of the cluster.
type Obs struct {
	Engines map[string]*EngineObs // live hosts
	Ctl     map[string]*CtlObs    // hosts whose tenetd was asked
}

// EngineObs is what one engine shows.
type EngineObs struct {
	Ctrs map[string]CtrObs // by name
	Nets map[string]NetObs // tenet networks, by Docker name
}

// CtrObs is one container as docker inspect shows it.
type CtrObs struct {
	Running bool
	PID     int
	Atts    map[string]AttObs // by Docker network name
}

// AttObs is one of a container's networks.
type AttObs struct{ IP, MAC, Fixed string }

// NetObs is one tenet network as docker network inspect shows it.
type NetObs struct{ Tenant, Network, Subnet string }

// Key is the network's tenant/name.
func (n NetObs) Key() string { return n.Tenant + "/" + n.Network }

// CtlObs is what tenetctl --json lists on one host: the fields the lead
// keeps stable.
type CtlObs struct {
	Tenants []struct {
		Tenant string `json:"tenant"`
	}
	Networks []struct {
		Tenant string   `json:"tenant"`
		Name   string   `json:"name"`
		VNI    uint32   `json:"vni"`
		Subnet string   `json:"subnet"`
		Hosts  []string `json:"hosts"`
	}
	Endpoints []struct {
		ID      string `json:"id"`
		Network string `json:"network"`
		IP      string `json:"ip"`
		MAC     string `json:"mac"`
		Host    string `json:"host"`
		State   string `json:"state"`
	}
	Hosts []struct {
		Name  string `json:"name"`
		VTEP  string `json:"vtep"`
		State string `json:"state"`
	}
	Err string // a listing that failed or did not parse
}

// engineScript prints a host's containers and tenet networks for
// parseEngine; docker is the CLI command line for the engine.
func engineScript(docker string) string {
	return docker + ` ps -aq --no-trunc > /tmp/.fuzz-ids.$$
echo @@containers
if [ -s /tmp/.fuzz-ids.$$ ]; then ` + docker + ` inspect -f '{{.Name}}|{{.State.Running}}|{{.State.Pid}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}={{$v.MacAddress}}={{with $v.IPAMConfig}}{{.IPv4Address}}{{end}};{{end}}' $(cat /tmp/.fuzz-ids.$$) || echo @@error; fi
rm -f /tmp/.fuzz-ids.$$
echo @@networks
ids=$(` + docker + ` network ls -q --filter driver=tenet) || echo @@error
if [ -n "$ids" ]; then ` + docker + ` network inspect -f '{{.Name}}|{{index .Options "tenant"}}|{{index .Options "network"}}|{{range .IPAM.Config}}{{.Subnet}}{{end}}' $ids || echo @@error; fi
`
}

func parseEngine(out string) (*EngineObs, error) {
	e := &EngineObs{Ctrs: map[string]CtrObs{}, Nets: map[string]NetObs{}}
	section := ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			continue
		case line == "@@error":
			return nil, fmt.Errorf("docker failed: %s", oneLine(out))
		case strings.HasPrefix(line, "@@"):
			section = line
			continue
		}
		f := strings.Split(line, "|")
		switch section {
		case "@@containers":
			if len(f) != 4 {
				return nil, fmt.Errorf("docker inspect line %q", line)
			}
			pid, _ := strconv.Atoi(f[2])
			c := CtrObs{Running: f[1] == "true", PID: pid, Atts: map[string]AttObs{}}
			for _, a := range strings.Split(f[3], ";") {
				if a == "" {
					continue
				}
				p := strings.Split(a, "=")
				if len(p) != 4 {
					return nil, fmt.Errorf("docker inspect networks %q", a)
				}
				c.Atts[p[0]] = AttObs{IP: p[1], MAC: p[2], Fixed: p[3]}
			}
			e.Ctrs[strings.TrimPrefix(f[0], "/")] = c
		case "@@networks":
			if len(f) != 4 {
				return nil, fmt.Errorf("docker network inspect line %q", line)
			}
			e.Nets[f[0]] = NetObs{Tenant: f[1], Network: f[2], Subnet: f[3]}
		default:
			return nil, fmt.Errorf("unexpected output %q", line)
		}
	}
	return e, nil
}

// ctlScript prints tenetctl's four listings for parseCtl.
func ctlScript(tenetctl string) string {
	var b strings.Builder
	for _, l := range []string{"tenant", "network", "endpoint", "host"} {
		fmt.Fprintf(&b, "echo @@%s; %s %s ls --json || echo @@error\necho\n", l, tenetctl, l)
	}
	return b.String()
}

func parseCtl(out string) *CtlObs {
	c := &CtlObs{}
	sections := map[string]string{}
	cur := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "@@") {
			cur = strings.TrimSpace(line)
			if cur == "@@error" {
				c.Err = "tenetctl failed: " + oneLine(out)
				return c
			}
			continue
		}
		sections[cur] += line + "\n"
	}
	for name, dst := range map[string]any{"@@tenant": &c.Tenants, "@@network": &c.Networks, "@@endpoint": &c.Endpoints, "@@host": &c.Hosts} {
		if err := json.Unmarshal([]byte(sections[name]), dst); err != nil {
			c.Err = fmt.Sprintf("tenetctl %s ls --json: %v: %s", strings.TrimPrefix(name, "@@"), err, oneLine(sections[name]))
			return c
		}
	}
	return c
}
