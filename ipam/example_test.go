package ipam_test

import (
	"context"
	"fmt"

	"github.com/tenet-net/tenet/ipam"
	"github.com/tenet-net/tenet/ipam/ipamtest"
)

// The calls the driver glue makes for `docker network create --ipam-opt
// tenant=acme --subnet 10.1.0.0/24` and `docker run --ip 10.1.0.9`, on one
// host of a cluster (here a fake one).
func Example() {
	ctx := context.Background()
	cluster := ipamtest.NewCluster(0, 1)
	cfg := ipam.DefaultConfig()
	cfg.Host, cfg.Seeds = "h1", []string{"h1"}
	m, err := ipam.New(cfg, cluster.Node("h1"))
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go m.Run(runCtx)

	// RequestPool
	req, err := ipam.ParsePoolRequest(cfg.DefaultTenant, ipam.LocalSpace, "10.1.0.0/24", "", map[string]string{"tenant": "acme"}, false)
	if err != nil {
		panic(err)
	}
	pool, _ := m.RequestPool(ctx, req)
	fmt.Println("pool", pool.ID)

	// RequestAddress for the gateway, then for two endpoints
	for _, r := range []struct {
		addr string
		opts map[string]string
	}{
		{"", map[string]string{ipam.OptRequestAddressType: ipam.OptGatewayType}},
		{"", map[string]string{ipam.OptMACAddress: "02:42:0a:01:00:02"}},
		{"10.1.0.9", map[string]string{ipam.OptMACAddress: "02:42:0a:01:00:09"}},
	} {
		ar, err := ipam.ParseAddressRequest(pool.ID, r.addr, r.opts, true)
		if err != nil {
			panic(err)
		}
		a, err := m.RequestAddress(ctx, pool.ID, ar)
		fmt.Println("address", a, err)
	}

	// Bad input: a clear error, nothing changes.
	_, err = ipam.ParseAddressRequest(pool.ID, "10.1.0.300", nil, true)
	fmt.Println(err)

	// ReleaseAddress, twice: idempotent.
	a, _ := ipam.ParseAddress(pool.ID, "10.1.0.9")
	fmt.Println(m.ReleaseAddress(ctx, pool.ID, a), m.ReleaseAddress(ctx, pool.ID, a))
	// Output:
	// pool acme/10.1.0.0/24
	// address 10.1.0.1/24 <nil>
	// address 10.1.0.2/24 <nil>
	// address 10.1.0.9/24 <nil>
	// request address 10.1.0.300 in pool acme/10.1.0.0/24: not an address
	// <nil> <nil>
}
