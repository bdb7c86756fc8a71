#!/usr/bin/env bash
# Sets up everything Mycelium and its tests need on a fresh Debian machine, idempotently:
# system packages (when root), a virtualenv in .venv, and the project in editable mode.
# Fast on the second run: it only reinstalls when pyproject.toml, setup.py or the C
# extension (mycelium/_accel.c) changed.
set -euo pipefail
cd "$(dirname "$0")"

# chromium: the web app's and gateway's browser tests (driven by Playwright, pinned to its major);
# nodejs (with npm): the js-ipfs node the archive tests run (tools/ipfs).
APT_PACKAGES=(build-essential python3-dev python3-venv libgmp-dev iproute2 nftables iptables iputils-ping
              chromium nodejs)

missing_apt() {
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || echo "$pkg"
  done
}

if command -v dpkg >/dev/null 2>&1; then
  mapfile -t need < <(missing_apt)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing system packages: ${need[*]}" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "setup: missing system packages (install with sudo apt-get install ${need[*]}); continuing" >&2
    fi
  fi
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python >= 3.11 is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi

stamp=.venv/.mycelium-installed
want="$(cat pyproject.toml setup.py mycelium/_accel.c | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (first time takes about a minute)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# A real IPFS node for the archive tests (js-ipfs; see docs/archive.md). Reinstalled only when
# tools/ipfs/package.json changes; `npm install`, not `npm ci` (see ../shared/NOTES.md).
if command -v npm >/dev/null 2>&1; then
  ipfs_stamp=tools/ipfs/node_modules/.mycelium-installed
  ipfs_want="$(cat tools/ipfs/package.json | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$ipfs_stamp" ] || [ "$(cat "$ipfs_stamp")" != "$ipfs_want" ]; then
    echo "setup: installing the test IPFS node into tools/ipfs (first time takes a few minutes)" >&2
    (cd tools/ipfs && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$ipfs_want" > "$ipfs_stamp"
  fi
else
  echo "setup: npm not found; archive tests that need the IPFS node will fail" >&2
fi
