#!/usr/bin/env bash
# scripts/promtool.sh [DIR]: makes sure Prometheus's promtool is at DIR/promtool (default
# build/promtool/promtool) and prints its path on the last line. The metrics tests
# (tests/integration/test_metrics.py) check the daemon's /metrics, the alerting rules and the
# Grafana dashboard with it; scripts/test.sh runs this before the tests and exports the path
# as DW_PROMTOOL.
#
# Why not `apt-get install prometheus`: Debian's package installs and starts a service (and a
# user, and a data directory). Only its promtool binary is needed, so the package is fetched
# with `apt-get download` (no root, no install) in a temporary directory and only that binary
# is extracted (dpkg-deb -x). DW_PROMTOOL, when set to an executable, is used as it is.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath -m "${1:-$root/build/promtool}")

if [ -n "${DW_PROMTOOL:-}" ] && [ -x "$DW_PROMTOOL" ]; then
    echo "$DW_PROMTOOL"
    exit 0
fi
if [ -x "$dir/promtool" ] && "$dir/promtool" --version >/dev/null 2>&1; then
    echo "$dir/promtool"
    exit 0
fi

mkdir -p "$dir"
exec 9>"$dir/.lock" # one download at a time (presets may run tests in parallel)
flock 9
if [ -x "$dir/promtool" ]; then
    echo "$dir/promtool"
    exit 0
fi
work=$(mktemp -d)
chmod 755 "$work" # apt-get downloads as _apt, which must be able to write there
trap 'rm -rf "$work"' EXIT
echo "promtool: apt-get download prometheus" >&2
(cd "$work" && apt-get download prometheus >&2) || {
    echo "promtool: apt-get download prometheus failed (run apt-get update?)" >&2
    exit 1
}
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$dir/promtool.tmp"
mv "$dir/promtool.tmp" "$dir/promtool"
"$dir/promtool" --version >&2
echo "$dir/promtool"
