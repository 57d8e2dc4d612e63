package core

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/tenet-net/tenet/internal/crypt"
	"github.com/tenet-net/tenet/overlay"
)

// view is everything the desired datapath state is computed from, read at
// one moment: this host's networks and endpoints, and gossip's remote view
// of those networks.
type view struct {
	host    string
	vtep    netip.Addr
	nets    []Network
	eps     []Endpoint
	remotes map[string][]Remote // by network key
	peers   map[string][]Peer   // by network key
	// adopted holds, for networks gossip has not synced yet since start,
	// the remote entries found in the kernel: they are kept as they are.
	adopted map[uint32]adoptedRemotes
	// infra is what tenants may not reach, the members' addresses in.
	infra overlay.Infra
	// key is this host's WireGuard key; keys are the hosts' published
	// WireGuard identities (read only when a network is encrypted);
	// adoptedPeers the WireGuard peers the kernel held at start.
	key          overlay.PrivateKey
	share        crypt.Share // this host's share of the preshared keys
	keys         map[string]crypt.Host
	adoptedPeers []overlay.CryptPeer
}

// adoptedRemotes are a network's remote entries as the kernel held them at
// start-up.
type adoptedRemotes struct {
	remotes []overlay.Remote
	peers   []netip.Addr
}

// conflict is a remote endpoint left out because it claims an address or
// MAC that another endpoint of its network has.
type conflict struct {
	remote Remote
	with   string
}

