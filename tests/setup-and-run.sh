#!/usr/bin/env bash
# Install everything the test suite needs, then run it: lint, docs build, tests.
#
#   bash tests/setup-and-run.sh [pytest args...]
#
# As root on Debian/Ubuntu it also installs the real servers the lab and the
# integration tests use (mosquitto, coturn, chrony, miniupnpd, nftables, iptables,
# postgresql: the PNP store tests start a throwaway cluster with its binaries).
# Elsewhere those tests skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

APT_PACKAGES=(iproute2 nftables iptables mosquitto coturn chrony miniupnpd-nftables postgresql)

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian starts services on install where it can; the lab runs its own instances.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
fi

echo "== pip install -e .[dev]"
"$PY" -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .

echo "== mypy"
"$PY" -m mypy warpgate warpgate_plugins

echo "== docs (mkdocs build --strict)"
"$PY" -m mkdocs build --strict -q -d "$(mktemp -d)"

echo "== pytest"
exec "$PY" -m pytest "$@"
