# Sourced by the scripts here: installs Debian packages, tolerating a mirror that is
# mid-sync for one index. What was asked for is checked afterwards instead.
#   apt_install PKG...     install what is missing (runs apt-get update once)
#   apt_missing PKG...     prints the packages that are not installed
#   apt_require PKG...     apt_install, then fail with a clear message if any is missing

SUDO="${SUDO-}"
if [ -z "$SUDO" ] && [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED="${APT_UPDATED:-}"

apt_missing() {
  local p
  for p in "$@"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || printf '%s ' "$p"
  done
}

apt_install() {
  local missing
  missing="$(apt_missing "$@")"
  [ -n "$missing" ] || return 0
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq || echo "apt: apt-get update reported errors; trying the install anyway" >&2
    APT_UPDATED=1
  fi
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
    echo "apt: apt-get install $missing failed" >&2
}

apt_require() {
  apt_install "$@"
  local missing
  missing="$(apt_missing "$@")"
  if [ -n "$missing" ]; then
    echo "apt: still missing after apt-get install: $missing" >&2
    return 1
  fi
}
