# shellcheck shell=bash
# private_tmp REPO: a fresh tmpfs on /tmp, as an installer has, for a test
# already in a private mount namespace. The checkout REPO (and whatever the
# test keeps under its target/) may itself live under /tmp, as CI clones
# wherever it likes: then its top directory is moved aside and back on top,
# so it stays visible at its own path.
private_tmp() {
  local repo=$1 keep="" hold=""
  case $repo/ in
    /tmp/?*) keep=/tmp/$(printf '%s' "${repo#/tmp/}" | cut -d/ -f1) ;;
  esac
  if [ -n "$keep" ]; then
    hold=$(mktemp -d /run/anamon-sandbox.XXXXXX) && mount --bind "$keep" "$hold" || return 1
  fi
  mount -t tmpfs -o mode=1777 tmpfs /tmp || return 1
  if [ -n "$keep" ]; then
    mkdir -p "$keep" && mount --move "$hold" "$keep" && rmdir "$hold"
  fi
}
