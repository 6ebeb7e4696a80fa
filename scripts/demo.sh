#!/usr/bin/env bash
# The main job on the embedded default (no weights): shipped workflows on a real headless ComfyUI
# with tiny seeded models. Writes into out/demo/ and prints the paths.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VCD_ROOT"
exec "$VCD_PYTHON" -m devtools.demo "$@"
