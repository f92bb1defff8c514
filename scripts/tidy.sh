#!/usr/bin/env bash
# Runs clang-tidy 14 with the repository's .clang-tidy (the checks, and why some are off, are
# listed there) over every translation unit of src/, bench/, tests/fuzz/ and tests/unit/, and
# through them over the headers of include/dealwire/, src/, bench/, tests/fuzz/ and
# tests/unit/. tests/unit/.clang-tidy adds to it what differs for the unit tests (they include
# src/*.c on purpose). Exits 1 on any finding, after printing it; the last line is
#   tidy: N files checked, N clean, N with findings (S s)
#
# Compile flags come from build/tidy/compile_commands.json, a clang configure of its own (Debug,
# -Werror, DW_FUZZ=ON so that tests/fuzz/*.c are in it); nothing is built. About 39 s on 2 idle
# cores (75 s of CPU), 31 s of it the static analyzer (clang-analyzer-*); tests/unit/ is 17 s of
# the 39.
#
#   scripts/tidy.sh                    every file
#   scripts/tidy.sh src/hub.c ...      only these files
#   DW_TIDY_JOBS=2                     clang-tidy processes at once (default 2)
#   CLANG_TIDY=clang-tidy-14           the clang-tidy to run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tidy=${CLANG_TIDY:-clang-tidy-14}
jobs=${DW_TIDY_JOBS:-2}
build=build/tidy
start=$SECONDS

if ! command -v "$tidy" >/dev/null; then
    echo "tidy: $tidy not found (Debian: apt-get install clang-tidy-14)" >&2
    exit 2
fi
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
    echo "tidy: DW_TIDY_JOBS must be a positive whole number, not '$jobs'" >&2
    exit 2
fi

if [ $# -gt 0 ]; then
    files=("$@")
else
    shopt -s nullglob
    files=(src/*.c bench/*.c tests/fuzz/*.c tests/unit/*.c)
    shopt -u nullglob
fi
if [ ${#files[@]} -eq 0 ]; then
    echo "tidy: no files to check" >&2
    exit 2
fi

mkdir -p "$build"
if ! CC=clang cmake -S . -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    -DCMAKE_BUILD_TYPE=Debug -DDW_WERROR=ON -DDW_FUZZ=ON >"$build/configure.log" 2>&1; then
    cat "$build/configure.log" >&2
    echo "tidy: cmake configure of $build failed" >&2
    exit 2
fi

# A file missing from the compilation database would be parsed without the project's flags
# and fail on its includes, far from the cause: say so instead.
for f in "${files[@]}"; do
    if ! grep -qF "\"file\": \"$(realpath -m "$f")\"" "$build/compile_commands.json"; then
        echo "tidy: $f is not in $build/compile_commands.json (not a source of any target?)" >&2
        exit 2
    fi
done

# One log per file, printed after the parallel run so that findings do not interleave.
logs="$build/logs"
rm -rf "$logs"
mkdir -p "$logs"
export TIDY_BIN=$tidy TIDY_BUILD=$build TIDY_LOGS=$logs
check_one() {
    local f=$1 log rc=0
    log="$TIDY_LOGS/$(echo "$f" | tr / _).log"
    "$TIDY_BIN" -p "$TIDY_BUILD" --quiet "$f" >"$log.raw" 2>&1 || rc=$?
    # "N warnings generated." counts what was suppressed in system headers: not a finding.
    grep -vE '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$' "$log.raw" >"$log" || true
    rm -f "$log.raw"
    if [ "$rc" -ne 0 ] || [ -s "$log" ]; then
        mv "$log" "$log.failed"
    fi
    return 0
}
export -f check_one
# shellcheck disable=SC2016 # $1 is check_one's argument, expanded by the inner bash
printf '%s\0' "${files[@]}" | xargs -0 -n1 -P"$jobs" bash -c 'check_one "$1"' _

failed=0
for f in "${files[@]}"; do
    log="$logs/$(echo "$f" | tr / _).log.failed"
    if [ -e "$log" ]; then
        failed=$((failed + 1))
        echo "==== $f"
        if [ -s "$log" ]; then
            cat "$log"
        else
            echo "clang-tidy failed without a message"
        fi
    fi
done

n=${#files[@]}
echo "tidy: $n files checked, $((n - failed)) clean, $failed with findings ($((SECONDS - start)) s)"
[ "$failed" -eq 0 ]
