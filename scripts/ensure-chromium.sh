#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed at /usr/bin/chromium, for the
# dashboard's browser test (tests/test_dashboard_browser.py). Idempotent: does nothing when
# it is already there. Installs with apt-get (as root, or through sudo when available) from
# Debian's package registry; never downloads a browser build of its own.
#
# Exit status: 0 Chromium is there, 1 it could not be installed (the test then skips and
# says why).
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "ensure-chromium: $CHROMIUM is missing and apt-get needs root (or passwordless sudo)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $CHROMIUM is missing and this is not a Debian-like system (no apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure-chromium: installing Debian's chromium package" >&2
# The package lists may be missing or old on a fresh machine: update once, then install.
if ! "${SUDO[@]}" apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -qq >/dev/null
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2
  exit 1
fi
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) installed" >&2
