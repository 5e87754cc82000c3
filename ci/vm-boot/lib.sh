# shellcheck shell=bash
# ci/vm-boot/lib.sh: boot Debian's kernel of any architecture under qemu
# (TCG) with a busybox initramfs, inside a network namespace of the test's
# own. Sourced by ci/vm-boot/run; other scenarios can source it too:
#
#   vm_arch ARCH                  the table's row for ARCH, as VM_* variables
#   vm_prefetch ARCH...           asks apt about all of them at once (optional)
#   vm_fetch_kernel ARCH          Debian's kernel for ARCH: VM_KVER, VM_KIMAGE
#   vm_modules ARCH MODULE...     .ko paths of MODULE and its dependencies, in
#                                 load order (built-in ones left out)
#   vm_busybox ARCH               path of Debian's static busybox for ARCH
#   vm_initramfs OUT ARCH INIT MODULES -- [--add SRC=DEST]...
#                                 a gzip cpio with busybox, INIT as /init, the
#                                 modules and /lib/modules/load-order
#   vm_netns "$0" "$@"            re-runs the calling script in a fresh network
#                                 namespace with only lo up (VMBOOT_IN_NETNS=1)
#   vm_qemu ARCH CONSOLE APPEND [QEMU ARG]...
#                                 boots VM_KIMAGE with VM_INITRD; returns qemu's
#                                 status (124 on VMBOOT_TIMEOUT); vm_qemu_argv
#                                 only builds that command line (VM_ARGV)
#   vm_guest_status CONSOLE       the N of the guest's "vmtest: exit status N"
#   vm_start_peer LOGDIR PORTFILE LOG
#                                 the real Cobbler peer (4.0.0b7) on 127.0.0.1
#
# Needs: root (unshare), apt-get (the foreign architectures added to dpkg:
# ci/setup does), dpkg-deb, updates-img ($UPDATES_IMG), ci/vm-boot/APT-PACKAGES.
# Everything downloaded is cached under target/vm-boot.

VM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VM_CACHE=${VM_CACHE:-$VM_ROOT/target/vm-boot}

# One row per architecture. arch: the agent's name for it (anamon.ARCH);
# debarch: Debian's; kernel: the metapackage whose Depends names the kernel
# package; console: the kernel's console device; nic: qemu's virtio-net
# device (its driver modules follow from it); the rest of the line: the qemu
# binary and its machine flags.
#   i586: Debian's 686 kernel needs cmov (on -cpu pentium it stops with "This
#         kernel requires the following features not present on the CPU:
#         cmov"), so the guest is a Pentium II: i686 without SSE or SSE2.
#   ppc64le: pseries with qemu's small Virtual Open Firmware instead of SLOF
#         (4 s to /init instead of 8); TCG has none of the spectre
#         workarounds the machine asks for by default, so say so.
vm_table() {
  cat <<'EOF'
x86_64  amd64   linux-image-amd64       ttyS0    virtio-net-pci qemu-system-x86_64 -M pc -device isa-debug-exit,iobase=0xf4,iosize=0x04
i586    i386    linux-image-686         ttyS0    virtio-net-pci qemu-system-i386 -M pc -cpu pentium2 -device isa-debug-exit,iobase=0xf4,iosize=0x04
aarch64 arm64   linux-image-arm64       ttyAMA0  virtio-net-pci qemu-system-aarch64 -M virt -cpu cortex-a57
ppc64le ppc64el linux-image-powerpc64le hvc0     virtio-net-pci qemu-system-ppc64 -M pseries,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off -cpu power8
s390x   s390x   linux-image-s390x       ttysclp0 virtio-net-ccw qemu-system-s390x -M s390-ccw-virtio
EOF
}

vm_die() { echo "vm-boot: $*" >&2; exit 1; }

vm_arch() {
  local arch debarch kernel console nic qemu
  while read -r arch debarch kernel console nic qemu; do
    [ "$arch" = "$1" ] || continue
    VM_ARCH=$arch VM_DEBARCH=$debarch VM_KERNEL_META=$kernel VM_CONSOLE=$console VM_NIC=$nic
    read -r -a VM_QEMU <<<"$qemu"
    # The NIC driver: virtio_pci for PCI devices (s390x's channel-attached
    # virtio_ccw is built into Debian's kernel). For callers of vm_modules.
    # shellcheck disable=SC2034
    if [[ $nic == *-pci ]]; then VM_NIC_MODULES=(virtio_pci virtio_net); else VM_NIC_MODULES=(virtio_net); fi
    return 0
  done < <(vm_table)
  vm_die "no architecture $1 in the table (one of: $(vm_table | awk '{printf "%s ", $1}'))"
}

