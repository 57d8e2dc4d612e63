package fuzz

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The mix of operations: relative weights of each kind, and the percentages
// that shape names, subnets and addresses.

// Weights holds the relative weight of each Kind, plus percentages:
//
//	collide  % of new network names drawn to give a Docker name an existing network has
//	invalid  % of names, subnets and targets drawn invalid (the model expects a refusal)
//	overlap  % of subnets drawn to overlap a network of the same tenant
//	small    % of subnets smaller than /24 (/26, /27, /28)
//	fixed    % of containers started or connected with --ip
//	policy   % of containers started with --restart unless-stopped
//	internal % of tenetctl networks made --internal
type Weights map[string]float64

var percentWeights = []string{"collide", "invalid", "overlap", "small", "fixed", "policy", "internal"}

// DefaultWeights is the mix CI runs.
func DefaultWeights() Weights {
	return Weights{
		string(TenantCreate): 4, string(TenantRm): 1, string(NetCreate): 5, string(NetRm): 2,
		string(HandNetCreate): 3, string(HandNetRm): 1,
		string(RunOne): 10, string(RunMany): 4, string(Burst): 1,
		string(Stop): 3, string(Start): 4, string(Restart): 6, string(Remove): 4, string(RemoveMany): 1,
		string(Connect): 3, string(Disconnect): 2,
		string(KillTenetd): 2, string(RestartDocker): 2, string(Cut): 1, string(Heal): 1,
		string(KillHost): 0.5, string(RemoveHost): 1,
		"collide": 50, "invalid": 5, "overlap": 5, "small": 15, "fixed": 30, "policy": 30, "internal": 10,
	}
}

// ParseWeights applies "name=value,..." to the default weights.
func ParseWeights(s string) (Weights, error) {
	w := DefaultWeights()
	if strings.TrimSpace(s) == "" {
		return w, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if _, known := w[k]; !ok || !known {
			var names []string
			for n := range w {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("weights %q: %q is not name=value with a name from %s", s, kv, strings.Join(names, " "))
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || (slices.Contains(percentWeights, k) && f > 100) {
			return nil, fmt.Errorf("weights %q: %s=%s: want a number >= 0 (a percentage for %s)", s, k, v, strings.Join(percentWeights, ", "))
		}
		w[k] = f
	}
	return w, nil
}

// String lists the weights that differ from the defaults, as ParseWeights
// takes them.
func (w Weights) String() string {
	d := DefaultWeights()
	var parts []string
	for k, v := range w {
		if d[k] != v {
			parts = append(parts, k+"="+strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
