#!/usr/bin/env bash
# Runs one benchmark (bench/bench_NAME.py) or all of them in the cached environment.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VCD_ROOT"
if [ $# -gt 0 ]; then scripts=("bench/bench_$1.py"); else scripts=(bench/bench_*.py); fi
for script in "${scripts[@]}"; do
  echo "== $script"
  "$VCD_PYTHON" "$script"
done
