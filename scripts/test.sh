#!/usr/bin/env bash
# Runs the whole test suite in the cached environment (built on first use). Extra args go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VCD_ROOT"
exec "$VCD_PYTHON" -m pytest "$@"  # pyproject testpaths = tests
