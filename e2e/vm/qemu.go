package vm

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Accel is how QEMU runs a VM's CPU.
type Accel struct {
	KVM    bool
	Reason string // why this one, for the logs
}

// ProbeAccel picks KVM where it is usable and TCG otherwise. TENET_VM_ACCEL
// (kvm or tcg) overrides the probe.
//
// /dev/kvm alone proves nothing: on this machine kind it comes, when present,
// from kvm_pvm (nested virtualisation in software), under which Debian's
// kernel does not boot (-cpu host dies on MSR 0x10a; without
// arch-capabilities it stops after "Probing EDD"). So KVM counts as usable
// only when a hardware module, kvm_intel or kvm_amd, is loaded and /dev/kvm
// opens.
func ProbeAccel() Accel {
	switch v := os.Getenv("TENET_VM_ACCEL"); v {
	case "kvm":
		return Accel{KVM: true, Reason: "TENET_VM_ACCEL=kvm"}
	case "tcg":
		return Accel{Reason: "TENET_VM_ACCEL=tcg"}
	case "":
	default:
		return Accel{Reason: fmt.Sprintf("TENET_VM_ACCEL=%q is neither kvm nor tcg; using tcg", v)}
	}
	return probeAccel("/sys/module", "/dev/kvm")
}

func probeAccel(sysModule, devKVM string) Accel {
	var hw string
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat(filepath.Join(sysModule, m)); err == nil {
			hw = m
		}
	}
	if hw == "" {
		why := "no hardware KVM module (kvm_intel, kvm_amd) loaded"
		if _, err := os.Stat(filepath.Join(sysModule, "kvm_pvm")); err == nil {
			why = "only kvm_pvm is loaded, which cannot boot Debian's kernel"
		}
		return Accel{Reason: why + ": software emulation (TCG), functional checks only"}
	}
	f, err := os.OpenFile(devKVM, os.O_RDWR, 0)
	if err != nil {
		return Accel{Reason: fmt.Sprintf("%s loaded but %v: software emulation (TCG)", hw, err)}
	}
	f.Close()
	return Accel{KVM: true, Reason: hw + " and " + devKVM + ": KVM"}
}

// vmSpec is what qemuArgs needs to know about one VM.
type vmSpec struct {
	Name     string
	Index    int
	Addr     netip.Prefix
	Tap      string
	Overlay  string // qcow2 disk backed by the image
	Console  string // serial console log
	MemoryMB int
}

// qemuArgs is QEMU's command line for one VM: the image's kernel and initramfs,
// the VM's name and address on the kernel command line, its disk overlay and
// a virtio NIC on its tap, the serial console to a file, nothing else.
func qemuArgs(img *Image, accel Accel, v vmSpec) []string {
	cpu := []string{"-accel", "tcg,tb-size=256", "-cpu", "max", "-smp", "1"}
	if accel.KVM {
		cpu = []string{"-accel", "kvm", "-cpu", "host", "-smp", "2"}
	}
	cmdline := []string{"root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0",
		"tenet.host=" + v.Name, "tenet.addr=" + v.Addr.String()}
	args := []string{"qemu-system-x86_64", "-name", v.Name, "-nodefaults", "-no-user-config", "-display", "none"}
	args = append(args, cpu...)
	args = append(args,
		"-m", fmt.Sprint(v.MemoryMB),
		"-kernel", img.Kernel, "-initrd", img.Initrd, "-append", strings.Join(cmdline, " "),
		"-drive", "file="+v.Overlay+",if=virtio,format=qcow2,cache=unsafe",
		"-netdev", "tap,id=n0,ifname="+v.Tap+",script=no,downscript=no",
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=52:54:00:71:00:%02x", v.Index+1),
		"-device", "virtio-rng-pci",
		"-serial", "file:"+v.Console,
	)
	return args
}
