package main

// tenetd docker-dns: the one host setting names across hosts need. Docker's
// embedded DNS answers its own host's containers and asks the engine's
// "dns" servers (daemon.json) for every other name; naming tenetd's
// resolver first there is what makes other hosts' containers resolve. The
// systemd unit runs this before each start of tenetd (so before Docker's,
// at boot), with tenetd's own flags: --dns=false takes the resolver out
// again, as does --undo (the package's removal).

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tenet-net/tenet/internal/atomicfile"
	"github.com/tenet-net/tenet/overlay"
)

// systemdResolvConf lists the servers behind systemd-resolved's stub.
const systemdResolvConf = "/run/systemd/resolve/resolv.conf"

// procRoot is where running engines are looked for (tests point it
// elsewhere).
var procRoot = "/proc"

func dockerDNS(args []string, stdout, stderr io.Writer) int {
	var o options
	var raw rawFlags
	fs := newFlagSet("tenetd docker-dns", &o, &raw, stderr)
	path := fs.String("daemon-json", "/etc/docker/daemon.json", "the Docker engine's configuration file")
	undo := fs.Bool("undo", false, "take the resolver out of the engine's \"dns\" setting")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: tenetd docker-dns [--daemon-json FILE] [--undo] [tenetd's flags]\n"+
			"  make the Docker engine ask tenetd's resolver ("+overlay.ResolverAddr.String()+") first for names, by\n"+
			"  putting it first in daemon.json's \"dns\" (other keys and servers are kept); with no servers\n"+
			"  there yet, the host's first upstream server follows it. --dns=false or --undo take it out.\n"+
			"  Docker reads the file when it starts: restart it once after the first run.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tenetd docker-dns: unexpected argument %q (flags only)\n", fs.Arg(0))
		return 2
	}
	var flagged []string
	if raw.upstream != "" {
		flagged = strings.Split(raw.upstream, ",")
	}
	enable := o.dns && !*undo
	var ups []netip.AddrPort
	if enable {
		var err error
		if ups, err = upstreams(flagged, o.resolvConf, systemdResolvConf); err != nil {
			fmt.Fprintln(stderr, "tenetd docker-dns:", err)
			return 1
		}
	}
	if err := engineTakesFile(procRoot, *path); err != nil {
		fmt.Fprintln(stderr, "tenetd docker-dns:", err)
		return 1
	}
	dns, changed, err := setDockerDNS(*path, enable, ups)
	if err != nil {
		fmt.Fprintln(stderr, "tenetd docker-dns:", err)
		return 1
	}
	shown, _ := json.Marshal(dns)
	switch {
	case !changed && enable:
		fmt.Fprintf(stdout, "tenetd docker-dns: %s already names %s first in \"dns\" (%s)\n", *path, overlay.ResolverAddr, shown)
	case !changed:
		fmt.Fprintf(stdout, "tenetd docker-dns: %s does not name %s in \"dns\"\n", *path, overlay.ResolverAddr)
	default:
		fmt.Fprintf(stdout, "tenetd docker-dns: %s: \"dns\" is now %s; Docker applies it when it next starts (systemctl restart docker)\n", *path, shown)
		if enable && len(dns) == 1 {
			fmt.Fprintf(stderr, "tenetd docker-dns: no upstream DNS server found besides the resolver: while tenetd is down, containers on its networks resolve nothing else (name one with --dns-upstream)\n")
		}
	}
	return 0
}

// setDockerDNS puts the resolver first in (enable) or takes it out of the
// "dns" list of the engine's configuration file at path, keeping every
// other key and server. A list that has no server but the resolver gets the
// first of ups that the engine can use (port 53, not loopback) after it. It
// returns the list as it now is, and whether the file was rewritten; on
// error the file is left as it was.
func setDockerDNS(path string, enable bool, ups []netip.AddrPort) (dns []string, changed bool, err error) {
	cfg := map[string]json.RawMessage{}
	mode := fs.FileMode(0o644)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, false, err
	default:
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &cfg); err != nil || cfg == nil {
				if err == nil {
					err = errors.New("null")
				}
				return nil, false, fmt.Errorf("%s is not a JSON object (%v); left as it was", path, err)
			}
		}
	}
	var cur []string
	if v, ok := cfg["dns"]; ok {
		if err := json.Unmarshal(v, &cur); err != nil {
			return nil, false, fmt.Errorf("%s: \"dns\" is not a list of addresses (%s); left as it was", path, v)
		}
	}
	res := overlay.ResolverAddr.String()
	others := slices.DeleteFunc(slices.Clone(cur), func(s string) bool {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		return err == nil && a.Unmap() == overlay.ResolverAddr
	})
	next := others
	if enable {
		if len(cur) > 0 && cur[0] == res {
			return cur, false, nil
		}
		if len(others) == 0 {
			for _, u := range ups {
				if u.Port() == 53 && !u.Addr().IsLoopback() && u.Addr() != overlay.ResolverAddr {
					others = append(others, u.Addr().String())
					break
				}
			}
		}
		next = append([]string{res}, others...)
	} else if len(others) == len(cur) {
		return cur, false, nil
	}
	if len(next) == 0 {
		delete(cfg, "dns")
	} else if cfg["dns"], err = json.Marshal(next); err != nil {
		return nil, false, err
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, false, err
	}
	// The engine's directory is 0755 when Docker makes it; atomicfile
	// would make it 0700.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(path, append(out, '\n'), mode); err != nil {
		return nil, false, err
	}
	return next, true, nil
}

// engineTakesFile refuses when a running Docker engine (found under proc)
// would not take "dns" from the file at path: it names its DNS servers on
// its command line (the engine then refuses to start with both), or reads
// another configuration file.
func engineTakesFile(proc, path string) error {
	dirs, err := os.ReadDir(proc)
	if err != nil {
		return nil // no process list: nothing to check against
	}
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(proc, d.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "dockerd" {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(proc, d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		for i, a := range args {
			if a == "--dns" || strings.HasPrefix(a, "--dns=") {
				return fmt.Errorf("the Docker engine (pid %s) names its DNS servers on its command line (%s): put %s first there instead; %s left as it was", d.Name(), a, overlay.ResolverAddr, path)
			}
			file, ok := strings.CutPrefix(a, "--config-file=")
			if !ok && a == "--config-file" && i+1 < len(args) {
				file, ok = args[i+1], true
			}
			if ok && filepath.Clean(file) != filepath.Clean(path) {
				return fmt.Errorf("the Docker engine (pid %s) reads %s, not %s: run with --daemon-json %s", d.Name(), file, path, file)
			}
		}
	}
	return nil
}
