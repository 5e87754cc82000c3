# shellcheck shell=bash
# Helpers shared by ci/snippets/test and ci/snippets/sandbox (bash).
# Every result is one line "ok - ..." or "FAIL - ..." on stdout and in
# $RESULTS, which ci/snippets/test counts at the end.

ok()  { echo "ok - $*"; echo "ok - $*" >>"$RESULTS"; }
bad() { echo "FAIL - $*"; echo "FAIL - $*" >>"$RESULTS"; }
# check DESCRIPTION COMMAND...: ok when COMMAND succeeds.
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# alive PID: the process exists and is not a zombie (a zombie's cmdline is
# empty; the sandbox's PID 1 may reap late).
alive() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
    [ -n "$(tr -d '\0' <"/proc/$1/cmdline" 2>/dev/null)" ]
}

dead() { ! alive "$1"; }
# gone PID: there was a process (PID is not empty) and it is dead.
gone() { [ -n "${1:-}" ] && dead "$1"; }

# runs BINARY: it executes here and prints a version.
runs() { "$@" --version >/dev/null 2>&1; }

# arrives LOCAL REMOTE SECONDS: REMOTE becomes byte-identical to LOCAL.
arrives() {
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    cmp -s "$1" "$2" && return 0
    sleep 0.1
  done
  echo "    $2 never matched $1 (remote: $(stat -c %s "$2" 2>/dev/null || echo missing) bytes, local: $(stat -c %s "$1") bytes)"
  return 1
}

# make_root DIR systemd|sysv: a busybox-based installed system to chroot
# into, with stand-ins for systemctl/journalctl or chkconfig that act on
# the files (enablement symlinks) and record each call in /var/log/shim-calls.
make_root() {
  local r=$1 flavor=$2 applet
  rm -rf "$r"
  mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/local/sbin,etc,var/log,root,tmp,proc,dev,run}
  cp "$(command -v busybox)" "$r/bin/busybox"
  for applet in $(busybox --list); do
    [ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
  done
  : >"$r/dev/null"
  mount --bind /dev/null "$r/dev/null"
  # The sandbox's /proc (its own PID namespace): %post finds the %pre agent
  # there, as anaconda's chroot sees the installer's processes.
  mount --bind /proc "$r/proc"
  if [ "$flavor" = systemd ]; then
    mkdir -p "$r/etc/systemd/system"
    cat >"$r/usr/bin/systemctl" <<'EOF'
#!/bin/sh
# Test stand-in for systemctl enable/disable in an offline root: the
# [Install] section's WantedBy= decides where the symlink goes.
echo "systemctl $*" >>/var/log/shim-calls
unit=/etc/systemd/system/$2
target=$(sed -n 's/^WantedBy=//p' "$unit" 2>/dev/null)
[ -n "$target" ] || { echo "systemctl: $unit has no WantedBy=" >&2; exit 1; }
case "$1" in
  enable) mkdir -p "/etc/systemd/system/$target.wants" &&
          ln -sf "$unit" "/etc/systemd/system/$target.wants/$2" ;;
  disable) rm -f "/etc/systemd/system/$target.wants/$2" ;;
  *) exit 1 ;;
esac
EOF
    cat >"$r/usr/bin/journalctl" <<'EOF'
#!/bin/sh
echo "journalctl $*" >>/var/log/shim-calls
echo "-- test journal of this boot --"
echo "systemd[1]: Starting anamon.service"
EOF
    chmod 755 "$r/usr/bin/systemctl" "$r/usr/bin/journalctl"
  else
    mkdir -p "$r/etc/rc.d/init.d"
    cat >"$r/sbin/chkconfig" <<'EOF'
#!/bin/sh
# Test stand-in for chkconfig --add NAME / chkconfig --del NAME, reading the
# script's "# chkconfig: LEVELS START STOP" header as chkconfig does.
echo "chkconfig $*" >>/var/log/shim-calls
if [ "$1" = --add ]; then
  hdr=$(sed -n 's/^# chkconfig: *//p' "/etc/rc.d/init.d/$2")
  set -- "$2" $hdr
  [ -n "${2:-}" ] || { echo "chkconfig: no header in $1" >&2; exit 1; }
  levels=$(echo "$2" | sed 's/./& /g')
  for l in $levels; do
    mkdir -p "/etc/rc.d/rc$l.d" && ln -sf "../init.d/$1" "/etc/rc.d/rc$l.d/S$3$1"
  done
elif [ "$1" = --del ]; then
  rm -f /etc/rc.d/rc?.d/[SK]??"$2"
else
  exit 1
fi
EOF
    chmod 755 "$r/sbin/chkconfig"
  fi
}

