# Shared by the scripts in this folder: paths, pinned tool versions and the Python environment.
# shellcheck shell=bash

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Downloads and builds (uv, Kafka's jars, FerretDB) are keyed by version and shared by every clone.
HERALD_CACHE="${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}"
HERALD_STACK_DIR="${HERALD_STACK_DIR:-$HERALD_ROOT/.stack}"

UV_VERSION="0.13.8"
FERRETDB_VERSION="v1.24.2"
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"  # Debian 12's prometheus package: promtool for the alert tests
PYTHON_BIN="${HERALD_PYTHON:-python3.11}"

log() { printf '[herald] %s\n' "$*" >&2; }
die() { printf '[herald] error: %s\n' "$*" >&2; exit 1; }

# uv lives in its own small virtualenv in the cache; it then builds .venv from uv.lock.
ensure_uv() {
  local tools="$HERALD_CACHE/tools"
  if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version 2>/dev/null | awk '{print $2}')" != "$UV_VERSION" ]; then
    command -v "$PYTHON_BIN" >/dev/null || die "$PYTHON_BIN not found (Python 3.11 is required)"
    log "installing uv $UV_VERSION into $tools"
    "$PYTHON_BIN" -m venv "$tools"
    "$tools/bin/pip" install --quiet "uv==$UV_VERSION"
  fi
  UV="$tools/bin/uv"
}

# Installs the locked dependencies and every workspace package into .venv (fast when nothing changed).
ensure_python_env() {
  ensure_uv
  export UV_PYTHON_DOWNLOADS=never
  (cd "$HERALD_ROOT" && "$UV" sync --frozen --all-packages --python "$PYTHON_BIN" --quiet) \
    || die "uv sync failed"
  export PATH="$HERALD_ROOT/.venv/bin:$PATH"
}

# promtool (`promtool check rules`, `promtool test rules` for deploy/k8s/base/monitoring) from Debian's prometheus
# package, unpacked into the cache: nothing installed, no service started. Exports HERALD_PROMTOOL.
ensure_promtool() {
  local dir="$HERALD_CACHE/prometheus-$PROMETHEUS_DEB_VERSION"
  if [ ! -x "$dir/usr/bin/promtool" ]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
      || die "promtool comes from Debian's prometheus package (apt-get download prometheus)"
    log "fetching promtool (Debian's prometheus $PROMETHEUS_DEB_VERSION)"
    local tmp
    tmp="$(mktemp -d)"
    # the pinned version, else the one Debian has now (a point release replaces it)
    (cd "$tmp" && { apt-get download -qq "prometheus=$PROMETHEUS_DEB_VERSION" || apt-get download -qq prometheus \
      || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get download -qq prometheus; }; }) >/dev/null 2>&1 \
      || { rm -rf "$tmp"; die "apt-get download prometheus failed"; }
    mkdir -p "$dir" && dpkg-deb -x "$tmp"/prometheus_*.deb "$dir" && rm -rf "$tmp" \
      || die "unpacking Debian's prometheus package failed"
  fi
  export HERALD_PROMTOOL="$dir/usr/bin/promtool"
}
