# shellcheck shell=bash
# ci/vm-boot/di-mirror.sh: a local Debian mirror for the real
# debian-installer, built at test time from Debian's own packages and cached
# under target/vm-boot/debian-installer (a rerun downloads nothing).
# Sourced by ci/vm-boot/debian-installer; runs outside its network namespace.
#
#   di_mirror OUT SUITE KABI INITRD_STATUS
#     OUT/dists/SUITE/Release, OUT/dists/SUITE/main/binary-amd64/Packages*
#     and OUT/dists/SUITE/main/debian-installer/binary-amd64/Packages*,
#     OUT/pool/deb/*.deb and OUT/pool/udeb/*.udeb. The udebs: every udeb of SUITE's
#     main/debian-installer that the mirror apt uses serves, kernel module
#     udebs only for KABI (the netboot kernel's `uname -r`: anna loads only
#     those); what it does not serve is listed in OUT/MISSING-UDEBS, and
#     di_udebs (below) makes those d-i's install path needs from Debian's
#     own debs and sources where the mirror has them. The
#     debs: what debootstrap installs by default (Priority required and
#     important), the kernel (linux-image-amd64 with its recommends) and
#     grub-pc, with their dependencies, as apt resolves them against an
#     empty system. Unsigned: the preseed sets
#     debian-installer/allow_unauthenticated.
#
# apt runs with a private configuration (DI_APT), so the machine's apt
# sources and state stay as they are; it needs apt-utils (apt-ftparchive).

DI_APT_DIR=${DI_APT_DIR:-${VM_CACHE:-$PWD/target/vm-boot}/debian-installer/apt}

# di_apt COMMAND ARG...: apt-get or apt-cache with the private configuration.
di_apt() {
  local cmd=$1; shift
  "$cmd" -o Dir::Etc::SourceList="$DI_APT_DIR/etc/sources.list" \
    -o Dir::Etc::SourceParts="$DI_APT_DIR/etc/sources.list.d" \
    -o Dir::Etc::PreferencesParts="$DI_APT_DIR/etc/preferences.d" \
    -o Dir::State="$DI_APT_DIR/state" -o Dir::State::status="$DI_APT_DIR/status" \
    -o Dir::Cache="$DI_APT_DIR/cache" -o Debug::NoLocking=1 \
    -o APT::Architecture=amd64 -o APT::Architectures=amd64 "$@"
}