# run_post ROOT CASE: the rendered %post, chrooted as anaconda runs it.
run_post() {
  local r=$1 c=$2 t0 rc took
  cp "$WORK/post.sh" "$r/tmp/post.sh"
  t0=$(now_ms)
  env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$r" /bin/sh /tmp/post.sh \
    >"$WORK/post-$c.out" 2>&1
  rc=$?
  took=$(( $(now_ms) - t0 ))
  sed 's/^/    %post: /' "$WORK/post-$c.out"
  check "$c: %post exits 0 within 8 s (took $took ms)" test "$rc" = 0 -a "$took" -lt 8000
  check "$c: %post installed a working agent" runs chroot "$r" /usr/local/sbin/anamon
  check "$c: /etc/sysconfig/anamon has Cobbler's keys and values" \
    sh -c '. "$1" && [ "$COBBLER_SERVER" = 127.0.0.1 ] && [ "$COBBLER_PORT" = "$2" ] &&
           [ "$COBBLER_NAME" = "$3" ] && [ -n "$LOGFILES" ]' _ \
    "$r/etc/sysconfig/anamon" "$PROXY_PORT" "$SYSTEM"
  check "$c: first-boot marker armed" test -f "$r/var/lib/anamon/firstboot"
  check "$c: shellcheck -s sh anamon-firstboot" shellcheck -s sh "$r/usr/local/sbin/anamon-firstboot"
  if [ -f "$r/etc/rc.d/init.d/anamon" ]; then
    check "$c: shellcheck -s sh init script" shellcheck -s sh "$r/etc/rc.d/init.d/anamon"
    check "$c: init script has a chkconfig header" \
      grep -q '^# chkconfig: 2345 99 95$' "$r/etc/rc.d/init.d/anamon"
    check "$c: init script has an LSB header" \
      grep -q '^### BEGIN INIT INFO$' "$r/etc/rc.d/init.d/anamon"
  fi
}

# first_boot ROOT systemd|sysv: the installed system boots for the first time.
first_boot() {
  local r=$1 flavor=$2 got=$PEERLOG/$SYSTEM f rc i
  head -c 2000 /dev/urandom | base64 >"$r/var/log/boot.log"
  head -c 4000 /dev/urandom | base64 >"$r/var/log/messages"
  head -c 1000 /dev/urandom | base64 >"$r/root/ks-post.log"
  rm -f "$got/boot.log" "$got/messages" "$got/ks-post.log" "$got/dmesg.log" "$got/journal.log"
  if [ "$flavor" = systemd ]; then
    mkdir -p "$r/run/systemd/system"   # what "booted with systemd" looks like
    # What systemd would run: the unit's ExecStart.
    local exec
    exec=$(sed -n 's/^ExecStart=//p' "$r/etc/systemd/system/anamon.service")
    env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$r" "$exec" \
      >"$WORK/firstboot-$flavor.out" 2>&1
    rc=$?
    check "$flavor: first boot ($exec) exits 0" test $rc = 0
  else
    local t0 took
    t0=$(now_ms)
    env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$r" /etc/rc.d/init.d/anamon start \
      >"$WORK/firstboot-$flavor.out" 2>&1
    rc=$?
    took=$(( $(now_ms) - t0 ))
    check "$flavor: /etc/rc.d/init.d/anamon start returns at once ($took ms)" test $rc = 0 -a $took -lt 2000
    # It works in the background; done when the marker is gone.
    for ((i = 0; i < 200; i++)); do [ -e "$r/var/lib/anamon/firstboot" ] || break; sleep 0.1; done
  fi
  sed 's/^/    first boot: /' "$WORK/firstboot-$flavor.out"
  for f in boot.log messages; do
    check "$flavor: first boot shipped /var/log/$f byte-identical" arrives "$r/var/log/$f" "$got/$f" 5
  done
  check "$flavor: first boot shipped /root/ks-post.log" arrives "$r/root/ks-post.log" "$got/ks-post.log" 5
  check "$flavor: dmesg written to /var/log/anamon/dmesg.log" test -f "$r/var/log/anamon/dmesg.log"
  if [ -s "$r/var/log/anamon/dmesg.log" ]; then
    check "$flavor: dmesg.log shipped byte-identical" arrives "$r/var/log/anamon/dmesg.log" "$got/dmesg.log" 5
  fi
  if [ "$flavor" = systemd ]; then
    check "systemd: journal.log shipped byte-identical" arrives "$r/var/log/anamon/journal.log" "$got/journal.log" 5
    check "systemd: the unit disabled itself" \
      test ! -e "$r/etc/systemd/system/multi-user.target.wants/anamon.service"
    check "systemd: systemctl disable was called" grep -qx "systemctl disable anamon.service" "$r/var/log/shim-calls"
  else
    check "sysv: no journal.log without systemd" test ! -e "$got/journal.log"
    check "sysv: the init script removed itself (no rc?.d/[SK]??anamon)" \
      sh -c '! ls "$1"/etc/rc.d/rc?.d/[SK]??anamon >/dev/null 2>&1' _ "$r"
    check "sysv: chkconfig --del anamon was called" grep -qx "chkconfig --del anamon" "$r/var/log/shim-calls"
  fi
  check "$flavor: first-boot marker removed" test ! -e "$r/var/lib/anamon/firstboot"
  # A second boot does nothing.
  local calls
  calls=$(wc -l <"$r/var/log/shim-calls")
  env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$r" /usr/local/sbin/anamon-firstboot \
    >"$WORK/secondboot-$flavor.out" 2>&1
  rc=$?
  check "$flavor: second boot does nothing (exit 0, no service calls)" \
    test $rc = 0 -a "$(wc -l <"$r/var/log/shim-calls")" = "$calls"
}
