#!/usr/bin/env bash
# Builds the libFuzzer targets (the fuzz preset: clang, ASan+UBSan) and runs each of them for a
# bounded time; scripts/test.sh runs it as its "fuzz" stage. tests/fuzz/README.md says what the
# targets check, how to run one longer and how to reproduce a crash.
#
# For each target tests/fuzz/fuzz_<name>.c:
#   1. regression: every input of tests/fuzz/corpus/<name>/ once (-runs=0);
#   2. fuzzing for DW_FUZZ_SECONDS on a copy of that corpus in a temp dir (the repository is
#      never written to), with tests/fuzz/dealwire.dict, in one process (no -fork / -jobs).
# Every target runs even when an earlier one failed. Exits 1 if any found a crash, a leak, a
# timeout or an out-of-memory, after printing the reproducer's path. The last line is
#   fuzz: N targets, N clean, N failed
#
#   DW_FUZZ_SECONDS=60       fuzzing time per target, in seconds (0: regression run only)
#   DW_FUZZ_SEED=1           libFuzzer's -seed (default 1, so that CI explores the same inputs
#                            in the same order on an unchanged tree; 0: a random seed)
#   DW_FUZZ_TARGETS="proto"  run only these targets (default: every tests/fuzz/fuzz_*.c)
#   DW_FUZZ_NO_BUILD=1       do not configure and build (build/fuzz is up to date)
#
# Reproducers and logs go to build/fuzz/artifacts/ and build/fuzz/logs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${DW_FUZZ_SECONDS:-60}
seed=${DW_FUZZ_SEED:-1}
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
    echo "fuzz: DW_FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi
if [ -n "${DW_FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$DW_FUZZ_TARGETS"
else
    targets=()
    for f in tests/fuzz/fuzz_*.c; do
        f=${f##*/fuzz_}
        targets+=("${f%.c}")
    done
fi

# Largest input per target: a client message is at most --max-message-size (default 4096);
# a publish body may be much larger, but 64 KiB already holds a batch of a thousand items.
declare -A max_len=([proto]=4096 [publish]=65536 [proxy]=1024)

if [ "${DW_FUZZ_NO_BUILD:-0}" != 1 ]; then
    cmake --preset fuzz
    cmake --build --preset fuzz -j2
fi

bin=build/fuzz
art=$bin/artifacts
logs=$bin/logs
mkdir -p "$art" "$logs"
work=$(mktemp -d "${TMPDIR:-/tmp}/dw-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# halt_on_error: UBSan is already fatal (-fno-sanitize-recover=all); say so for any other build.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/cmake/lsan.supp}

common=(-rss_limit_mb=2048 -timeout=10 -dict=tests/fuzz/dealwire.dict -print_final_stats=1)

# Prints the reproducers a failed run left (files newer than the marker) and the log's tail.
report_failure() {
    local name=$1 log=$2 marker=$3
    echo "---- last lines of $log ----"
    tail -n 40 "$log"
    echo "----"
    find "$art/$name" -type f -newer "$marker" | while read -r f; do
        echo "fuzz: $name: reproducer $f"
        echo "      replay: $bin/fuzz_$name $f"
    done
}

nclean=0 nfailed=0
for name in "${targets[@]}"; do
    exe=$bin/fuzz_$name
    seeds=tests/fuzz/corpus/$name
    if [ ! -x "$exe" ] || [ ! -d "$seeds" ]; then
        echo "fuzz: $name: no $exe or no $seeds" >&2
        nfailed=$((nfailed + 1))
        continue
    fi
    len=${max_len[$name]:-4096}
    mkdir -p "$art/$name" "$work/$name"
    marker=$work/$name.start
    touch "$marker"
    opts=("${common[@]}" -max_len="$len" -artifact_prefix="$art/$name/")

    echo "fuzz: $name: regression over $(find "$seeds" -type f | wc -l) seed inputs"
    log=$logs/$name-regression.log
    if ! "$exe" "${opts[@]}" -runs=0 "$seeds" >"$log" 2>&1; then
        echo "fuzz: $name: FAILED on the seed corpus"
        report_failure "$name" "$log" "$marker"
        nfailed=$((nfailed + 1))
        continue
    fi

    if [ "$seconds" -eq 0 ]; then
        nclean=$((nclean + 1))
        continue
    fi
    cp -R "$seeds/." "$work/$name/"
    echo "fuzz: $name: fuzzing for ${seconds} s (-max_len=$len)"
    log=$logs/$name.log
    if ! "$exe" "${opts[@]}" -seed="$seed" -max_total_time="$seconds" "$work/$name" >"$log" 2>&1; then
        echo "fuzz: $name: FAILED"
        report_failure "$name" "$log" "$marker"
        nfailed=$((nfailed + 1))
        continue
    fi
    # "#123456 DONE cov: 812 ft: 3456 corp: 310/40Kb lim: 4096 exec/s: 2057 rss: 61Mb"
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 || true)
    echo "fuzz: $name: clean: ${done_line:-no DONE line (see $log)}"
    nclean=$((nclean + 1))
done

echo "fuzz: ${#targets[@]} targets, ${nclean} clean, ${nfailed} failed"
[ "$nfailed" -eq 0 ]
