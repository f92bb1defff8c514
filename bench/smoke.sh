#!/usr/bin/env bash
# bench smoke test: does dealwire-bench work end to end against a real daemon? It never
# measures speed: it only checks that every scenario runs, stops by itself and says COMPLETE.
#
#   bash bench/smoke.sh [DAEMON [BENCH]]
#
# DAEMON defaults to build/debug/dealwire, BENCH to dealwire-bench next to it. The daemon is
# started on a free loopback port, each scenario runs with a few dozen connections and a few
# hundred messages, and the daemon is stopped by its PID (SIGTERM, then wait). Works with
# sanitizer builds too (they are slower; every run is still bounded by --timeout).
# TLS: the bench's --tls must fail clearly against the plain daemon; when the daemon's --help
# lists --tls-cert, a second daemon is started with a throwaway certificate
# (scripts/devcert.sh) and fanout and connect run again over wss.
# Replay: it must fail clearly against the daemon without --db; when PostgreSQL is installed
# (scripts/pg.sh; about a second to start), a private server and a daemon with --db are started
# and the replay scenario runs (several users, a history of more than one page, a second run
# on the same users resuming from --last-seq); otherwise those runs are skipped, and said so.
# Publisher shapes: --publish-mode ws runs on the daemon's publish socket once it has one (an
# upgrade on /ws/publish answers 101; else those runs are skipped, and said so; over TLS, with
# replay and on the cluster too), and
# --publish-mode pipeline must either run COMPLETE or fail by itself saying that the daemon
# refused the pipelining (it prints which). --api-token: a daemon started with one must take
# the bench's publishes that carry it (HTTP, and the publish socket) and refuse those without.
# Storm (bench/compare --scenario storm, small): a paced run on a channel of its own with
# --marks, and a connect run of other clients between two SIGUSR1s; the span must hold
# deliveries and the storm's clients must get none of the stream.
# Cluster: when redis-server and PostgreSQL are installed, two daemons share a private Redis
# (--redis) and database, the bench spreads its clients over both (--ports) and publishes on
# one (--publish-port): every client must still get every message once and in order.
# Last line: "bench smoke: N passed, M failed"; exit status 0 only when M is 0.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

daemon=${1:-build/debug/dealwire}
bench=${2:-$(dirname "$daemon")/dealwire-bench}
for f in "$daemon" "$bench"; do
    if [ ! -x "$f" ]; then
        echo "bench smoke: $f is not an executable (build it first)" >&2
        echo "bench smoke: 0 passed, 1 failed"
        exit 1
    fi
done

work=$(mktemp -d /tmp/dealwire-bench-smoke.XXXXXX)
daemon_pid=""
daemon_log=$work/daemon.out
other_pid="" # cluster runs: the first node, while daemon_pid is the second
redis_pid=""
pg_dir=""
ports="" # cluster runs: the bench's --ports instead of --port
passed=0
failed=0

