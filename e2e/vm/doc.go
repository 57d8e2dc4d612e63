// Package vm is the VM testbed: real Debian machines under QEMU, reached over
// SSH through the same e2e.Host interface as the namespace testbed, for what
// that one cannot show: a kernel per host, Docker exactly as `apt-get install
// docker.io` leaves it (AppArmor, iptables, docker0), Tenet installed from its
// own Debian package and started by systemd, hosts that reboot, and newer
// Docker engines (Debian 13).
//
// A run (Up) is one network namespace, tenet-<run>, holding a bridge with
// 203.0.113.1/24 (TEST-NET-3) and one tap per VM; QEMU runs inside that
// namespace, so no tap, bridge, address or route ever appears in the root
// namespace. VM hN has 203.0.113.(10+N)/24, its name and address on its kernel
// command line; the test process reaches it with ssh, run through nsenter into
// the run's namespace.
//
// Images are built once per Debian release with mmdebstrap (image/build.sh,
// image/packages.txt) into CacheDir and reused until either file changes (the
// directory name carries their hash). Each VM boots the image's own kernel
// and initramfs on a copy-on-write overlay of the image, so a reboot keeps
// its disk. QEMU uses KVM where /dev/kvm belongs to a hardware KVM module
// (kvm_intel, kvm_amd) and software emulation (TCG) otherwise; TCG is slow, so
// VM tests check function, never speed.
//
// Every process of a run (QEMU, one per VM) is written to the run's ledger
// (BaseDir/<run>/ledger.json) with its start time; Teardown kills exactly
// those (PID and start time must match), removes the namespace and the run's
// directory, ledger last; Reap tears down runs whose owner process is gone;
// Leaks lists anything of a run left on the machine. VM tests run only when
// asked (TENET_VM=1, scripts/test-vm.sh), as they take minutes.
//
// Functions are safe for concurrent use unless a type says otherwise.
package vm
