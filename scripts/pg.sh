#!/usr/bin/env bash
# A private PostgreSQL server in a directory of its own, for the integration tests and for
# trying dealwire with a database. Debian's postgresql package (initdb, pg_ctl) is all it needs.
#
#   scripts/pg.sh start DIR PORT   create DIR and initialise a cluster in it (first time only),
#                                  start it on 127.0.0.1:PORT, wait until it accepts
#                                  connections, make sure database "dealwire" exists, and print
#                                  the connection URL on stdout (the only thing printed there)
#   scripts/pg.sh stop DIR         fast shutdown, waiting until it is done; no-op if not running
#   scripts/pg.sh url DIR          print the URL of the server in DIR (last started port)
#   scripts/pg.sh psql DIR ARGS... run psql on database "dealwire" of that server
#
# The server listens on 127.0.0.1 only, has no Unix socket, and trusts every connection from
# 127.0.0.1 (no password): it is for a test or a demo, never for data you want to keep (fsync
# is off as well). Its log is DIR/postgres.log.
#
# initdb refuses to run as root. As root (CI), the cluster is owned and run by the "postgres"
# user that Debian's package creates: DIR is chown'd to it, so every directory above DIR must
# let that user through (/tmp/xyz does; pytest's /tmp/pytest-of-root/... does not).
set -euo pipefail

die() {
    echo "pg.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$d" ] && [ -x "$d/initdb" ] ||
        die "no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)"
    echo "$d"
}

# Runs a command as the cluster's owner: the postgres user when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

url_of() {
    echo "postgresql://postgres@127.0.0.1:$1/dealwire"
}

cmd_start() {
    local dir=$1 port=$2 bin
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
        die "bad port '$port'"
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 0700 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres user (apt-get install postgresql)"
        chown -R postgres:postgres "$dir"
        runuser -u postgres -- test -w "$dir" ||
            die "user postgres cannot reach $dir; use a directory it can traverse, e.g. under /tmp"
    fi

    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
            --no-locale >"$dir/initdb.log" 2>&1 ||
            die "initdb failed; see $dir/initdb.log: $(tail -n 3 "$dir/initdb.log")"
        as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<'EOF'

# scripts/pg.sh: a private throwaway server on loopback
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
        as_owner tee "$dir/data/pg_hba.conf" >/dev/null <<'EOF'
# scripts/pg.sh: anyone on 127.0.0.1 may connect as any user, without a password.
host all all 127.0.0.1/32 trust
EOF
    fi

    if as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        die "a server is already running in $dir (port $(cat "$dir/port" 2>/dev/null || echo '?'))"
    fi
    echo "$port" | as_owner tee "$dir/port" >/dev/null
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
        -o "-p $port" start >/dev/null 2>&1; then
        die "server did not start on 127.0.0.1:$port; from $dir/postgres.log: $(tail -n 3 "$dir/postgres.log" 2>/dev/null | tr '\n' ' ')"
    fi
    if [ -z "$(as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atq \
        -c "SELECT 1 FROM pg_database WHERE datname = 'dealwire'")" ]; then
        as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -q \
            -c 'CREATE DATABASE dealwire' >/dev/null
    fi
    url_of "$port"
}

cmd_stop() {
    local dir=$1 bin
    bin=$(bindir)
    [ -d "$dir/data" ] || die "no cluster in $dir"
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        return 0
    fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

cmd_url() {
    [ -f "$1/port" ] || die "no server was started in $1"
    url_of "$(cat "$1/port")"
}

cmd_psql() {
    local dir=$1 bin
    shift
    bin=$(bindir)
    [ -f "$dir/port" ] || die "no server was started in $dir"
    "$bin/psql" -h 127.0.0.1 -p "$(cat "$dir/port")" -U postgres -d dealwire "$@"
}

[ $# -ge 2 ] || usage
case "$1" in
start) [ $# -eq 3 ] || usage; cmd_start "$2" "$3" ;;
stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
url) [ $# -eq 2 ] || usage; cmd_url "$2" ;;
psql) dir=$2; shift 2; cmd_psql "$dir" "$@" ;;
*) usage ;;
esac
