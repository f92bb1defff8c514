#!/usr/bin/env bash
# The test command (README; .ci/run calls it): installs missing packages, checks formatting
# (clang-format) and runs clang-tidy (scripts/tidy.sh), then for each of the presets asan
# (ASan+UBSan) and tsan configures, builds and runs every ctest test (labels unit, stress,
# integration, smoke). Then runs them all once more in the coverage preset (the debug preset's
# gcc -O0 with asserts, plus --coverage: so the debug preset is not run a second time by
# default) and checks the line coverage of src/ against its minimum
# (scripts/coverage.sh; its tests count in the totals like a preset's). Then runs the libFuzzer
# targets for a bounded time (scripts/fuzz.sh, the fuzz preset; each target counts as one
# test). Finally builds the release preset (build only, so `scripts/run.sh` cannot break
# unnoticed). Stops at the first failure.
#
#   DW_TEST_PRESETS="debug"  run only these test presets (and skip the release build); the
#                            coverage and fuzz stages run only if the list names "coverage"
#                            and "fuzz" (default: "asan tsan coverage fuzz")
#   DW_COVERAGE_MIN=92       minimum line coverage of src/ (see scripts/coverage.sh)
#   DW_FUZZ_SECONDS=60       fuzzing time per fuzz target (see scripts/fuzz.sh)
#   DW_SKIP_DEPS=1           do not check packages (see scripts/deps.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# "coverage" and "fuzz" select the stages of those names, which run after the presets.
presets=()
run_coverage=0 run_fuzz=0
for p in ${DW_TEST_PRESETS:-asan tsan coverage fuzz}; do
    case $p in
        coverage) run_coverage=1 ;;
        fuzz) run_fuzz=1 ;;
        *) presets+=("$p") ;;
    esac
done
build_release=1
[ -n "${DW_TEST_PRESETS:-}" ] && build_release=0

declare -A result=()
order=()
total_pass=0 total_fail=0 total_skip=0
start_all=$SECONDS

summary() {
    local rc=$?
    echo
    echo "==================== summary ===================="
    for name in "${order[@]}"; do
        printf '  %-16s %s\n' "$name" "${result[$name]:-not run}"
    done
    printf '  %-16s %s\n' "total time" "$((SECONDS - start_all)) s"
    if [ "$rc" -ne 0 ]; then
        echo "test.sh: FAILED (exit $rc)"
    else
        echo "test.sh: OK"
    fi
    # Last line on purpose: the totals over all presets, in the plain "N passed, N failed" form.
    echo "tests: ${total_pass} passed, ${total_fail} failed, ${total_skip} skipped"
}
trap summary EXIT