cleanup() {
    local pid
    for pid in "$daemon_pid" "$other_pid" "$redis_pid"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
        fi
    done
    if [ -n "$pg_dir" ]; then
        bash scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1
        rm -rf "$pg_dir"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A port nobody listens on, below the ephemeral range so that no client socket takes it.
free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if [ -z "$(ss -Htln "sport = :$port" 2>/dev/null)" ]; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# ready PORT [CURL ARGS...]: /healthz answers 200 (https when curl args are given).
ready() {
    local p=$1
    shift
    if [ $# -gt 0 ]; then
        curl -fs --max-time 1 "$@" "https://127.0.0.1:$p/healthz" >/dev/null 2>&1
    else
        curl -fs --max-time 1 "http://127.0.0.1:$p/healthz" >/dev/null 2>&1
    fi
}

# start_daemon [DAEMON ARGS...]: starts the daemon (its output in $daemon_log); a port taken
# between the check and the bind means another try. With --tls-cert among the args, /healthz is
# asked over https.
start_daemon() {
    local curl_tls=()
    case " $* " in
    *" --tls-cert "*) curl_tls=(--cacert "$work/cert.pem") ;;
    esac
    for _ in 1 2 3 4 5; do
        port=$(free_port) || break
        "$daemon" --host 127.0.0.1 --port "$port" --log-level warn "$@" >"$daemon_log" 2>&1 &
        daemon_pid=$!
        for _ in $(seq 1 100); do
            if ready "$port" "${curl_tls[@]}"; then
                return 0
            fi
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$daemon_pid" 2>/dev/null; then
            kill -TERM "$daemon_pid"
        fi
        wait "$daemon_pid" 2>/dev/null
        daemon_pid=""
    done
    return 1
}

# pass NAME TEXT, fail_check NAME TEXT: count one check and say how it went; a failure also
# shows what the run printed ($work/NAME.out, NAME.err).
pass() {
    passed=$((passed + 1))
    echo "ok   $1: $2"
}
fail_check() {
    local f
    failed=$((failed + 1))
    echo "FAIL $1 $2"
    for f in "$work/$1.out" "$work/$1.err"; do
        [ -f "$f" ] && sed 's/^/     /' "$f"
    done
}

# check NAME ARGS...: one bench run that must exit 0, say COMPLETE and print its JSON line.
# It runs against $port, or over $ports (--ports) during the cluster runs.
check() {
    local name=$1 rc at=(--port "$port")
    shift
    [ -n "$ports" ] && at=(--ports "$ports")
    "$bench" "${at[@]}" --quiet --timeout 40 "$@" >"$work/$name.out" 2>"$work/$name.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^  result      COMPLETE' "$work/$name.out" &&
        grep -q '^{"bench":"dealwire-bench".*"complete":true' "$work/$name.out"; then
        pass "$name" "$(grep -o '"deliveries":[0-9]*' "$work/$name.out" | head -1) ($*)"
    else
        fail_check "$name" "(exit $rc): $*"
    fi
}

if ! start_daemon; then
    echo "bench smoke: cannot start $daemon" >&2
    sed 's/^/     /' "$daemon_log" >&2
    echo "bench smoke: 0 passed, 1 failed"
    exit 1
fi
echo "bench smoke: $daemon (pid $daemon_pid) on 127.0.0.1:$port, bench $bench"

check fanout --scenario fanout --connections 40 --messages 300
check fanout-batch --scenario fanout --connections 30 --messages 400 --batch 8 --window 32 \
    --sources 3
check targeted --scenario targeted --connections 40 --messages 400 --publishers 4
check channels --scenario channels --connections 40 --messages 300 --channels 10 \
    --subs-per-conn 3
check paced --scenario paced --connections 30 --rate 200 --duration 1.5
check idle --scenario idle --connections 50 --settle 0.5 --server-pid "$daemon_pid"
check connect --scenario connect --connections 50 --parallel 10
check paced-channel --scenario paced --connections 30 --rate 200 --duration 1.5 \
    --channel smoke-paced
check fanout-channel --scenario fanout --connections 20 --messages 200 --channel smoke.fan:1

# check_storm NAME ARGS...: a paced run with --marks (and ARGS), and while it runs a connect run
# of 60 other clients, with a SIGUSR1 to the paced run before the connect run and one after it
# (bench/compare's storm scenario, small). Both must be COMPLETE, the marked span must hold
# deliveries, and the connect run's clients must have received nothing.
check_storm() {
    local name=$1 rc storm_rc pid
    shift
    "$bench" --port "$port" --quiet --timeout 40 --scenario paced --connections 30 --rate 500 \
        --duration 2 --marks "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pid=$!
    sleep 0.8
    kill -0 "$pid" 2>/dev/null && kill -USR1 "$pid"
    "$bench" --port "$port" --quiet --timeout 40 --scenario connect --connections 60 \
        --parallel 20 --user-prefix "storm-$$-" >"$work/$name-storm.out" 2>&1
    storm_rc=$?
    kill -0 "$pid" 2>/dev/null && kill -USR1 "$pid"
    wait "$pid"
    rc=$?
    if [ $rc -eq 0 ] && [ $storm_rc -eq 0 ] &&
        grep -q '^{"bench":"dealwire-bench".*"complete":true' "$work/$name.out" &&
        grep -q '"marks":2,.*"marked_samples":[1-9]' "$work/$name.out" &&
        grep -q '^{"bench".*"deliveries":0,.*"complete":true' "$work/$name-storm.out"; then
        pass "$name" "$(grep -o '^  marked .*' "$work/$name.out" | sed 's/^  marked *//' |
            cut -d';' -f1) ($*)"
    else
        cat "$work/$name-storm.out" >>"$work/$name.err"
        fail_check "$name" "(exit $rc, storm exit $storm_rc): $*"
    fi
}
check_storm storm --channel smoke-storm

