#!/usr/bin/env bash
# Tenet's multi-host demo on this one machine: three simulated hosts, each
# with its own real Docker engine and tenetd; two tenants whose networks use
# the same subnet, defined once with tenetctl; containers across the hosts
# reach their own tenant's containers and never the other's. Everything is
# removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
tenet_deps
bin=$(mktemp -d)
go build -o "$bin/testbed" ./e2e/cmd/testbed
tb="$bin/testbed"
cleanup() {
  echo
  echo "== tearing down"
  "$tb" down
  rm -rf "$bin"
}

if "$tb" ls | grep -q ' up '; then
  echo "a testbed is already up (scripts/testbed.sh ls); bring it down first: scripts/testbed.sh down" >&2
  rm -rf "$bin"
  exit 1
fi
trap cleanup EXIT

echo "== bringing up 3 hosts, each with a Docker engine and tenetd"
"$tb" up 3 --tenet

echo
echo "== once, on h1 with tenetctl: two tenants, each with a network on 10.1.0.0/24"
for tenant in acme globex; do
  "$tb" tenetctl h1 tenant create $tenant
  "$tb" tenetctl h1 network create $tenant/web --subnet 10.1.0.0/24
done
"$tb" tenetctl h1 network inspect acme/web
echo "every engine gets the networks by itself:"
for h in h0 h1 h2; do
  for i in $(seq 100); do
    [ "$("$tb" docker "$h" network ls --filter driver=tenet -q | wc -l)" -ge 2 ] && break
    sleep 0.05
  done
  echo "  $h: $("$tb" docker "$h" network ls --filter driver=tenet --format '{{.Name}}' | tr '\n' ' ')"
done

echo
echo "== containers, addresses from Tenet's cluster-wide IPAM (each host allocates from blocks it owns)"
"$tb" docker h0 run -d --name acme-a --network acme.web tenet-test:latest sleep 3600 >/dev/null
"$tb" docker h1 run -d --name acme-b --network acme.web tenet-test:latest sleep 3600 >/dev/null
"$tb" docker h2 run -d --name acme-c --network acme.web tenet-test:latest sleep 3600 >/dev/null
"$tb" docker h0 run -d --name globex-a --network globex.web tenet-test:latest sleep 3600 >/dev/null
# an address of one's choice works too (inside the blocks this host owns):
"$tb" docker h1 run -d --name globex-b --network globex.web --ip 10.1.0.100 tenet-test:latest sleep 3600 >/dev/null
ip_of() { # host container network
  "$tb" docker "$1" inspect -f "{{(index .NetworkSettings.Networks \"$3\").IPAddress}}" "$2" | tr -d '\n'
}
A=$(ip_of h0 acme-a acme.web); B=$(ip_of h1 acme-b acme.web); C=$(ip_of h2 acme-c acme.web)
GA=$(ip_of h0 globex-a globex.web); GB=$(ip_of h1 globex-b globex.web)
echo "acme-a $A (h0), acme-b $B (h1), acme-c $C (h2); globex-a $GA (h0), globex-b $GB (h1)"

try() { # host container target
  if "$tb" docker "$1" exec "$2" ping -c1 -W1 "$3" >/dev/null 2>&1; then echo reaches; else echo blocked; fi
}
echo
echo "== who reaches whom (ping across hosts)"
printf '%-22s %-26s %s\n' FROM TO RESULT
printf '%-22s %-26s %s\n' "acme-a (h0)" "acme-b $B (h1)" "$(try h0 acme-a $B)"
printf '%-22s %-26s %s\n' "acme-a (h0)" "acme-c $C (h2)" "$(try h0 acme-a $C)"
printf '%-22s %-26s %s\n' "acme-c (h2)" "acme-b $B (h1)" "$(try h2 acme-c $B)"
printf '%-22s %-26s %s\n' "globex-a (h0)" "globex-b $GB (h1)" "$(try h0 globex-a $GB)"
printf '%-22s %-26s %s\n' "acme-a (h0)" "globex-b $GB (h1)" "$(try h0 acme-a $GB)"
printf '%-22s %-26s %s\n' "globex-a (h0)" "acme-b $B (h1)" "$(try h0 globex-a $B)"
echo "(acme-a and globex-a both have $A on h0: the same subnet, two tenants, no clash)"

echo
echo "== egress: acme-a reaches the hosts' underlay side through its host, NATed"
printf '%-22s %-26s %s\n' "acme-a (h0)" "h2's underlay 198.51.100.12" "$(try h0 acme-a 198.51.100.12)"
printf '%-22s %-26s %s\n' "acme-a (h0)" "its own host 198.51.100.10" "$(try h0 acme-a 198.51.100.10)"

echo
echo "== tenetctl on h2: where every endpoint lives"
"$tb" tenetctl h2 endpoint ls
echo
"$tb" tenetctl h2 host ls
