#!/usr/bin/env bash
# Installs the Debian bookworm packages dealwire needs to build, test and run, if missing.
#
# Checks each package with dpkg-query first; runs `apt-get update` and `apt-get install` only
# when something is missing, so a second run does no apt-get at all. Works as root with no
# stdin (CI), or as a user with sudo. DW_SKIP_DEPS=1 skips it (offline machine, own setup).
set -euo pipefail

PACKAGES=(
    # toolchain
    build-essential cmake pkg-config clang libclang-rt-14-dev clang-format clang-tidy
    # libraries. libwebsockets is built from Debian's source package by scripts/lws.sh (curl
    # fetches it, dpkg-source unpacks it; libcap-dev for it); libwebsockets-dev and its libuv
    # plugin are Debian's build, for -DDW_LWS=system.
    libwebsockets-dev libwebsockets-evlib-uv liburcu-dev libjson-c-dev libpq-dev libssl-dev
    libuv1-dev libhiredis-dev libcap-dev zlib1g-dev curl dpkg-dev
    # tests
    libcmocka-dev python3-websockets python3-pytest
    # line coverage of src/ from gcc's .gcda files (scripts/coverage.sh, the coverage preset)
    gcovr
    # the dashboard test (tests/integration/test_web.py) drives a real headless Chromium
    # through chromedriver with Selenium
    chromium chromium-driver python3-selenium
    # the openssl command: scripts/devcert.sh, the TLS tests, RS256/ES256 test tokens
    openssl
    # services the integration tests start in a temp dir (postgresql: initdb, pg_ctl and psql
    # for scripts/pg.sh)
    postgresql redis-server
    # load balancers in front of several nodes (tests/integration/test_lb.py, docs/cluster.md)
    haproxy nginx-light
)

if [ "${DW_SKIP_DEPS:-0}" = 1 ]; then
    echo "deps: DW_SKIP_DEPS=1, not checking packages"
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != installed ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages installed"
    exit 0
fi

echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "deps: not root and no sudo; install these packages first: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
