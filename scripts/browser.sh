#!/usr/bin/env bash
# Sourced before pytest: the browser tools of the frontend tests (tests/test_frontend.py, test_workflows.py).
#   chromium         installed with apt-get when missing and we are root (CI); else the tests skip, saying so
#   playwright-core  npm package (no browser download) from tests/frontend/package.json + package-lock.json,
#                    installed once into $VCD_CACHE/npm/<hash of both> (default ~/.cache/vcd-comfyui), outside the clone
# Exports VCD_CHROMIUM and VCD_PLAYWRIGHT_DIR when they are there. Never fails the caller: a missing tool
# only prints why.
_vcd_browser_setup() {
  local root cache frontend hash dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  cache="${VCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vcd-comfyui}"
  frontend="$root/tests/frontend"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[vcd] installing chromium (apt-get) for the frontend tests" >&2
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2 ||
        echo "[vcd] apt-get could not install chromium: the frontend tests will skip" >&2
    else
      echo "[vcd] chromium is not installed (apt-get install -y chromium as root): the frontend tests will skip" >&2
    fi
  fi
  command -v chromium >/dev/null 2>&1 && export VCD_CHROMIUM="$(command -v chromium)"
  if ! command -v npm >/dev/null 2>&1; then
    echo "[vcd] npm is not installed: the frontend tests will skip" >&2
    return 0
  fi
  hash=$(cat "$frontend/package.json" "$frontend/package-lock.json" | sha256sum | cut -c1-16)
  dir="$cache/npm/$hash"
  if [ ! -f "$dir/.complete" ]; then
    echo "[vcd] installing npm playwright-core into $dir" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$frontend/package.json" "$frontend/package-lock.json" "$dir/"
    if (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2); then
      touch "$dir/.complete"
    else
      echo "[vcd] npm ci failed in $dir: the frontend tests will skip" >&2
      return 0
    fi
  fi
  export VCD_PLAYWRIGHT_DIR="$dir"
}
_vcd_browser_setup
unset -f _vcd_browser_setup
