#!/bin/sh
# Builds Tenet's Debian package and prints its path:
#   scripts/package/deb.sh [OUTDIR]        (default: dist/)
# The package installs tenetd and tenetctl in /usr/bin, the systemd unit
# tenetd.service (ordered before docker.service) and /etc/default/tenetd, the
# options the unit passes to tenetd. Install it with `dpkg -i`; then follow
# the README ("Using Tenet with Docker").
set -eu
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH"
out=${1:-dist}
pkg=scripts/package

# Version from git: 0.0.0+git<commit date>.<commit>[.dirty].
version=0.0.0
if commit=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  version="0.0.0+git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$commit"
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    version="$version.dirty"
  fi
fi
arch=$(go env GOARCH)

root=$(mktemp -d)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/default" \
  "$root/usr/share/doc/tenet"
install -d -m 700 "$root/etc/tenet"
for cmd in tenetd tenetctl; do
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/$cmd" "./cmd/$cmd"
done
install -m 644 "$pkg/tenetd.service" "$root/lib/systemd/system/tenetd.service"
install -m 644 "$pkg/tenetd.default" "$root/etc/default/tenetd"
install -m 644 README.md "$root/usr/share/doc/tenet/README.md"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: tenet
Version: $version
Architecture: $arch
Maintainer: Tenet developers <tenet@localhost>
Section: net
Priority: optional
Installed-Size: $size
Recommends: docker.io
Description: multi-host, multi-tenant VXLAN overlay network for Docker
 tenetd serves Docker's remote network and IPAM driver protocols and joins
 the other hosts in an encrypted gossip ring; tenetctl defines tenants and
 networks for the whole cluster. Configure /etc/default/tenetd and
 /etc/tenet/key, then: systemctl enable --now tenetd
CONTROL
echo /etc/default/tenetd > "$root/DEBIAN/conffiles"
# The unit is enabled by the admin once configured; on removal it is stopped
# and disabled. Running containers keep their datapath (it is in the kernel).
cat > "$root/DEBIAN/postinst" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
SH
cat > "$root/DEBIAN/prerm" <<'SH'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now tenetd.service || true
fi
# The engine's "dns" loses the resolver (Docker applies it when it next
# starts); the admin's own servers stay.
if [ "$1" = remove ]; then
  tenetd docker-dns --undo || true
fi
SH
cat > "$root/DEBIAN/postrm" <<'SH'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SH
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/tenet_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
