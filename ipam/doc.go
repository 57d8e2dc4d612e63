// Package ipam hands out container addresses that are unique across the
// whole cluster, with no central store: each host allocates only from address
// blocks it owns, and ownership moves only by the current owner's act,
// replicated through gossip. Tenants are address spaces.
//
// # What it owns, what it never does
//
// It owns pools (tenant + subnet, with ip-range, gateway and aux addresses),
// the blocks of each pool this host owns, the addresses allocated in them,
// and this host's entries under "ipam/" in the replicated table. It never
// touches the kernel or the network, never speaks Docker's protocol (package
// driver decodes requests with ParsePoolRequest and ParseAddress and calls
// the methods of IPAM), and never implements gossip: it runs over the small
// Replica interface, for which ipamtest.Cluster is an in-memory fake.
//
// # Concurrency
//
// IPAM is safe for concurrent use. One mutex guards its state; the hot path
// (RequestAddress with space in an owned block) takes it once and does no
// I/O but Store.Save (and, once per new block of its genesis share, a local
// Replica.Put). Run must be running: it reacts to the table and is
// what lets this host obtain blocks and serve other hosts' requests. A
// request that must obtain a block waits (bounded by its ctx) with the lock
// released. Replica.Put is called under the lock, so it must not block on
// the network nor call back into IPAM.
//
// # Pools and tenants
//
// A pool's ID is "<tenant>/<subnet>": the same on every host for the same
// tenant network, distinct for identical subnets of different tenants.
// Inside a tenant, overlapping subnets are refused (ErrOverlap). The tenant
// comes from --ipam-opt tenant=NAME, since the docker CLI cannot name an
// address space. A pool's allocation range (its ip-range, else its subnet)
// is cut into aligned blocks (Config.BlockBitsV4/V6, default /26 and /122),
// numbered in address order. Only owned blocks have a bitmap, so IPv6 /64
// pools cost nothing until used. The network address, IPv4 broadcast,
// gateway (first usable address unless --gateway) and aux addresses are
// never handed to a container.
//
// # Block ownership: the protocol
//
// Entries, each written only by its host (see blocks.go for the encoding):
// block/<pool>|<block> {epoch, to}, want/<pool>, reply/<pool>|<host>,
// removal/<host>.
//
//   - Genesis. Block i first belongs to Config.Seeds[i mod len(Seeds)] at
//     epoch 0. Seeds is configuration, the same on every host, so this first
//     owner is known everywhere without a message (Weave's seed mode; no
//     consensus round, and it works during a partition).
//   - Handover. The owner of a block at epoch e, and only it, hands the
//     block over by writing its own entry {e+1, to: R}, in the same critical
//     section in which it stops allocating from the block. It hands over only
//     empty blocks (no address allocated in them).
//   - Acceptance. R starts allocating from the block only after it has seen
//     that entry, and records {e+1, to: R} as its own entry. From then on R's
//     own entry says R owns the block; only R can change that.
//   - Asking. A host short of space writes want/<pool> {seq, donor} naming
//     one owner (seeds first, then owners by block count). The donor answers
//     once per seq: a handover, or reply/<pool>|<host> with no block. The
//     asker moves to the next donor on refusal or after AnswerTimeout. A
//     requested address (--ip) in another host's block asks that host for
//     that block; it is given only if empty (else ErrNotOwned).
//   - Reading ownership. Every host computes the owner of a block the same
//     way (ownerOf): the host named by the claim with the highest epoch, or
//     the genesis owner without claims. Two claims at one epoch naming
//     different hosts cannot happen (below); if they do anyway, every host
//     logs it loudly, the lowest name wins, and the loser stops allocating
//     from the block (keeping what it allocated). Nothing is dropped: no
//     connection, no entry, no host.
//
// # Why two owners of one block are impossible
//
// Say a host allocates from a block only between accepting it at epoch e
// (or genesis) and handing it over at e+1. (1) Each epoch has at most one
// owner: the owner at e is unique (induction from genesis, which is a pure
// function of the shared configuration); it writes at most one entry with
// epoch e+1, since its own entry's epoch only grows and it hands over only
// a block its own entry says it owns; so the recipient at e+1 is unique.
// (2) The intervals of successive owners never overlap in time: the owner
// at e stops allocating before its handover entry exists, and the owner at
// e+1 starts only after reading that entry. (3) The block is empty when it
// moves, so the new owner cannot hand out an address still in use. None of
// this depends on message timing, order or delivery: a delayed or lost
// message only delays a handover; it never makes two hosts allocate from one
// block. Concurrent requests on one host are serialised by its mutex; on
// different hosts they use different blocks. A restarted host keeps its own
// entries (Config.Store, and it writes them again), so it never re-accepts a
// block it handed away.
//
// # Partition
//
// Each side keeps allocating from the blocks it owns, and hosts on the same
// side may hand blocks to each other. A host that needs a block owned across
// the partition gets ErrUnavailable; it never guesses. After healing, the
// entries merge with no conflict, because every entry has exactly one
// writer and no decision was taken on either side that the other could
// contradict.
//
// # Dead hosts and RemoveHost
//
// A host that is merely unreachable keeps its blocks: nothing is inferred
// from a timeout. Space of a host that is gone for good is reclaimed only
// by an admin (tenetctl host remove NAME → RemoveHost), in three steps:
// (1) the requesting host writes removal/NAME; (2) every host that sees a
// removal record fences NAME (ignores its handovers and wants from then on)
// and acknowledges with its own removal/NAME, holding a copy of its own
// block entries, so a handover from NAME that some live host accepted but
// whose entry has not reached the heir is still known; (3) the heir is the
// lowest-named requester, and a host acts as heir only when every member it
// knows has written an entry listing exactly the same requesters as its own
// list (lists only grow, and freeze once the removal is done). The heir
// writes a claim at the next epoch for every block NAME owns and records
// "done", which also passes NAME's unused genesis share to it at a higher
// genesis epoch. Run twice, or on two hosts at once, it has one heir: two
// actors would need equal requester lists with different minimums (a host's
// role as requester or acknowledger is fixed by its first entry). RemoveHost
// refuses (ErrUnsafe) while NAME is alive, or while another host is
// unreachable and not removed in the same command, because then the heir
// could not learn what that host holds.
//
// # Limits, stated plainly
//
//   - An admin removing a host that is in fact alive on the other side of a
//     partition (membership says dead) is the one unsafe act left: addresses
//     handed out on both sides may collide. When it returns, the removed
//     host sees its removal, stops allocating (ErrRemoved) and logs loudly;
//     it must rejoin under a new name.
//   - Hosts that have never heard of each other (one joining during a
//     removal) are outside the agreement argument.
//   - Seeds and block sizes must be equal on every host. Each host publishes
//     both (pool/<pool> entries) and logs loudly when another differs; it
//     cannot prevent it.
//   - A host must keep its Store or its replica across restarts. Without the
//     Store it keeps its blocks from the replica but never gives them away
//     (their allocations are unknown until Docker replays them). A host that
//     lost both must rejoin under a new name, as with Weave's peer names.
//   - Costs: each change re-encodes the host's whole state for the Store,
//     and each reconcile reads the whole "ipam/" table (decoded entries are
//     cached by version). Fine for hundreds of blocks and thousands of
//     addresses per host; not tuned beyond.
//   - A requested address (--ip) in a block another host uses is refused
//     (ErrNotOwned): blocks move only when empty, single addresses never
//     (Calico-style borrowing needs per-address routes; not done).
//
// # What the driver glue must do
//
//	GetCapabilities:        {"RequiresMACAddress": true, "RequiresRequestReplay": true}
//	GetDefaultAddressSpaces: m.DefaultAddressSpaces()
//	RequestPool:  req, err := ipam.ParsePoolRequest(cfg.DefaultTenant, r.AddressSpace, r.Pool, r.SubPool, r.Options, r.V6)
//	              pool, err := m.RequestPool(ctx, req) → {PoolID: pool.ID, Pool: pool.Subnet}
//	ReleasePool:  m.ReleasePool(ctx, r.PoolID)
//	RequestAddress: ar, err := ipam.ParseAddressRequest(r.PoolID, r.Address, r.Options)
//	              addr, err := m.RequestAddress(ctx, r.PoolID, ar) → {Address: addr.String()}
//	ReleaseAddress: a, err := ipam.ParseAddress(r.PoolID, r.Address); m.ReleaseAddress(ctx, r.PoolID, a)
//
// RequiresMACAddress makes Docker send the MAC option that tells endpoint
// requests from aux requests; RequiresRequestReplay makes Docker replay
// pools and addresses at its start, which rebuilds pool references (not
// persisted) and re-confirms allocations. When CreateEndpoint or Join fails
// after RequestAddress, Docker does not always release the address: the
// driver must call ReleaseAddress itself. Errors go to Docker as their
// text; branch on them with errors.Is.
package ipam
