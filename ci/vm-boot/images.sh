# shellcheck shell=bash
# Builds (and caches under target/vm-boot/initsys) what ci/vm-boot/initsys
# boots (Debian's kernel comes from lib.sh's vm_fetch_kernel): two small Debian roots made by
# mmdebstrap from Debian's packages (one systemd, one sysvinit-core), and an
# initramfs that Debian's own dracut builds inside the systemd root. Every
# cache is keyed by the recipe that made it, so a changed recipe rebuilds.
# Runs outside the test's network namespace (it downloads packages).

# Packages of the two roots. Both get rsyslog (RHEL's /var/log/messages and
# boot.log come from syslog) and a DHCP client; the systemd root also
# carries what the dracut and anaconda-pre scenarios need (dracut, its
# network and live modules, curl for %post's download, python3 for the
# %pre parent). The SysV root downloads with wget, as RHEL 5 did; its
# rsyslog init script comes from orphan-sysvinit-scripts (Debian's rsyslog
# package ships none since bookworm).
ROOT_COMMON=rsyslog,iproute2,kmod,procps,isc-dhcp-client
# shellcheck disable=SC2034 # both read as ${!pkgs}
ROOT_PKGS_systemd=systemd,systemd-sysv,udev,curl,python3-minimal,dracut,dracut-network,dracut-live,$ROOT_COMMON
# shellcheck disable=SC2034
ROOT_PKGS_sysv=sysvinit-core,sysv-rc,initscripts,orphan-sysvinit-scripts,ifupdown,wget,$ROOT_COMMON

# configure_root DIR FLAVOR: what an installed RHEL-like system has and
# Debian's defaults do not: RHEL's syslog rules (/var/log/messages, and
# local7 into /var/log/boot.log), eth0 by DHCP, an fstab, a machine id (an
# installer sets one; an empty one makes systemd's first boot apply presets
# and run ConditionFirstBoot units). Nothing of anamon here: post_anamon
# puts that in, inside the guest.
configure_root() {
  local r=$1 flavor=$2
  echo "initsys-$flavor" >"$r/etc/hostname"
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$r/etc/machine-id"
  echo >>"$r/etc/machine-id"
  printf '/dev/vda / ext4 defaults 0 0\n' >"$r/etc/fstab"
  cat >"$r/etc/rsyslog.d/50-rhel.conf" <<'EOF'
# The rules of RHEL's rsyslog.conf that write the files anamon ships.
*.info;mail.none;authpriv.none;cron.none                /var/log/messages
local7.*                                                /var/log/boot.log
EOF
  if [ "$flavor" = systemd ]; then
    cat >"$r/etc/systemd/network/50-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
EOF
    chroot "$r" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1
  else
    cat >"$r/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
EOF
  fi
}

# build_root DIR FLAVOR: the root as a directory, cached.
build_root() {
  local dir=$1 flavor=$2 pkgs recipe
  pkgs=ROOT_PKGS_$flavor
  recipe="bookworm essential ${!pkgs} $(declare -f configure_root | sha256sum | cut -c1-16)"
  [ "$(cat "$dir.recipe" 2>/dev/null)" = "$recipe" ] && return 0
  echo "initsys: building the $flavor root with mmdebstrap (${!pkgs})"
  rm -rf "$dir" "$dir.recipe"
  mmdebstrap --quiet --variant=essential --include="${!pkgs}" bookworm "$dir" >"$dir.log" 2>&1 ||
    { tail -20 "$dir.log" >&2; return 1; }
  configure_root "$dir" "$flavor"
  echo "$recipe" >"$dir.recipe"
}

DRACUT_DRIVERS="virtio_pci virtio_blk virtio_net ext4 loop squashfs overlay isofs dm_mod dm_snapshot"

# build_dracut OUT ROOT KDIR [MODULES]: Debian's dracut, run inside the
# root with the kernel's modules, builds a generic (not host-only) initramfs
# with MODULES added (default: its live-update modules, livenet and
# dmsquash-live, for the systemd root). Only the drivers this
# guest has (and what dmsquash-live mounts) go in: a third of the size, and
# a much faster boot under TCG.
build_dracut() {
  local out=$1 r=$2 kdir=$3 add=${4:-network-legacy livenet dmsquash-live} recipe
  recipe="$(cat "$r.recipe") $KVER $DRACUT_DRIVERS"
  [ "$add" = "network-legacy livenet dmsquash-live" ] || recipe+=" add: $add"
  [ "$(cat "$out.recipe" 2>/dev/null)" = "$recipe" ] && [ -s "$out" ] && return 0
  echo "initsys: building the dracut initramfs (dracut in ${r##*/}, adding $add)"
  mkdir -p "$r/lib/modules/$KVER"
  mount --bind "$kdir/lib/modules/$KVER" "$r/lib/modules/$KVER"
  mount -t proc proc "$r/proc"
  local rc=0
  chroot "$r" depmod "$KVER" && chroot "$r" dracut --quiet --force --no-hostonly --no-hostonly-cmdline --gzip \
    --add "$add" --drivers "$DRACUT_DRIVERS" \
    --kver "$KVER" /tmp/initrd-dracut.img >"$out.log" 2>&1 || rc=$?
  umount "$r/proc" "$r/lib/modules/$KVER"
  rmdir "$r/lib/modules/$KVER" "$r/lib/modules" 2>/dev/null || true
  [ "$rc" = 0 ] || { tail -20 "$out.log" >&2; return 1; }
  mv "$r/tmp/initrd-dracut.img" "$out"
  echo "$recipe" >"$out.recipe"
}
