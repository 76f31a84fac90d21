#!/usr/bin/env bash
# Installs headless Chromium for the console's browser test (tests/api/browser.rs) from Debian's
# `chromium` package when it is missing (idempotent: nothing to do when `chromium` runs), and prints
# the binary's path as its last line. No browser download from elsewhere: apt only. .ci/run runs it
# and sets CALLBOT_REQUIRE_BROWSER=1, so the test fails instead of skipping without a browser.
#
#   bash scripts/install-chromium.sh            # -> /usr/bin/chromium
set -euo pipefail

find_bin() {
  for candidate in "${CHROMIUM:-}" "$(command -v chromium 2>/dev/null || true)" /usr/bin/chromium; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

if bin=$(find_bin); then echo "$bin"; exit 0; fi
echo "chromium not found: installing Debian's chromium package" >&2
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-core >&2
bin=$(find_bin) || { echo "chromium still not usable after apt-get install" >&2; exit 1; }
echo "$bin"
