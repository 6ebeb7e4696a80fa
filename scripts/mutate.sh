#!/usr/bin/env bash
# Mutation testing of vcd_core/ with mutmut (config: [tool.mutmut] in pyproject.toml), on ComfyUI 0.3.75.
# Prints the share of killed mutants per module. Args: mutant name globs, e.g. "vcd_core.tiling*".
# Not part of CI (tens of minutes on 2 cores); run it before changing a module's tests.
# mutants/ is kept between runs (the stats run, ~5 min, is reused; new tests get stats of their own and
# named mutants are re-tested); VCD_MUTATE_FRESH=1 starts over. VCD_MUTATE_CHILDREN workers (default 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VCD_ROOT"
"$VCD_PYTHON" -c "import mutmut" 2>/dev/null || "$VCD_PYTHON" -m pip install -q "mutmut==3.8.1"
[ "${VCD_MUTATE_FRESH:-0}" = 1 ] && rm -rf mutants
# One torch thread per worker: mutmut limits each mutant's CPU time, and threads spin it past the limit.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
"$VCD_PYTHON" -m mutmut run --max-children "${VCD_MUTATE_CHILDREN:-1}" "$@" >/dev/null || true
"$VCD_PYTHON" -m mutmut results --all true | "$VCD_PYTHON" -m devtools.mutation_score
