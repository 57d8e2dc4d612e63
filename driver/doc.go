// Package driver answers Docker's remote NetworkDriver and IpamDriver
// protocols (as of Docker 20.10): it decodes and validates each request, calls
// the overlay datapath, ipam and gossip, and maps their errors to the text
// Docker shows. It never touches the kernel itself.
//
// Not built yet: see issue "Docker network driver".
package driver