# vm_apt KEY COMMAND...: COMMAND's output, remembered in the cache until
# apt's package lists change (apt-cache takes seconds on a machine without
# a pkgcache.bin, and every scenario asks it the same questions).
vm_apt() {
  local key=$1 out; shift
  _vm_memo_get "$key" && return 0
  out=$("$@")
  [ -z "$out" ] || printf '%s\t%s\n' "$key" "$out" >>"$VM_CACHE/apt-memo"
  echo "$out"
}
# Prints KEY's remembered answer; fails when there is none (and starts a new
# memo when apt's lists changed).
_vm_memo_get() {
  local memo=$VM_CACHE/apt-memo lists
  lists=$(find /var/lib/apt/lists -maxdepth 1 -printf '%f %T@\n' 2>/dev/null | sort | md5sum | cut -c1-16)
  mkdir -p "$VM_CACHE"
  [ "$(head -1 "$memo" 2>/dev/null)" = "$lists" ] || echo "$lists" >"$memo"
  awk -F'\t' -v k="$1" '$1 == k {print $2; found = 1; exit} END {exit !found}' "$memo"
}
_vm_candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

# vm_prefetch ARCH...: asks apt what vm_fetch_kernel and vm_busybox will ask
# for all ARCHes in two calls instead of three per architecture.
vm_prefetch() {
  local a metas=() pkgs=() memo=$VM_CACHE/apt-memo
  for a in "$@"; do
    vm_arch "$a"
    _vm_memo_get "kernel of $VM_KERNEL_META:$VM_DEBARCH" >/dev/null || metas+=("$VM_KERNEL_META:$VM_DEBARCH")
  done
  if [ ${#metas[@]} -gt 0 ]; then
    # apt leaves the host's architecture out of the names it prints.
    apt-cache depends "${metas[@]}" 2>/dev/null |
      awk -v h=":$(dpkg --print-architecture)" '/^[^ ]/ {p = $1; if (p !~ /:/) p = p h}
        /Depends: linux-image-[0-9]/ && !seen[p]++ {printf "kernel of %s\t%s\n", p, $2}' >>"$memo"
  fi
  for a in "$@"; do
    vm_arch "$a"
    _vm_memo_get "candidate busybox-static:$VM_DEBARCH" >/dev/null || pkgs+=("busybox-static:$VM_DEBARCH")
    a=$(vm_apt "kernel of $VM_KERNEL_META:$VM_DEBARCH" _vm_kernel_of "$VM_KERNEL_META:$VM_DEBARCH")
    a=${a%:*}:$VM_DEBARCH
    _vm_memo_get "candidate $a" >/dev/null || pkgs+=("$a")
  done
  [ ${#pkgs[@]} -gt 0 ] || return 0
  apt-cache policy "${pkgs[@]}" 2>/dev/null |
    awk -v h=":$(dpkg --print-architecture)" '/^[^ ]/ {p = $1; sub(/:$/, "", p); if (p !~ /:/) p = p h}
      /Candidate:/ && $2 != "(none)" {printf "candidate %s\t%s\n", p, $2}' >>"$memo"
}
_vm_kernel_of() { apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }

# Downloads (once) the .deb of PACKAGE:DEBARCH that apt would install now
# into the cache, and prints its path.
vm_deb() {
  local pkg=$1 debarch=$2 dir=$VM_CACHE/debs version deb log
  version=$(vm_apt "candidate $pkg:$debarch" _vm_candidate "$pkg:$debarch")
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    vm_die "apt knows no $pkg:$debarch (is $debarch added to dpkg? ci/setup does it)"
  fi
  deb=$dir/${pkg}_${version//:/%3a}_$debarch.deb
  if [ ! -f "$deb" ]; then
    echo "vm-boot: fetching $pkg:$debarch $version" >&2
    mkdir -p "$dir"
    if ! log=$(cd "$dir" && apt-get download "$pkg:$debarch=$version" 2>&1) || [ ! -f "$deb" ]; then
      vm_die "apt-get download $pkg:$debarch=$version failed:
$log"
    fi
  fi
  echo "$deb"
}

vm_fetch_kernel() {
  vm_arch "$1"
  local pkg
  pkg=$(vm_apt "kernel of $VM_KERNEL_META:$VM_DEBARCH" _vm_kernel_of "$VM_KERNEL_META:$VM_DEBARCH")
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(vm_apt "kernel of $VM_KERNEL_META:$VM_DEBARCH" _vm_kernel_of "$VM_KERNEL_META:$VM_DEBARCH")
  fi
  [ -n "$pkg" ] || vm_die "apt knows no $VM_KERNEL_META:$VM_DEBARCH (is $VM_DEBARCH added to dpkg? ci/setup does it)"
  pkg=${pkg%:*}
  VM_KVER=${pkg#linux-image-}
  VM_KDEB=$(vm_deb "$pkg" "$VM_DEBARCH")
  VM_KDIR=$VM_CACHE/kernel-$VM_KVER
  if [ ! -f "$VM_KDIR/.unpacked" ]; then
    rm -rf "$VM_KDIR" && mkdir -p "$VM_KDIR"
    # All of the modules (~400 MB, 4 s): cheaper than a pass over the
    # package for each one a scenario turns out to need.
    dpkg-deb --fsys-tarfile "$VM_KDEB" |
      tar -x -C "$VM_KDIR" --wildcards "./boot/vmlinu*-$VM_KVER" "./lib/modules/$VM_KVER"
    touch "$VM_KDIR/.unpacked"
  fi
  VM_KIMAGE=$(ls "$VM_KDIR"/boot/vmlinu*-"$VM_KVER")
}

# The path of module NAME's .ko in the unpacked kernel, or "builtin".
vm_ko() {
  local name=$1 ko
  if grep -q "/${name//_/[_-]}\.ko$" "$VM_KDIR/lib/modules/$VM_KVER/modules.builtin"; then
    echo builtin; return 0
  fi
  ko=$(find "$VM_KDIR/lib/modules" -name "$name.ko" | head -1)
  [ -n "$ko" ] || { echo "vm-boot: module $name is neither in $VM_KVER's package nor built in" >&2; return 1; }
  echo "$ko"
}

# vm_modules ARCH MODULE...: depth first, every module after the ones its
# depends= names. (No modules.dep: Debian's package leaves that to depmod
# at install time.)
vm_modules() {
  local arch=$1; shift
  if [ "${VM_ARCH:-}" != "$arch" ] || [ -z "${VM_KDIR:-}" ]; then vm_fetch_kernel "$arch"; fi
  local -A seen=()
  local order=() m
  _vm_visit() {
    local name=$1 ko dep
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    ko=$(vm_ko "$name") || return 1
    [ "$ko" != builtin ] || return 0
    for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
      _vm_visit "$dep" || return 1
    done
    order+=("$ko")
  }
  for m in "$@"; do _vm_visit "$m" || return 1; done
  [ ${#order[@]} = 0 ] || printf '%s\n' "${order[@]}"
}

vm_busybox() {
  vm_arch "$1"
  local deb dir=$VM_CACHE/busybox-$VM_DEBARCH
  if [ ! -x "$dir/bin/busybox" ]; then
    deb=$(vm_deb busybox-static "$VM_DEBARCH")
    rm -rf "$dir" && mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
  fi
  echo "$dir/bin/busybox"
}

vm_initramfs() {
  local out=$1 arch=$2 init=$3 mods=$4; shift 4
  [ "${1:-}" != -- ] || shift
  local busybox stage ko args=()
  busybox=$(vm_busybox "$arch")
  stage=$(mktemp -d)
  cp "$init" "$stage/init" && chmod 0755 "$stage/init"
  : >"$stage/load-order"
  args=(--add "$busybox=bin/busybox" --add "$stage/init=init" --add "$stage/load-order=lib/modules/load-order")
  while read -r ko; do
    [ -n "$ko" ] || continue
    args+=(--add "$ko=lib/modules/$(basename "$ko")")
    basename "$ko" .ko >>"$stage/load-order"
  done <"$mods"
  "$UPDATES_IMG" --format cpio --out "$out" "${args[@]}" "$@" >/dev/null
  rm -rf "$stage"
}

vm_netns() {
  [ "${VMBOOT_IN_NETNS:-}" = 1 ] && return 0
  export VMBOOT_IN_NETNS=1
  exec unshare -n "$@"
}

# VM_ARGV: the qemu command line for ARCH (without a timeout), for callers
# that run qemu themselves (in the background, say).
vm_qemu_argv() {
  local arch=$1 console=$2 append=$3; shift 3
  vm_arch "$arch"
  local nic=(-netdev "${VM_NETDEV:-user,id=n0}" -device "$VM_NIC,netdev=n0")
  [[ $VM_NIC != *-pci ]] || nic[3]+=",romfile="
  VM_ARGV=("${VM_QEMU[@]}" -accel tcg -m "${VM_MEM:-512}" -nodefaults -no-reboot
           -display none -serial "file:$console"
           -kernel "$VM_KIMAGE" -initrd "$VM_INITRD"
           -append "console=$VM_CONSOLE panic=-1 quiet $append" "${nic[@]}" "$@")
}

vm_qemu() {
  vm_qemu_argv "$@"
  timeout "${VMBOOT_TIMEOUT:-240}" "${VM_ARGV[@]}"
}

vm_guest_status() {
  grep -a 'vmtest: exit status' "$1" | tail -1 | sed 's/.*exit status \([0-9]*\).*/\1/'
}

vm_start_peer() {
  local logdir=$1 portfile=$2 log=$3
  rm -f "$portfile"
  setsid "$VM_ROOT/ci/peer/serve" --cobbler 4.0.0b7 --logdir "$logdir" --system vmtest \
    --port-file "$portfile" >"$log" 2>&1 &
  VM_PIDS+=($!)
  for _ in $(seq 600); do [ -s "$portfile" ] && return 0; sleep 0.1; done
  echo "vm-boot: the peer did not start:"; cat "$log"
  return 1
}

# Ends what vm_start_peer (and callers, through VM_PIDS) started.
vm_stop_all() {
  local p
  for p in "${VM_PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  VM_PIDS=()
}
VM_PIDS=()