# has_ws_publish: an upgrade on the daemon's /ws/publish answers 101 (404 before it had one).
has_ws_publish() {
    local code
    code=$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' -H 'Connection: Upgrade' \
        -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
        -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' "$@" "http://127.0.0.1:$port/ws/publish")
    [ "$code" = 101 ]
}
ws_publish=false
has_ws_publish && ws_publish=true
if $ws_publish; then
    check publish-ws --scenario fanout --connections 40 --messages 300 --publish-mode ws \
        --publishers 2
    check publish-ws-batch --scenario fanout --connections 30 --messages 400 --batch 8 \
        --window 32 --publish-mode ws --publishers 1 --in-flight 4
    check publish-ws-targeted --scenario targeted --connections 40 --messages 400 \
        --publish-mode ws --publishers 4
    check publish-ws-channel --scenario paced --connections 20 --rate 200 --duration 1 \
        --publish-mode ws --publishers 2 --channel smoke-ws
else
    echo "skip publish-ws runs: $daemon has no publish socket (/ws/publish does not upgrade)"
fi

# check_pipeline NAME ARGS...: --publish-mode pipeline runs COMPLETE, or ends by itself (exit 1)
# saying the daemon refused the pipelining; either passes, and says which.
check_pipeline() {
    local name=$1 rc
    shift
    "$bench" --port "$port" --quiet --timeout 20 --drain-timeout 2 "$@" >"$work/$name.out" \
        2>"$work/$name.err"
    rc=$?
    if [ $rc -eq 0 ] && grep -q '^  result      COMPLETE' "$work/$name.out"; then
        pass "$name" "COMPLETE, the daemon reads pipelined requests ($*)"
    elif [ $rc -eq 1 ] && grep -q '^  first error .*pipelining refused by the server' \
        "$work/$name.out"; then
        pass "$name" "refused, as expected today: $(grep -o 'first error .*' "$work/$name.out")"
    else
        fail_check "$name" "(exit $rc, expected COMPLETE or 'pipelining refused'): $*"
    fi
}
check_pipeline publish-pipeline --scenario fanout --connections 40 --messages 300 \
    --publish-mode pipeline --publishers 2

# Options --server nchan cannot honour, and TLS options that do not fit together, are
# refused before any connection (exit 2).
check_usage() {
    local name=$1 rc
    shift
    "$bench" --port "$port" --quiet "$@" >"$work/$name.out" 2>&1
    rc=$?
    if [ $rc -eq 2 ]; then
        pass "$name" "refused ($*)"
    else
        fail_check "$name" "(exit $rc, expected 2): $*"
    fi
}
check_usage nchan-batch --server nchan --batch 4 --messages 10
check_usage nchan-channels --server nchan --scenario channels --messages 10
check_usage server-name --server apache --messages 10
check_usage tls-no-ca --tls --messages 10
check_usage tls-ca-alone --tls-ca /dev/null --messages 10
check_usage tls-ca-unreadable --tls --tls-ca "$work/none.pem" --messages 10
# --ports names every node: not with --port (given here), each port once, not with nchan.
check_usage ports-and-port --ports 8001,8002 --messages 10
check_usage ports-nchan --server nchan --publish-port 8001 --messages 10
check_usage publish-port-idle --scenario idle --publish-port 8001
# --in-flight is for the shapes that have more than one request in flight; nchan's publish
# socket is bound to one channel, so not for targeted.
check_usage publish-mode-name --publish-mode http2 --messages 10
check_usage in-flight-http --in-flight 4 --messages 10
check_usage ws-nchan-targeted --server nchan --publish-mode ws --scenario targeted --messages 10
check_usage publish-mode-idle --scenario idle --publish-mode ws
# --channel: fanout and paced only, a name dealwire takes from anyone; --marks: a run that
# publishes.
check_usage channel-targeted --scenario targeted --channel x --messages 10
check_usage channel-name --channel 'a b' --messages 10
check_usage channel-private --channel private-x --messages 10
check_usage marks-connect --scenario connect --marks

# check_fails NAME PATTERN ARGS...: a run that must end by itself, exit 1 and name PATTERN.
check_fails() {
    local name=$1 pattern=$2 rc
    shift 2
    "$bench" --port "$port" --quiet --timeout 20 "$@" >"$work/$name.out" 2>&1
    rc=$?
    if [ $rc -eq 1 ] && grep -q "^  first error .*$pattern" "$work/$name.out"; then
        pass "$name" "$(grep -o 'first error .*' "$work/$name.out")"
    else
        fail_check "$name" "(exit $rc, expected 1 and '$pattern'): $*"
    fi
}
check_fails tls-to-plain 'wrong version number' --tls --tls-insecure --connections 5 \
    --messages 10