// desired turns a view into the datapath state: every local network with its
// peers, every local endpoint, and every remote endpoint of those networks
// whose host is up or down for less than grace (at now). A remote claiming
// an address or MAC already taken in its network is left out (local ones
// win, then the newer record), reported in conflicts. next is the earliest
// time a hidden entry's grace runs out (zero: none). Pure.
func desired(v view, now time.Time, grace time.Duration) (s overlay.State, conflicts []conflict, next time.Time) {
	live := func(downSince time.Time) bool {
		if downSince.IsZero() {
			return true
		}
		end := downSince.Add(grace)
		if now.Before(end) {
			if next.IsZero() || end.Before(next) {
				next = end
			}
			return true
		}
		return false
	}
	s.Infra = v.infra
	s.Crypt.Key = v.key
	hostOf := map[netip.Addr]string{} // VTEPs of the hosts sharing an encrypted network
	encrypted := map[uint32]bool{}
	nets := slices.Clone(v.nets)
	slices.SortFunc(nets, func(a, b Network) int { return cmp.Compare(a.Key(), b.Key()) })
	byKey := map[string]Network{}
	for _, n := range nets {
		byKey[n.Key()] = n
		on := overlay.Network{Tenant: n.Tenant, Name: n.Name, VNI: n.VNI, MTU: n.MTU, Encrypted: n.Encrypted}
		encrypted[n.VNI] = n.Encrypted
		if n.Egress() {
			on.Gateway, on.Egress = netip.PrefixFrom(n.Gateway, n.Subnet.Bits()), true
		}
		peers := map[netip.Addr]bool{}
		for _, p := range v.peers[n.Key()] {
			if p.Host != v.host && usable(p.VTEP) && p.VTEP != v.vtep && live(p.DownSince) {
				peers[p.VTEP] = true
				if n.Encrypted {
					hostOf[p.VTEP] = p.Host
				}
			}
		}
		for _, p := range v.adopted[n.VNI].peers {
			if p != v.vtep {
				peers[p] = true
				if _, ok := hostOf[p]; !ok && n.Encrypted {
					hostOf[p] = ""
				}
			}
		}
		for p := range peers {
			on.Peers = append(on.Peers, p)
		}
		slices.SortFunc(on.Peers, netip.Addr.Compare)
		s.Networks = append(s.Networks, on)
	}
	nrem := 0
	for _, list := range v.remotes {
		nrem += len(list)
	}
	s.Endpoints = make([]overlay.Endpoint, 0, len(v.eps))
	eps := v.eps
	if !slices.IsSortedFunc(eps, byEndpointID) {
		eps = slices.Clone(eps)
		slices.SortFunc(eps, byEndpointID)
	}
	cl := claimants{local: eps}
	// Every endpoint has one address: one array holds them all, each
	// endpoint's slice capped so that nobody appends into the next's.
	addrs := make([]netip.Addr, len(eps)+nrem)
	var n Network
	var inNet bool
	for i, e := range eps {
		if i == 0 || e.Network != eps[i-1].Network {
			n, inNet = byKey[e.Network]
		}
		if !inNet {
			continue
		}
		addrs[i] = e.IP.Addr()
		oe := overlay.Endpoint{ID: e.ID, VNI: n.VNI, MAC: e.MAC, IPs: addrs[i : i+1 : i+1]}
		if n.Egress() {
			oe.Ports = e.Ports
		}
		s.Endpoints = append(s.Endpoints, oe)
	}
	// The local endpoints' claims matter only against remote and adopted
	// entries: they are indexed for the networks that have some, so a
	// pass over a host's 1,000 endpoints with no remote builds no index
	// (two map inserts per endpoint were half of this function).
	contended := map[string]bool{}
	for key, list := range v.remotes {
		if _, ok := byKey[key]; ok && len(list) > 0 {
			contended[key] = true
		}
	}
	for _, n := range nets {
		if len(v.adopted[n.VNI].remotes) > 0 {
			contended[n.Key()] = true
		}
	}
	// Who holds each address and MAC of a network, so far: an index
	// into claimants. Keys and values hold no pointers, so the garbage
	// collector need not scan them.
	nidx := nrem
	if len(contended) > 0 {
		nidx += len(eps)
	}
	ips, macs := make(map[ipKey]int32, nidx), make(map[macKey]int32, nidx)
	if len(contended) > 0 {
		var in bool
		for i, e := range eps {
			if i == 0 || e.Network != eps[i-1].Network {
				n, in = byKey[e.Network]
				in = in && contended[e.Network]
			}
			if in {
				ips[ipKeyOf(n.VNI, e.IP.Addr())] = int32(i)
				macs[macKeyOf(n.VNI, e.MAC)] = int32(i)
			}
		}
	}
	// Sorted newer claim first (NewerClaimFirst), so that of two records
	// claiming one address the newer wins, the same choice on every host,
	// whatever order gossip listed them in. Sorted as (version, pointer)
	// pairs, which settle most comparisons without following the pointer
	// (in a profile at 1,000 remotes the sort was half of a remote
	// change's plan).
	byAge := make([]versioned, 0, nrem)
	for key, list := range v.remotes {
		if _, ok := byKey[key]; !ok {
			continue
		}
		for i := range list {
			r := &list[i]
			if r.Network == key && r.Host != v.host && r.VTEP != v.vtep && validRemote(*r) && live(r.DownSince) {
				byAge = append(byAge, versioned{r.Version, r})
			}
		}
	}
	slices.SortFunc(byAge, func(a, b versioned) int {
		if a.v != b.v {
			return cmp.Compare(b.v, a.v)
		}
		return NewerClaimFirst(a.r, b.r)
	})
	rs := make([]*Remote, len(byAge))
	for i, x := range byAge {
		rs[i] = x.r
	}
	s.Remotes = make([]overlay.Remote, 0, len(rs))
	cl.remote = rs
	for j, r := range rs {
		n := byKey[r.Network]
		ik, mk := ipKeyOf(n.VNI, r.IP), macKeyOf(n.VNI, r.MAC)
		if w, ok := ips[ik]; ok && r.IP.IsValid() {
			conflicts = append(conflicts, conflict{*r, cl.name(w)})
			continue
		}
		if w, ok := macs[mk]; ok {
			conflicts = append(conflicts, conflict{*r, cl.name(w)})
			continue
		}
		who := int32(len(eps) + j)
		if r.IP.IsValid() { // an endpoint without an address claims none
			ips[ik] = who
		}
		macs[mk] = who
		if n.Encrypted && hostOf[r.VTEP] == "" {
			hostOf[r.VTEP] = r.Host
		}
		rem := overlay.Remote{VNI: n.VNI, MAC: r.MAC, VTEP: r.VTEP}
		if r.IP.IsValid() {
			k := len(eps) + j
			addrs[k] = r.IP
			rem.IPs = addrs[k : k+1 : k+1]
		}
		s.Remotes = append(s.Remotes, rem)
	}
	// Adopted entries fill in what gossip has not told us yet; they never
	// displace what it has.
	vnis := make([]uint32, 0, len(v.adopted))
	for vni := range v.adopted {
		vnis = append(vnis, vni)
	}
	slices.Sort(vnis)
	const adopted = -1
	for _, vni := range vnis {
		for _, r := range v.adopted[vni].remotes {
			if r.VTEP == v.vtep || !usable(r.VTEP) {
				continue
			}
			mk := macKeyOf(vni, r.MAC)
			if _, ok := macs[mk]; ok {
				continue
			}
			var keep []netip.Addr
			for _, ip := range r.IPs {
				if _, ok := ips[ipKeyOf(vni, ip)]; !ok {
					keep = append(keep, ip)
					ips[ipKeyOf(vni, ip)] = adopted
				}
			}
			macs[mk] = adopted
			s.Remotes = append(s.Remotes, overlay.Remote{VNI: vni, MAC: r.MAC, VTEP: r.VTEP, IPs: keep})
			if _, ok := hostOf[r.VTEP]; !ok && encrypted[vni] {
				hostOf[r.VTEP] = ""
			}
		}
	}
	if len(hostOf) > 0 {
		s.Crypt.Peers = cryptPeersOf(v.host, v.share, hostOf, v.keys, v.adoptedPeers)
	}
	return s, conflicts, next
}

