#!/bin/sh
# Builds a VM image for Tenet's VM testbed: build.sh RELEASE PACKAGES OUTDIR
#
# A Debian RELEASE (bookworm, trixie) made with mmdebstrap from MIRROR
# (default: the mirror apt uses on this machine's kind), with the packages
# listed in PACKAGES, then docker.io installed as `apt-get install docker.io`
# would (recommends included: apparmor, iptables, ...). OUTDIR receives:
#   rootfs.img   ext4 file system of the whole disk (root=/dev/vda, no partitions)
#   vmlinuz, initrd.img   the image's own kernel and initramfs, for qemu -kernel
#   id_ed25519, id_ed25519.pub   the key root logs in with over ssh
#   versions     kernel and Docker versions, for the logs
# The guest reads its name and underlay address from the kernel command line
# (tenet.host=h0 tenet.addr=203.0.113.10/24) at every boot. mmdebstrap
# installs no recommends; docker.io gets them (apparmor's parser, without
# which Docker cannot load its docker-default profile) as Debian's apt
# default would. The testbed
# hashes this file and PACKAGES: changing either rebuilds the image.
set -eu
release=$1 packages=$2 out=$3
mirror=${MIRROR:-http://deb.debian.org/debian}
size=${IMAGE_SIZE:-6G}

mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
ssh-keygen -q -t ed25519 -N '' -C tenet-vm -f "$out/id_ed25519"

include=$(grep -v '^#' "$packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
# The initramfs only has to mount /dev/vda (virtio, ext4) and never waits for
# a resume device: MODULES=list with those modules takes seconds to build,
# where Debian's default (most) takes minutes.
initramfs_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" &&
  printf "RESUME=none\nMODULES=list\n" > "$1/etc/initramfs-tools/conf.d/tenet-vm" &&
  printf "virtio_pci\nvirtio_blk\nvirtio_net\next4\n" > "$1/usr/share/initramfs-tools/modules.d/tenet-vm"'
echo "$(date +%T) mmdebstrap $release from $mirror"
# dpkg's fsync after every file costs minutes on a busy disk and buys
# nothing for an image made in one go: unsafe-io, in both dpkg runs.
mmdebstrap --variant=apt --include="$include" --dpkgopt=force-unsafe-io \
  --essential-hook="$initramfs_hook" \
  --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o APT::Install-Recommends=true -o DPkg::Options::=--force-unsafe-io docker.io' \
  --customize-hook='chroot "$1" apt-get clean' \
  "$release" "$work/root" "$mirror"

root=$work/root
echo "$(date +%T) configure"
# Root logs in with the image's key only.
mkdir -p -m 700 "$root/root/.ssh"
cp "$out/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
chmod 600 "$root/root/.ssh/authorized_keys"
cat > "$root/etc/ssh/sshd_config.d/tenet-vm.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
CONF
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
echo 'tenet-vm' > "$root/etc/hostname"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"

# Name and underlay address from the kernel command line, at every boot.
# eth0 exists from the initramfs on (virtio_net is in it); waiting for its
# device unit instead would depend on udev's coldplug, which took over the
# default 90 s on a busy machine under TCG.
cat > "$root/usr/local/sbin/tenet-vm-net" <<'SH'
#!/bin/sh
set -eu
for w in $(cat /proc/cmdline); do
  case $w in
    tenet.host=*) host=${w#tenet.host=} ;;
    tenet.addr=*) addr=${w#tenet.addr=} ;;
  esac
done
hostname "$host"
echo "$host" > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$host" > /etc/hosts
ip link set lo up
until [ -e /sys/class/net/eth0 ]; do sleep 0.5; done
ip addr replace "$addr" dev eth0
ip link set eth0 up
SH
chmod 755 "$root/usr/local/sbin/tenet-vm-net"
cat > "$root/etc/systemd/system/tenet-vm-net.service" <<'UNIT'
[Unit]
Description=Underlay address and host name from the kernel command line
DefaultDependencies=no
After=local-fs.target
Wants=network-pre.target
Before=network-pre.target network.target network-online.target
[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/tenet-vm-net
[Install]
WantedBy=network-online.target multi-user.target
UNIT
chroot "$root" systemctl enable tenet-vm-net.service
# Nothing on a test VM reaches the internet: no periodic apt or man-db work.
for t in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer fstrim.timer; do
  chroot "$root" systemctl mask "$t" >/dev/null 2>&1 || true
done

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
cp "$kernel" "$out/vmlinuz"
cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$out/initrd.img"
{
  echo "release $release"
  echo "kernel ${kernel##*/vmlinuz-}"
  echo "docker.io $(chroot "$root" dpkg-query -W -f='${Version}' docker.io)"
  echo "apparmor $(chroot "$root" dpkg-query -W -f='${Version}' apparmor 2>/dev/null || echo none)"
} > "$out/versions"
echo "$(date +%T) mkfs.ext4"
mkfs.ext4 -q -F -L root -d "$root" "$work/rootfs.img" "$size"
mv "$work/rootfs.img" "$out/rootfs.img"
echo "$(date +%T) done"