check_fails replay-no-db 'needs a daemon started with --db' --scenario replay --connections 5 \
    --backlog 3
check_usage replay-messages --scenario replay --connections 5 --messages 10
check_usage backlog-alone --scenario fanout --backlog 10 --messages 10

# stop_daemon [WHAT]: the daemon must still be healthy, and stop cleanly.
stop_daemon() {
    local rc
    kill -TERM "$daemon_pid"
    wait "$daemon_pid"
    rc=$?
    daemon_pid=""
    if [ $rc -eq 0 ] && ! grep -qE 'AddressSanitizer|runtime error:|ThreadSanitizer|LeakSanitizer' \
        "$daemon_log"; then
        pass daemon "${1:+$1, }stopped cleanly"
    else
        fail_check daemon "${1:+$1, }exit status $rc"
    fi
}
stop_daemon

# --api-token: publishes carry it (HTTP, and the publish socket's upgrade); without it, 401.
token=smoke-token-$$-0123456789abcdef
if start_daemon --api-token "$token"; then
    echo "bench smoke: $daemon with --api-token (pid $daemon_pid) on 127.0.0.1:$port"
    check publish-token --scenario fanout --connections 20 --messages 100 --api-token "$token"
    check_fails publish-no-token 'HTTP 401' --connections 5 --messages 10
    if has_ws_publish -H "Authorization: Bearer $token"; then
        check publish-ws-token --scenario fanout --connections 20 --messages 100 \
            --publish-mode ws --api-token "$token"
        check_fails publish-ws-no-token 'upgrade refused: HTTP/1.1 401' --connections 5 \
            --messages 10 --publish-mode ws
    else
        echo "skip publish-ws-token runs: $daemon has no publish socket"
    fi
    stop_daemon "with --api-token"
else
    fail_check daemon "cannot start $daemon with --api-token"
fi

# wss, once the daemon terminates TLS itself (--tls-cert, --tls-key).
if "$daemon" --help 2>&1 | grep -q -- '--tls-cert'; then
    bash scripts/devcert.sh "$work" >/dev/null
    if start_daemon --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"; then
        echo "bench smoke: $daemon over TLS (pid $daemon_pid) on 127.0.0.1:$port"
        check fanout-tls --tls --tls-ca "$work/cert.pem" --scenario fanout --connections 40 \
            --messages 300
        check connect-tls --tls --tls-ca "$work/cert.pem" --scenario connect --connections 50 \
            --parallel 10
        if $ws_publish; then
            check publish-ws-tls --tls --tls-ca "$work/cert.pem" --scenario fanout \
                --connections 20 --messages 200 --publish-mode ws --publishers 2
        fi
        bash scripts/devcert.sh "$work/other" >/dev/null
        check_fails tls-wrong-ca 'certificate verify failed' --tls --tls-ca \
            "$work/other/cert.pem" --connections 5 --messages 10
        stop_daemon "over TLS"
    else
        fail_check daemon "cannot start $daemon with --tls-cert"
    fi
else
    echo "skip wss runs: $daemon has no --tls-cert yet"
fi

# A private PostgreSQL (scripts/pg.sh), for the replay and the cluster runs, when installed.
have_pg=false
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && have_pg=true
pg_url=""

# start_pg: starts it, once (pg_url); returns 1, the check failed, when it does not start.
start_pg() {
    [ -n "$pg_url" ] && return 0
    pg_dir=$(mktemp -d /tmp/dealwire-bench-smoke-pg.XXXXXX)
    for _ in 1 2 3; do
        pg_port=$(free_port) || break
        if pg_url=$(bash scripts/pg.sh start "$pg_dir" "$pg_port" 2>"$work/pg.err"); then
            return 0
        fi
        pg_url=""
    done
    fail_check pg "cannot start PostgreSQL: $(tail -n 2 "$work/pg.err")"
    return 1
}

# wait_db PORT: /healthz answers before the database is connected; /readyz once it is.
wait_db() {
    for _ in $(seq 1 100); do
        curl -fs --max-time 1 "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
}

# replay, against a daemon with a database.
if ! $have_pg; then
    echo "skip replay runs: PostgreSQL is not installed (apt-get install postgresql)"
elif ! "$daemon" --help 2>&1 | grep -q -- '--db'; then
    echo "skip replay runs: $daemon has no --db"
elif ! start_pg; then
    : # said by start_pg
