#!/usr/bin/env bash
# scripts/lws.sh PREFIX: builds libwebsockets from Debian bookworm's own source package
# (libwebsockets 4.1.6-3) with release settings and dealwire's patches (cmake/lws/*.patch),
# and installs it, as a static library with its headers, under PREFIX.
#
# Why (docs/architecture.md, "libwebsockets"): Debian builds lws 4.1.6 with CMAKE_BUILD_TYPE
# None, so its lws_config.h defines _DEBUG, and lws then walks its whole table of sockets on
# every accept and close; and lws 4.1.6 cannot take pipelined HTTP/1.1 POSTs (the patches).
#
# CMake runs this at configure time (DW_LWS=source, the default) when PREFIX holds no build of
# the same source, settings and patches (PREFIX/.dw-stamp). The three files of the source
# package come from DW_LWS_SOURCE_DIR if set (offline), else from the Debian archive
# (DW_DEBIAN_MIRROR, default http://deb.debian.org/debian); their SHA-256 sums are pinned
# here, so a changed file is refused whatever its origin. Needs curl, dpkg-source (dpkg-dev,
# part of build-essential), cmake, a C compiler, libssl-dev and libuv1-dev (scripts/deps.sh).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: scripts/lws.sh PREFIX" >&2
    exit 2
fi
prefix=$(realpath -m "$1")
root=$(cd "$(dirname "$0")/.." && pwd)

version=4.1.6
debian_version=4.1.6-3
declare -A sha256=(
    [libwebsockets_4.1.6-3.dsc]=5084ff62d072edd9f4d6740979cea07bf9a23c72ed8c869a5c2c1b51466c435d
    [libwebsockets_4.1.6.orig.tar.gz]=402e9a8df553c9cd2aff5d7a9758e9e5285bf3070c82539082864633db3deb83
    [libwebsockets_4.1.6-3.debian.tar.xz]=8f141b844dcabdcae8ca7bc62b772ad071e73e3c77533cfc62519a8841cf1f5e
)
files=(libwebsockets_4.1.6-3.dsc libwebsockets_4.1.6.orig.tar.gz
       libwebsockets_4.1.6-3.debian.tar.xz)

# Debian's configuration (debian/rules) with release settings: CMAKE_BUILD_TYPE Release
# defines NDEBUG, so lws_config.h no longer defines _DEBUG (and the debug and info logs
# compile to nothing). The libuv event loop is linked in (Debian loads it as a plugin at run
# time); no test apps; glib and libev, which dealwire does not use, are left out. Extensions
# stay compiled in as in Debian's build, though dealwire offers none: lws's checks of a
# frame's RSV bits and of UTF-8 cut at the end of a message are in that code.
options=(
    -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_C_FLAGS=-g -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fno-strict-aliasing -Wno-error=deprecated-declarations"
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_DISABLE_FIND_PACKAGE_Git=ON
    -DLWS_BUILD_HASH=debian-3+dealwire
    -DLWS_WITH_STATIC=ON -DLWS_WITH_SHARED=OFF
    -DLWS_WITH_LIBUV=ON -DLWS_WITH_EVLIB_PLUGINS=OFF
    -DLWS_IPV6=ON -DLWS_UNIX_SOCK=ON
    -DLWS_WITHOUT_TESTAPPS=ON -DLWS_WITH_MINIMAL_EXAMPLES=OFF
    -DLWS_WITHOUT_EXTENSIONS=OFF -DLWS_WITH_ZLIB=ON
)

# One build at a time per PREFIX (presets configured in parallel share it).
mkdir -p "$(dirname "$prefix")"
exec 9>"$prefix.lock"
flock 9

patches=("$root"/cmake/lws/*.patch)
stamp="$debian_version $(printf '%s\n' "${options[@]}" | sha256sum | cut -c1-16)"
for p in "${patches[@]}"; do
    stamp+=" $(basename "$p"):$(sha256sum < "$p" | cut -c1-16)"
done
if [ -f "$prefix/.dw-stamp" ] && [ "$(cat "$prefix/.dw-stamp")" = "$stamp" ]; then
    echo "lws: $prefix is up to date ($debian_version with ${#patches[@]} patches)"
    exit 0
fi

work="$prefix.work"
rm -rf "$work" "$prefix"
mkdir -p "$work/src"
trap 'rm -rf "$work"' EXIT

for f in "${files[@]}"; do
    if [ -n "${DW_LWS_SOURCE_DIR:-}" ]; then
        cp "$DW_LWS_SOURCE_DIR/$f" "$work/src/$f"
    else
        url="${DW_DEBIAN_MIRROR:-http://deb.debian.org/debian}/pool/main/libw/libwebsockets/$f"
        echo "lws: fetching $url"
        if ! curl -fsSL --retry 3 --max-time 300 -o "$work/src/$f" "$url"; then
            echo "lws: could not fetch $url; set DW_LWS_SOURCE_DIR to a directory holding" \
                 "${files[*]}, or configure with -DDW_LWS=system (Debian's build)" >&2
            exit 1
        fi
    fi
    got=$(sha256sum "$work/src/$f" | cut -d' ' -f1)
    if [ "$got" != "${sha256[$f]}" ]; then
        echo "lws: $f has SHA-256 $got, expected ${sha256[$f]}: refused" >&2
        exit 1
    fi
done

# dpkg-source checks the files against the .dsc's sums and applies Debian's patches (in 4.1.6-3
# the series has none enabled: the source is upstream's v4.1.6).
(cd "$work/src" && dpkg-source --no-check -x "libwebsockets_$debian_version.dsc" lws >/dev/null)
for p in "${patches[@]}"; do
    echo "lws: applying $(basename "$p")"
    patch -d "$work/src/lws" -p1 --forward --quiet < "$p"
done

echo "lws: building libwebsockets $version (Debian $debian_version, release settings)"
cmake -S "$work/src/lws" -B "$work/build" -DCMAKE_INSTALL_PREFIX="$prefix" "${options[@]}" \
    > "$work/configure.log" 2>&1 || { cat "$work/configure.log" >&2; exit 1; }
cmake --build "$work/build" -j "$(nproc)" > "$work/build.log" 2>&1 ||
    { tail -50 "$work/build.log" >&2; exit 1; }
cmake --install "$work/build" > /dev/null
echo "$stamp" > "$prefix/.dw-stamp"
echo "lws: installed in $prefix"
