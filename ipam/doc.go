// Package ipam hands out container addresses that are unique across the
// whole cluster, with no central store: each host allocates only from
// addresses it owns, and ownership moves only by the current owner's act,
// replicated through gossip. Tenants are address spaces.
//
// # What it owns, what it never does
//
// It owns pools (tenant + subnet, with ip-range, gateway and aux addresses),
// the parts of each pool this host owns, the addresses allocated in them,
// and this host's entries under "ipam/" in the replicated table. It never
// touches the kernel or the network, never speaks Docker's protocol (package
// driver decodes requests with ParsePoolRequest and ParseAddressRequest and
// calls the methods of IPAM), and never implements gossip: it runs over the
// small Replica interface, for which ipamtest.Cluster is an in-memory fake.
//
// # Concurrency
//
// IPAM is safe for concurrent use. One mutex guards its state, and no call
// into another component is made under it: Store.Save and Replica.Put
// happen in outbox.go with the mutex released (Put can end in network sends
// to every peer, and stall for seconds on a peer that is unreachable but not
// yet declared dead). A change is made in memory under the mutex; a call
// answers only once a save covering its change is done (concurrent calls
// share one save), and its entries for other hosts are written by a writer
// Run starts, after that save. The hot path (RequestAddress with space this
// host owns) holds the mutex for the change alone, then waits for one save
// (none without a Store). Every call checks
// its ctx right before its change and again once the change is saved; if
// ctx has ended, or the save failed, it takes the change back and returns
// the error, so a caller that gives up leaves nothing behind. A request that
// must obtain space waits (bounded by its ctx) with the mutex released. Run
// must be running: it reacts to the table, serves other hosts' requests and
// writes this host's entries.
//
// # Pools and tenants
//
// A pool's ID is "<tenant>/<subnet>": the same on every host for the same
// tenant network, distinct for identical subnets of different tenants.
// Inside a tenant, overlapping subnets are refused (ErrOverlap). The tenant
// comes from --ipam-opt tenant=NAME, since the docker CLI cannot name an
// address space. A pool's allocation range (its ip-range, else its subnet)
// is cut into aligned blocks (Config.BlockBitsV4/V6, default /26 and /122,
// a pool smaller than a block being one block), numbered in address order:
// the unit of the genesis split and of bookkeeping. Ownership is finer: any
// aligned part of a block, down to a single address. Only blocks this host
// owns part of have bitmaps, so IPv6 /64 pools cost nothing until used. The
// network address, IPv4 broadcast, gateway (first usable address unless
// --gateway) and aux addresses are never handed to a container; asking for
// one is refused with an error naming which it is. A host publishes its
// gateway only once Docker's gateway request confirmed it, so hosts created
// with the same --gateway never see each other disagree.
//
// # Ownership: the protocol
//
// Entries, each written only by its host (see blocks.go for the encoding):
// block/<pool>|<part> {epoch, to}, want/<pool>, reply/<pool>|<host>,
// removal/<host>. A part is a block or an aligned part of one.
//
//   - Genesis. Block i first belongs to Config.Seeds[i mod len(Seeds)] at
//     epoch 0. Seeds is configuration, the same on every host, so this first
//     owner is known everywhere without a message (Weave's seed mode; no
//     consensus round, and it works during a partition). A seed records
//     {its genesis epoch, to: itself} on the block when it starts using it.
//   - Handover. The owner of a part, and only it, hands it over by writing
//     its own entry on the part {E, to: R}, E one above the highest epoch of
//     its own entries overlapping the part, in the same critical section in
//     which it stops allocating from the part. It hands over only parts
//     with no address allocated in them.
//   - Acceptance. R starts allocating from the part only after it has seen
//     that entry, and records {E, to: R} as its own entry on the part. From
//     then on R's own entry says R owns the part; only R can change that.
//   - Asking. A host short of space writes want/<pool> {seq, donor} naming
//     one owner (seeds first, then owners by addresses owned, then hosts
//     named by refusals). The donor answers once per seq: a handover, or
//     reply/<pool>|<host> with no part, naming the hosts it handed parts of
//     the pool to. The asker moves to the next donor on refusal or after
//     AnswerTimeout. Before asking a host the table shows a part was handed
//     to, it waits (at most AnswerTimeout) for that host's acceptance; a
//     host that refused and is then named by a refusal is asked once more,
//     as it was asked before the handover reached it. A donor gives an unused genesis block, else an empty
//     block if it keeps space besides, else it splits: the largest empty
//     part holding at most half its free addresses, down to its last free
//     address. So while a pool has a free address, any host that can reach
//     its owner gets it, whatever the pool's size. A requested address
//     (--ip) owned by another host asks that host for the largest empty part
//     holding it (ErrInUse if the address is allocated there).
//   - Reading ownership. Every host computes the owner of an address the
//     same way (ownerOf, segmentsOf): among the claims on every part
//     containing it, the host named by the one with the highest epoch, or
//     the genesis owner without claims. Two claims at one epoch naming
//     different hosts cannot happen (below); if they do anyway, every host
//     logs it loudly, the lowest name wins, and the loser stops allocating
//     from those addresses (keeping what it allocated). Nothing is dropped:
//     no connection, no entry, no host.
//
// # Why two owners of one address are impossible
//
// Say a host allocates an address only between accepting a part holding it
// at epoch e (or genesis) and handing over a part holding it. (1) Each
// epoch of an address has at most one owner: the owner at the address's
// highest epoch e is unique (induction from genesis, a pure function of the
// shared configuration). Only that owner writes a claim covering the address
// above e: any other host's own entries say it does not own the address, and
// a host hands over only what its own entries say it owns (the heir of a
// removal is the one exception, argued below). It writes one
// such claim, naming one recipient, at one epoch E > e (skipping epochs is
// harmless: nobody else writes between e and E), and its own entries then
// say it no longer owns the address; the recipient's acceptance repeats
// the same claim. So at E the address has one owner, and induction goes on.
// A host's entry on one part only ever grows in epoch, so overwriting it
// loses nothing the rule needs. (2) The intervals of successive owners
// never overlap in time: the owner at e stops allocating before its handover
// entry exists, and the owner at E starts only after reading it. (3) A
// part is empty when it moves, so the new owner cannot hand out an address
// still in use. None of this depends on message timing, order or delivery:
// a delayed or lost message only delays a handover; it never makes two hosts
// allocate the same address. Concurrent requests on one host are serialised
// by its mutex; on different hosts they use different addresses. A host
// saves its state before any of its entries leaves (outbox.go), so a
// restarted host keeps its own entries (Config.Store, and it writes them
// again) and never re-accepts, or allocates again from, a part it handed
// away.
//
// # Partition
//
// Each side keeps allocating from what it owns, and hosts on the same side
// may hand parts to each other, down to single addresses. A host that needs
// space owned across the partition gets ErrUnavailable; it never guesses.
// After healing, the entries merge with no conflict, because every entry
// has exactly one writer and no decision was taken on either side that the
// other could contradict.
//
// # Dead hosts and RemoveHost
//
// A host that is merely unreachable keeps its parts: nothing is inferred
// from a timeout. Space of a host that is gone for good is reclaimed only by
// an admin (tenetctl host remove NAME → RemoveHost), in three steps: (1) the
// requesting host writes removal/NAME; (2) every host that sees a removal
// record fences NAME (ignores its handovers and wants from then on) and
// acknowledges with its own removal/NAME, holding a copy of its own entries
// in the blocks where NAME wrote or was named, so a handover from NAME that
// some live host accepted (it saw NAME's entry there), and what it handed
// on from that part, is known to the heir even if the entries themselves
// have not reached it; (3) the heir is the lowest-named requester, and a
// host acts as heir only when every member it knows has written an entry
// listing exactly the same requesters as its own list (lists only grow, and
// freeze once the removal is done). The heir writes a claim one epoch above
// every part NAME owns and records "done", which also passes NAME's unused
// genesis share to it at a higher genesis epoch. Run twice, or on two hosts
// at once, it has one heir: two actors would need equal requester lists
// with different minimums (a host's role as requester or acknowledger is
// fixed by its first entry). RemoveHost refuses (ErrUnsafe) while NAME is
// alive, or while another host is unreachable and not removed in the same
// command, because then the heir could not learn what that host holds.
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
//   - Seeds and block sizes must be equal on every host, and so must a
//     pool's ip-range. Each host publishes them (pool/<pool> entries) and
//     logs loudly when another differs; it cannot prevent it. All hosts must
//     run a version that splits blocks: an older one ignores parts smaller
//     than a block.
//   - A host must keep its Store or its replica across restarts. Without the
//     Store it keeps its parts from the replica but never gives them away
//     (their allocations are unknown until Docker replays them). A host that
//     lost both must rejoin under a new name, as with Weave's peer names.
//   - Parts are not merged back: a pool that churned between many hosts
//     ends up with many small parts, one entry each per host that held them
//     (at most two per address of the pool), and each reconcile reads them
//     all. A removal acknowledgement copies this host's entries in the
//     removed host's blocks into one value, which gossip caps at 4 KiB
//     (roughly 40 entries).
//   - Costs: each save re-encodes the host's whole state, and each reconcile
//     reads the whole "ipam/" table (decoded entries are cached by version).
//     Fine for hundreds of blocks and thousands of addresses per host; not
//     tuned beyond. If the Store fails, requests fail with its error (an
//     address is never handed out unsaved) and entries wait to be written.
//   - Writes to the table go out one at a time: a Put that blocks holds up
//     this host's later wants and replies (not its allocations) until it
//     returns.
//
// # What the driver glue must do
//
//	GetCapabilities:        {"RequiresMACAddress": false, "RequiresRequestReplay": true}
//	GetDefaultAddressSpaces: m.DefaultAddressSpaces()
//	RequestPool:  req, err := ipam.ParsePoolRequest(cfg.DefaultTenant, r.AddressSpace, r.Pool, r.SubPool, r.Options, r.V6)
//	              pool, err := m.RequestPool(ctx, req) → {PoolID: pool.ID, Pool: pool.Subnet}
//	ReleasePool:  m.ReleasePool(ctx, r.PoolID)
//	RequestAddress: ar, err := ipam.ParseAddressRequest(r.PoolID, r.Address, r.Options, haveNetwork)
//	              addr, err := m.RequestAddress(ctx, r.PoolID, ar) → {Address: addr.String()}
//	ReleaseAddress: a, err := ipam.ParseAddress(r.PoolID, r.Address); m.ReleaseAddress(ctx, r.PoolID, a)
//
// haveNetwork says whether the driver already has, on this host, the
// network the pool serves (its CreateNetwork was done). Without
// RequiresMACAddress, Docker 20.10 sends endpoints' requests with no option
// at all, like aux addresses (newer Docker adds the endpoint's name), so
// the order of Docker's calls is what tells them apart: network create
// asks for the gateway (RequestAddressType) and then each aux address
// before CreateNetwork; docker run asks after it; dockerd's replay at its
// start (RequiresRequestReplay: it rebuilds pool references, which are not
// persisted, and re-confirms allocations) asks, per network, RequestPool,
// the gateway, the aux addresses, then each stored endpoint, all once the
// network exists. So an address with no option is an aux address without
// the network and an endpoint's with it (AddressRequest.Untagged); the
// pool's aux addresses asked that way right after a RequestPool are taken
// as their replay, once each, and refused to any container otherwise. A
// replayed endpoint still allocated here is refused (ErrInUse; Docker warns
// and deletes its stale endpoints next). With MAC addresses no longer asked
// for, the driver derives each endpoint's MAC from its IP. When
// CreateEndpoint or Join fails after RequestAddress, Docker does not always
// release the address: the driver must call ReleaseAddress itself. The
// driver must also return what IPAM answered, even late: IPAM checks ctx
// and takes back what it could not answer in time, but an answer it gave is
// final. Errors go to Docker as their text; branch on them with errors.Is.
package ipam