func byEndpointID(a, b Endpoint) int { return cmp.Compare(a.ID, b.ID) }

// versioned is a remote endpoint and its version, which sorts it.
type versioned struct {
	v uint64
	r *Remote
}

// ipKey and macKey name an address and a MAC within a network.
type ipKey struct {
	vni uint32
	ip  [16]byte // the address in its 16-byte form (no zone: usable)
	v4  bool
}

func ipKeyOf(vni uint32, a netip.Addr) ipKey {
	return ipKey{vni: vni, ip: a.As16(), v4: a.Is4()}
}

type macKey struct {
	vni uint32
	mac [6]byte
	n   uint8 // the MAC's length (6 for any the datapath takes)
}

func macKeyOf(vni uint32, mac []byte) macKey {
	k := macKey{vni: vni, n: uint8(min(len(mac), 255))}
	copy(k.mac[:], mac)
	return k
}

// claimants resolves who holds an address or MAC: an index below
// len(local) is an endpoint of this host, one above a remote endpoint,
// -1 an entry adopted from the kernel.
type claimants struct {
	local  []Endpoint
	remote []*Remote
}

func (c claimants) name(i int32) string {
	switch {
	case i < 0:
		return "adopted"
	case int(i) < len(c.local):
		return "endpoint " + short(c.local[i].ID) + " on this host"
	}
	r := c.remote[int(i)-len(c.local)]
	return "endpoint " + short(r.ID) + " on host " + r.Host
}

func usable(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && a.Zone() == ""
}

// validRemote applies the datapath's input rules to a gossip record, so
// that one bad record from a peer cannot fail every reconcile.
func validRemote(r Remote) bool {
	if !usable(r.VTEP) || len(r.MAC) != 6 || r.MAC[0]&1 != 0 || slices.Equal([]byte(r.MAC), make([]byte, 6)) {
		return false
	}
	return !r.IP.IsValid() || usable(r.IP)
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
