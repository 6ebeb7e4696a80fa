#!/usr/bin/env bash
# Mutation testing of vcd_core/ with mutmut (config: [tool.mutmut] in pyproject.toml), on ComfyUI 0.3.75.
# Prints the share of killed mutants per module. Args: mutant name globs, e.g. "vcd_core.tiling*".
# Not part of CI (tens of minutes on 2 cores); run it before changing a module's tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VCD_ROOT"
"$VCD_PYTHON" -c "import mutmut" 2>/dev/null || "$VCD_PYTHON" -m pip install -q "mutmut==3.8.1"
rm -rf mutants
"$VCD_PYTHON" -m mutmut run "$@" >/dev/null || true
"$VCD_PYTHON" -m mutmut results --all true | "$VCD_PYTHON" -m devtools.mutation_score