# di_apt_setup SUITE: the private sources (SUITE's main and
# main/debian-installer, from the mirror the machine's apt uses) and their
# lists, fetched once.
di_apt_setup() {
  local suite=$1 uri
  uri=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' \
    /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null)
  uri=${uri:-http://deb.debian.org/debian}
  mkdir -p "$DI_APT_DIR"/etc/sources.list.d "$DI_APT_DIR"/etc/preferences.d \
    "$DI_APT_DIR"/state/lists/partial "$DI_APT_DIR"/cache/archives/partial
  [ -f "$DI_APT_DIR/status" ] || : >"$DI_APT_DIR/status"
  local line="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main main/debian-installer"
  if [ "$(cat "$DI_APT_DIR/etc/sources.list" 2>/dev/null)" != "$line" ]; then
    echo "$line" >"$DI_APT_DIR/etc/sources.list"
    rm -f "$DI_APT_DIR"/state/lists/*Packages*
  fi
  # Sources too: the udebs the mirror lacks are built from them (di_udebs).
  local src="deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main"
  if [ "$(cat "$DI_APT_DIR/etc/sources.list.d/src.list" 2>/dev/null)" != "$src" ]; then
    echo "$src" >"$DI_APT_DIR/etc/sources.list.d/src.list"
    rm -f "$DI_APT_DIR"/state/lists/*Sources*
  fi
  if ! ls "$DI_APT_DIR"/state/lists/*debian-installer*Packages* >/dev/null 2>&1 ||
     ! ls "$DI_APT_DIR"/state/lists/*Sources* >/dev/null 2>&1; then
    di_apt apt-get -q update >"$DI_APT_DIR/update.log" 2>&1 ||
      { cat "$DI_APT_DIR/update.log" >&2; echo "di-mirror: apt-get update failed" >&2; return 1; }
  fi
}

# Prints "package=version" of each udeb to fetch: all of the list's, with
# the kernel module udebs of KABI only.
_di_udeb_list() {
  local kabi=$1 list
  list=$(ls "$DI_APT_DIR"/state/lists/*main_debian-installer_binary-amd64_Packages*)
  /usr/lib/apt/apt-helper cat-file "$list" | awk -v kabi="$kabi" '
    /^Package:/ {p = $2} /^Version:/ {v = $2} /^Kernel-Version:/ {k = $2}
    /^$/ {if (p != "" && (k == "" || k == kabi)) print p "=" v; p = v = k = ""}
    END {if (p != "" && (k == "" || k == kabi)) print p "=" v}'
}

di_mirror() {
  local out=$1 suite=$2 kabi=$3 status=$4 pool=$1/pool/udeb
  if [ -f "$out/dists/$suite/Release" ]; then
    # A mirror cached before di_udebs existed gets its udebs now.
    [ -f "$out/MADE-UDEBS" ] && return 0
    di_apt_setup "$suite" && di_udebs "$out" "$status" && _di_index "$out" "$suite"
    return
  fi
  command -v apt-ftparchive >/dev/null ||
    { echo "di-mirror: apt-ftparchive missing (apt-utils, ci/vm-boot/APT-PACKAGES)" >&2; return 1; }
  di_apt_setup "$suite" || return 1
  mkdir -p "$pool" "$out/pool/deb"
  # udebs, one download each: the mirror may lack some (a 404 fails only
  # that one).
  echo "di-mirror: fetching $suite's udebs for $kabi" >&2
  _di_udeb_list "$kabi" >"$out/UDEBS"
  # apt-get download goes on past a 404 and fails at the end: its status
  # says nothing here, the files do.
  local l i
  mapfile -t l <"$out/UDEBS"
  for ((i = 0; i < ${#l[@]}; i += 100)); do
    (cd "$pool" && di_apt apt-get -q download "${l[@]:i:100}" >/dev/null 2>&1) || :
  done
  find "$pool" -name '*.udeb' -printf '%f\n' | sed 's/_.*//' | sort >"$out/udebs.got"
  sed 's/=.*//' "$out/UDEBS" | sort | comm -23 - "$out/udebs.got" >"$out/MISSING-UDEBS"
  rm -f "$out/udebs.got"
  # debs: the closure apt computes against an empty system.
  echo "di-mirror: fetching $suite's base system" >&2
  local base
  base=$(/usr/lib/apt/apt-helper cat-file "$(ls "$DI_APT_DIR"/state/lists/*main_binary-amd64_Packages*)" |
    awk '/^Package:/ {p = $2} /^Priority: (required|important)$/ {print p}' | sort -u)
  # shellcheck disable=SC2086 # one package a word
  if ! di_apt apt-get -q -y -d --no-install-recommends install $base grub-pc \
         >"$DI_APT_DIR/debs.log" 2>&1 ||
     ! di_apt apt-get -q -y -d install linux-image-amd64 >>"$DI_APT_DIR/debs.log" 2>&1; then
    tail -20 "$DI_APT_DIR/debs.log" >&2
    echo "di-mirror: base system download failed" >&2
    return 1
  fi
  cp -l "$DI_APT_DIR"/cache/archives/*.deb "$out/pool/deb"/ 2>/dev/null ||
    cp "$DI_APT_DIR"/cache/archives/*.deb "$out/pool/deb"/
  di_udebs "$out" "$status" || return 1
  _di_index "$out" "$suite"
}

# di_udebs OUT INITRD_STATUS: the udebs of d-i's install path that the
# mirror lacks (OUT/MISSING-UDEBS) and the initrd does not carry
# (INITRD_STATUS, its var/lib/dpkg/status), made from Debian's own packages
# of the same version (di-udebs.py plan says which and how): a library or
# tool udeb from its source's deb, repacked under the udeb's control fields
# from d-i's Packages index; a d-i-only udeb built from its source package
# (apt-get source, dpkg-buildpackage -b; debhelper and po-debconf, in
# ci/vm-boot/APT-PACKAGES). Into OUT/pool/udeb; what
# was made, and how, in OUT/MADE-UDEBS; what could not be (the mirror lacks
# the source's tarball too), and why, in OUT/UNMADE-UDEBS. Builds stay under
# target/vm-boot/debian-installer/udeb-build.
di_udebs() {
  local out=$1 status=$2 here build
  here=$(dirname "${BASH_SOURCE[0]}")
  build=$(dirname "$DI_APT_DIR")/udeb-build
  mkdir -p "$build/debs" "$build/src"
  echo "di-mirror: making the udebs the mirror lacks from Debian's debs and sources" >&2
  python3 "$here/di-udebs.py" plan \
    <(/usr/lib/apt/apt-helper cat-file "$(ls "$DI_APT_DIR"/state/lists/*main_debian-installer_binary-amd64_Packages*)") \
    <(/usr/lib/apt/apt-helper cat-file "$(ls "$DI_APT_DIR"/state/lists/*main_binary-amd64_Packages*)") \
    "$out/MISSING-UDEBS" "$status" >"$build/plan" || return 1
  local how udeb from ver made=() unmade=() d f g
  while read -r how udeb from ver; do  # ver: build lines only
    case $how in
      repack)
        # from: DEB=VERSION[,LIBDEB=VERSION...], one download each, cached.
        local debs=() dv
        for dv in ${from//,/ }; do
          ls "$build/debs/${dv%%=*}_"*.deb >/dev/null 2>&1 ||
            (cd "$build/debs" && di_apt apt-get -q download "$dv" >>"$build/download.log" 2>&1) ||
            { echo "di-mirror: apt-get download $dv failed" >&2; return 1; }
          g=("$build/debs/${dv%%=*}_"*.deb)
          debs+=("${g[0]}")
        done
        python3 "$here/di-udebs.py" repack \
          <(/usr/lib/apt/apt-helper cat-file "$(ls "$DI_APT_DIR"/state/lists/*main_debian-installer_binary-amd64_Packages*)") \
          "$udeb" "$out/pool/udeb" "${debs[@]}" || return 1
        made+=("$udeb repacked from the deb(s) ${from//,/ }") ;;
      build)
        # The mirror may lack the source's tarball too (it does for every
        # d-i-only source but apt-setup): then the udeb stays missing.
        d=$build/src/$from-${ver#*:}
        if [ ! -f "$d.built" ] && [ ! -f "$d.unavailable" ]; then
          rm -rf "$d" && mkdir -p "$d"
          if ! (cd "$d" && di_apt apt-get -q source --download-only "$from=$ver" >"$d.log" 2>&1); then
            touch "$d.unavailable"
          else
            (cd "$d" && dpkg-source -x ./*.dsc tree >>"$d.log" 2>&1 &&
              cd tree && nice -n 10 dpkg-buildpackage -b -uc -us -d >>"$d.log" 2>&1) ||
              { tail -20 "$d.log" >&2; echo "di-mirror: building $from $ver failed ($d.log)" >&2; return 1; }
            touch "$d.built"
          fi
        fi
        if [ -f "$d.unavailable" ]; then
          unmade+=("$udeb: the mirror lacks the source $from $ver too ($(grep -o '404 .*' "$d.log" | head -1))")
          continue
        fi
        g=("$d/${udeb}_"*.udeb)
        f=${g[0]}
        [ -f "$f" ] || { echo "di-mirror: $from $ver built no $udeb" >&2; return 1; }
        cp "$f" "$out/pool/udeb/"
        made+=("$udeb built from the source $from $ver") ;;
    esac
  done <"$build/plan"
  printf '%s\n' "${made[@]}" >"$out/MADE-UDEBS"
  printf '%s\n' "${unmade[@]}" >"$out/UNMADE-UDEBS"
}

# The indices d-i reads: Packages (plain, .gz, .xz) of both components and a
# Release that lists them with their hashes (net-retriever and debootstrap
# check those even when the Release itself is not signed).
_di_index() {
  local out=$1 suite=$2 d
  (
    cd "$out" || exit 1
    # Removed, not overwritten: a reindex must not write through a hard
    # link into a copy of the cache (cp -al) or leave a stale .gz/.xz.
    for d in main/binary-amd64 main/debian-installer/binary-amd64; do
      mkdir -p "dists/$suite/$d"
      rm -f "dists/$suite/$d"/Packages* "dists/$suite/$d/Release"
    done
    # One directory each: apt-ftparchive indexes .deb and .udeb alike.
    apt-ftparchive packages pool/deb >"dists/$suite/main/binary-amd64/Packages"
    apt-ftparchive packages pool/udeb >"dists/$suite/main/debian-installer/binary-amd64/Packages"
    for d in main/binary-amd64 main/debian-installer/binary-amd64; do
      gzip -9nk "dists/$suite/$d/Packages"
      xz -k "dists/$suite/$d/Packages"
      # choose-mirror asks for main/binary-ARCH/Release to see that the
      # mirror carries the architecture.
      printf 'Archive: %s\nOrigin: Debian\nLabel: Debian\nComponent: main\nArchitecture: amd64\n' \
        "$suite" >"dists/$suite/$d/Release"
    done
    apt-ftparchive -o APT::FTPArchive::Release::Origin=Debian \
      -o APT::FTPArchive::Release::Label=Debian \
      -o APT::FTPArchive::Release::Suite="$suite" \
      -o APT::FTPArchive::Release::Codename="$suite" \
      -o APT::FTPArchive::Release::Architectures=amd64 \
      -o APT::FTPArchive::Release::Components=main \
      release "dists/$suite" >Release.new
    mv Release.new "dists/$suite/Release"
  )
}
