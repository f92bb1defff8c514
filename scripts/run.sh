#!/usr/bin/env bash
# The run command (README): installs missing packages, builds the release preset and starts
# the daemon in the foreground. Arguments go to dealwire unchanged; with none it listens on
# 0.0.0.0:8000 (its default). Example: bash scripts/run.sh --port 9000 --log-level debug
#
# Database: unless a database is named (a --db argument, or DATABASE_URL / DEALWIRE_DB in the
# environment), a private PostgreSQL is started for the run with scripts/pg.sh on
# 127.0.0.1:$DW_PG_PORT (default 55432), its data kept in $DW_PG_DIR (default
# /tmp/dealwire-run-pg) from one run to the next, filled with the demo data set
# (--load-demo-data, a no-op once loaded), and stopped when the daemon exits. With that private
# database the demo market simulator runs too (--demo-activity 15: every 15 s while a client is
# connected, a new hot deal and a price drop under a watch of demo-user-001, on demo rows
# only), so the dashboard keeps showing new alerts from one run to the next; pass
# --demo-activity 0 to turn it off. It is never passed for a database you name.
#   DW_NO_DB=1       run without a database (no monitors)
#   DW_SKIP_DEPS=1   do not check packages (see scripts/deps.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh </dev/null
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target dealwire

named_db=0
for arg in "$@"; do
    case "$arg" in --db | --db=*) named_db=1 ;; esac
done
if [ "${DW_NO_DB:-0}" = 1 ] || [ "$named_db" = 1 ] || [ -n "${DATABASE_URL:-}" ] ||
    [ -n "${DEALWIRE_DB:-}" ]; then
    exec build/release/dealwire "$@"
fi

pg_dir=${DW_PG_DIR:-/tmp/dealwire-run-pg}
url=$(bash scripts/pg.sh start "$pg_dir" "${DW_PG_PORT:-55432}")
trap 'bash scripts/pg.sh stop "$pg_dir"' EXIT
echo "run.sh: private PostgreSQL at $url (data in $pg_dir), stopped when dealwire exits" >&2

# In the background so that this shell can pass SIGINT/SIGTERM on and then stop the server.
build/release/dealwire --db "$url" --load-demo-data --demo-activity 15 "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
rc=0
while :; do
    wait "$child" && rc=0 || rc=$?
    kill -0 "$child" 2>/dev/null || break # a trapped signal interrupted the wait: wait again
done
exit "$rc"
