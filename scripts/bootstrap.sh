#!/usr/bin/env bash
# Creates .venv with the project and its dev tools; reruns only when pyproject.toml or the C
# sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON="$candidate"
      break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp=.venv/.installed
# The sources the install compiles too (setup.py names them): a stale extension module
# would shadow its edited .py file.
compiled="$(grep -oE '(stream_app|schemas)/[A-Za-z0-9_/]+\.(py|c)' setup.py | sort -u)"
# shellcheck disable=SC2086
want="$(cat pyproject.toml setup.py $compiled stream_app/customers/*.c | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "bootstrap: installing into .venv with $("$PYTHON" --version)"
# Extension modules of an earlier build would shadow sources that are no longer compiled, and
# setuptools skips an extension whose objects in build/ look up to date (none is copied then).
find stream_app schemas -name '*.so' -delete
rm -rf build
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "$want" > "$stamp"
echo "bootstrap: done"
