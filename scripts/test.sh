#!/usr/bin/env bash
# Runs the whole test suite on every ComfyUI host, each in its own cached environment (built on
# first use): 0.3.75 always, 0.33.0 too when ../shared/vendor holds it. Extra args go to pytest.
#   VCD_HOST=0.3.75|0.33.0   run one host only;  COMFYUI_DIR=/your/ComfyUI   run on your install only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${COMFYUI_DIR:-}" ]; then
  hosts=(custom)
elif [ -n "${VCD_HOST:-}" ]; then
  hosts=("$VCD_HOST")
else
  hosts=(0.3.75)
  [ -f "$root/../shared/vendor/comfyui-0.33.0.tar.gz" ] && hosts+=(0.33.0)
fi
# chromium + npm playwright-core for the real-frontend tests (installed once; the tests say why if missing)
source "$root/scripts/browser.sh"
status=0
first=1
for host in "${hosts[@]}"; do
  start=$SECONDS rc=0
  (
    [ "$host" = custom ] || export VCD_HOST="$host"
    # tests marked host_independent (no ComfyUI in them) give the same result on every host: run them once
    [ $first = 1 ] || export VCD_SKIP_HOST_INDEPENDENT=1
    source "$root/scripts/env.sh"
    echo "== ComfyUI $VCD_HOST ($COMFYUI_DIR)" >&2
    cd "$VCD_ROOT"
    "$VCD_PYTHON" -m pytest "$@"  # pyproject testpaths = tests
  ) || rc=$?
  [ $rc = 0 ] || status=1
  first=0
  echo "== ComfyUI $host: $([ $rc = 0 ] && echo passed || echo "FAILED (pytest exit $rc)") in $((SECONDS - start)) s" >&2
done
exit $status
