#!/usr/bin/env bash
# The run command (README): installs missing packages, builds the release preset and starts
# the daemon in the foreground. Arguments go to dealwire unchanged; with none it listens on
# 0.0.0.0:8000 (its default). Example: bash scripts/run.sh --port 9000 --log-level debug
#   DW_SKIP_DEPS=1   do not check packages (see scripts/deps.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh </dev/null
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target dealwire
exec build/release/dealwire "$@"