elif start_daemon --db "$pg_url"; then
    echo "bench smoke: $daemon with --db (pid $daemon_pid) on 127.0.0.1:$port"
    wait_db "$port"
    check replay --scenario replay --connections 30 --backlog 40 --publishers 4 --batch 16
    check replay-pages --scenario replay --connections 3 --backlog 2500 --batch 100
    check replay-users --scenario replay --connections 10 --backlog 20 --user-prefix "smoke-$$-"
    check replay-resume --scenario replay --connections 10 --backlog 20 \
        --user-prefix "smoke-$$-" --last-seq 20
    if $ws_publish; then
        check replay-ws --scenario replay --connections 10 --backlog 40 --publishers 2 \
            --batch 8 --publish-mode ws --in-flight 4
    fi
    stop_daemon "with --db"
else
    fail_check daemon "cannot start $daemon with --db"
fi

# start_redis: a private Redis on a free port, no persistence (redis_url, redis_pid); returns
# 1, the check failed, when it does not answer.
start_redis() {
    local redis_port
    for _ in 1 2 3; do
        redis_port=$(free_port) || break
        redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$work" --daemonize no >"$work/redis.out" 2>&1 &
        redis_pid=$!
        for _ in $(seq 1 50); do
            if [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; then
                redis_url=redis://127.0.0.1:$redis_port
                return 0
            fi
            kill -0 "$redis_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -TERM "$redis_pid" 2>/dev/null
        wait "$redis_pid" 2>/dev/null
        redis_pid=""
    done
    fail_check redis "cannot start redis-server: $(tail -n 2 "$work/redis.out")"
    return 1
}

# cluster: two daemons sharing messages over a private Redis, on the same database. The clients
# are spread over both (--ports), the publishers post to one (--publish-port: the first, then
# the second); every client must get every message once and in order, whichever node it is on.
# Each run has users of its own: targeted's price alerts are critical, so the database keeps
# them, and a later run's first connection of the same user would get them again.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "skip cluster runs: redis-server is not installed (apt-get install redis-server)"
elif ! $have_pg; then
    echo "skip cluster runs: PostgreSQL is not installed (apt-get install postgresql)"
elif ! "$daemon" --help 2>&1 | grep -q -- '--redis'; then
    echo "skip cluster runs: $daemon has no --redis"
elif start_pg && start_redis; then
    daemon_log=$work/node1.out
    if start_daemon --db "$pg_url" --redis "$redis_url"; then
        other_pid=$daemon_pid
        first=$port
        daemon_log=$work/node2.out
        if start_daemon --db "$pg_url" --redis "$redis_url"; then
            wait_db "$first"
            wait_db "$port"
            ports=$first,$port
            echo "bench smoke: two nodes sharing $redis_url (pids $other_pid, $daemon_pid)" \
                "on 127.0.0.1:$ports"
            check cluster-fanout --scenario fanout --connections 40 --messages 300 \
                --user-prefix "cluster-$$-f-"
            check cluster-fanout-second --scenario fanout --connections 30 --messages 400 \
                --batch 8 --window 32 --publish-port "$port" --user-prefix "cluster-$$-s-"
            check cluster-channels --scenario channels --connections 40 --messages 300 \
                --channels 10 --subs-per-conn 3 --user-prefix "cluster-$$-c-"
            check cluster-paced --scenario paced --connections 30 --rate 200 --duration 1.5 \
                --user-prefix "cluster-$$-p-"
            check cluster-targeted --scenario targeted --connections 40 --messages 400 \
                --publishers 4 --user-prefix "cluster-$$-t-"
            if $ws_publish; then
                check cluster-fanout-ws --scenario fanout --connections 40 --messages 300 \
                    --publish-mode ws --publishers 2 --user-prefix "cluster-$$-w-"
            fi
            # messages stored through the first node, replayed by both
            check cluster-replay --scenario replay --connections 20 --backlog 30 --publishers 4 \
                --batch 8
            ports=""
            stop_daemon "node 2 of 2"
        else
            fail_check daemon "cannot start a second $daemon with --redis"
        fi
        daemon_pid=$other_pid
        other_pid=""
        daemon_log=$work/node1.out
        stop_daemon "node 1 of 2"
    else
        fail_check daemon "cannot start $daemon with --redis"
    fi
    kill -TERM "$redis_pid"
    wait "$redis_pid"
    redis_pid=""
fi

if [ -n "$pg_dir" ]; then
    bash scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1
    rm -rf "$pg_dir"
    pg_dir=""
fi

echo "bench smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