# Adds the tests of a ctest log to the totals, and sets counts to "N passed, N failed, N
# skipped".
count_ctest() {
    local log=$1 line total=0 failed=0 skipped passed
    # "100% tests passed, 0 tests failed out of 12"; skipped tests count as passed there.
    line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1 || true)
    if [[ "$line" =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        failed=${BASH_REMATCH[1]}
        total=${BASH_REMATCH[2]}
    fi
    skipped=$(grep -cE '^[[:space:]]+[0-9]+ - .* \(Skipped\)$' "$log" || true)
    passed=$((total - failed - skipped))
    total_pass=$((total_pass + passed))
    total_fail=$((total_fail + failed))
    total_skip=$((total_skip + skipped))
    counts="${passed} passed, ${failed} failed, ${skipped} skipped"
}

banner() {
    echo
    echo "################################################################"
    echo "## $*"
    echo "################################################################"
}

order+=(deps format tidy)
for p in "${presets[@]}"; do order+=("$p"); done
[ "$run_coverage" = 1 ] && order+=(coverage)
[ "$run_fuzz" = 1 ] && order+=(fuzz)
[ "$build_release" = 1 ] && order+=(release-build)

banner "deps"
result[deps]="FAILED"
bash scripts/deps.sh </dev/null
# promtool (Debian's prometheus package, unpacked, not installed) for tests/integration's
# test_metrics.py: fetched once into build/promtool.
DW_PROMTOOL=$(bash scripts/promtool.sh | tail -n1)
export DW_PROMTOOL
result[deps]="ok"

banner "format: clang-format --dry-run -Werror"
result[format]="FAILED"
dirs=()
for d in src include tests/unit tests/fuzz bench; do [ -d "$d" ] && dirs+=("$d"); done
nfmt=0
if [ ${#dirs[@]} -gt 0 ]; then
    mapfile -d '' files < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
    nfmt=${#files[@]}
    if [ "$nfmt" -gt 0 ]; then
        clang-format --dry-run -Werror "${files[@]}"
    fi
fi
result[format]="ok (${nfmt} files)"
echo "format: ${nfmt} files clean"

banner "tidy: scripts/tidy.sh (clang-tidy 14, the checks in .clang-tidy)"
result[tidy]="FAILED"
mkdir -p build
bash scripts/tidy.sh 2>&1 | tee build/tidy.log
tidy_line=$(tail -n1 build/tidy.log)
result[tidy]="ok (${tidy_line#tidy: })"

for p in "${presets[@]}"; do
    banner "preset ${p}: configure, build, ctest"
    t0=$SECONDS
    result[$p]="FAILED (configure)"
    cmake --preset "$p"
    result[$p]="FAILED (build)"
    cmake --build --preset "$p" -j2
    result[$p]="FAILED (ctest)"
    log="build/${p}/ctest.log"
    rc=0
    ctest --preset "$p" 2>&1 | tee "$log" || rc=$?
    count_ctest "$log"
    if [ "$rc" -ne 0 ]; then
        result[$p]="FAILED (ctest: ${counts}, $((SECONDS - t0)) s)"
        exit "$rc"
    fi
    result[$p]="ok (${counts}, $((SECONDS - t0)) s)"
done

if [ "$run_coverage" = 1 ]; then
    banner "coverage: scripts/coverage.sh (every test again, line coverage of src/)"
    t0=$SECONDS
    result[coverage]="FAILED"
    ctest_log=build/coverage/ctest.log
    log=build/coverage/coverage.log
    mkdir -p build/coverage
    rm -f "$ctest_log"
    rc=0
    bash scripts/coverage.sh 2>&1 | tee "$log" || rc=$?
    counts="no tests run" # configure or build failed
    [ -f "$ctest_log" ] && count_ctest "$ctest_log"
    # Last line of coverage.sh: "coverage: src/ lines 94.8% (min 92%)"
    line=$(grep -E '^coverage: src/ lines ' "$log" | tail -n1 || true)
    figure=${line#coverage: }
    if [ "$rc" -ne 0 ]; then
        result[coverage]="FAILED (${counts}; ${figure:-no figure}, $((SECONDS - t0)) s)"
        exit "$rc"
    fi
    result[coverage]="ok (${counts}; ${figure}, $((SECONDS - t0)) s)"
fi

if [ "$run_fuzz" = 1 ]; then
    fuzz_seconds=${DW_FUZZ_SECONDS:-60}
    banner "fuzz: scripts/fuzz.sh, ${fuzz_seconds} s per target"
    t0=$SECONDS
    result[fuzz]="FAILED"
    log=build/fuzz/fuzz.log
    mkdir -p build/fuzz
    rc=0
    DW_FUZZ_SECONDS=$fuzz_seconds bash scripts/fuzz.sh 2>&1 | tee "$log" || rc=$?
    # Last line of fuzz.sh: "fuzz: 2 targets, 2 clean, 0 failed"
    line=$(grep -E '^fuzz: [0-9]+ targets, [0-9]+ clean, [0-9]+ failed$' "$log" | tail -n1 || true)
    clean=0 failed=0
    if [[ "$line" =~ ([0-9]+)\ clean,\ ([0-9]+)\ failed ]]; then
        clean=${BASH_REMATCH[1]}
        failed=${BASH_REMATCH[2]}
    elif [ "$rc" -ne 0 ]; then
        failed=1 # the build failed, or fuzz.sh stopped before its summary
    fi
    total_pass=$((total_pass + clean))
    total_fail=$((total_fail + failed))
    counts="${clean} targets clean, ${failed} failed, ${fuzz_seconds} s each"
    if [ "$rc" -ne 0 ]; then
        result[fuzz]="FAILED (${counts}, $((SECONDS - t0)) s; reproducers in build/fuzz/artifacts)"
        exit "$rc"
    fi
    result[fuzz]="ok (${counts}, $((SECONDS - t0)) s)"
fi

if [ "$build_release" = 1 ]; then
    banner "preset release: configure, build (no tests run)"
    t0=$SECONDS
    result[release-build]="FAILED"
    cmake --preset release
    cmake --build --preset release -j2
    result[release-build]="ok ($((SECONDS - t0)) s)"
fi
