// Package e2e is the multi-host testbed every end-to-end test uses, and the
// home of those tests.
//
// A testbed run is an underlay namespace holding a bridge, and N hosts. Each
// host (NetnsHost) is a network namespace joined to the bridge by a veth, with
// an address from TEST-NET-2 (198.51.100.0/24), and a private mount namespace
// in which it runs its own real Docker engine (dockerd from Debian's docker.io)
// with its own plugin discovery directories, in Docker's default
// configuration (docker0, iptables with FORWARD policy DROP, the userland
// proxy), all of which stays in the host's network namespace. Tests reach
// hosts through the small Host interface (Run, StartDaemon, Underlay),
// which package e2e/vm implements over SSH for real VMs.
//
// What a run creates is written to a ledger (DefaultBaseDir/<run>/ledger.json)
// before it is created. Every process of a run lives in the run's cgroup, so
// Teardown ends them all at once; Reap removes runs whose test process died.
// Leaks lists anything of a run that is still on the machine.
//
// A testbed can be broken on purpose, as hosts break (faults.go): tenetd
// crashed or restarted, dockerd restarted, a host cut off the underlay and
// healed, a host killed for good. scripts/testbed.sh offers each as a
// command; the operation fuzzer (e2e/fuzz) draws them at random.
//
// Nothing here touches the root namespace's interfaces, addresses or routes,
// and every name carries the run's name ("tenet-<run>-h0"), so tests in
// different packages can run at the same time. Functions are safe for
// concurrent use unless a type says otherwise.
package e2e
