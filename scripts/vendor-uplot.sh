#!/usr/bin/env bash
# Refreshes the dashboard's vendored chart library from the npm registry:
#   scripts/vendor-uplot.sh [VERSION]     (default: the version in VERSION beside the files)
# The page loads nothing from the internet; the library ships inside the package
# (stream_app/dashboard/static/vendor/uplot/, MIT, with its LICENSE).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=stream_app/dashboard/static/vendor/uplot
version="${1:-$(sed -n 's/^uplot \([0-9.]*\).*/\1/p' "$dest/VERSION")}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "uplot@$version" >/dev/null && tar xzf uplot-*.tgz)
cp "$work/package/dist/uPlot.iife.min.js" "$work/package/dist/uPlot.min.css" "$work/package/LICENSE" "$dest/"
{
  echo "uplot $version, from the npm registry (npm pack uplot@$version): dist/uPlot.iife.min.js,"
  echo "dist/uPlot.min.css and LICENSE (MIT), unchanged. Refresh with scripts/vendor-uplot.sh."
  (cd "$dest" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE)
} > "$dest/VERSION"
echo "vendored uplot $version into $dest"
