#!/usr/bin/env bash
# Installs what Tenet's scripts need on a Debian 12 machine, as root; a no-op
# when everything is there. Sourced by demo.sh, test.sh and testbed.sh.
set -euo pipefail

export PATH="/usr/local/go/bin:$PATH"
tenet_pkgs=(docker.io busybox-static iproute2 iptables nftables iperf3 iputils-ping tcpdump jq util-linux)

tenet_deps() {
  local missing=()
  for p in "${tenet_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "deps: missing packages ${missing[*]}; run as root to install them" >&2
      return 1
    fi
    echo "deps: installing ${missing[*]}" >&2
    apt-get update -qq
    # docker.io's service units do not start here (policy-rc.d); Tenet
    # starts its own engines per simulated host.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if ! command -v go >/dev/null; then
    echo "deps: no Go toolchain (expected at /usr/local/go/bin/go, Go 1.26 or newer)" >&2
    return 1
  fi
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && go mod download)
}
