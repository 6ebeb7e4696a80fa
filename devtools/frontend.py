"""ComfyUI's real web frontend in headless Chromium, driven by ``tests/frontend/driver.mjs``.

Needs ``chromium`` and npm ``playwright-core``: ``source scripts/browser.sh`` installs both (into a
cache outside the clone) and exports VCD_CHROMIUM and VCD_PLAYWRIGHT_DIR.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import requests

DRIVER = Path(__file__).resolve().parents[1] / "tests" / "frontend" / "driver.mjs"
# What a returning user has (no first-run template browser over the canvas), and node text drawn at any zoom.
SETTINGS = {"Comfy.TutorialCompleted": True, "LiteGraph.Canvas.MinFontSizeForLOD": 1}


class FrontendError(RuntimeError):
    """The browser could not start, or a command failed in the page."""


class BrowserMissing(FrontendError):
    """node, chromium or playwright-core is not installed."""


def browser_tools() -> tuple[str, str, str]:
    """(node, chromium, playwright-core install dir); BrowserMissing says which one is not there."""
    node = shutil.which("node")
    chromium = os.environ.get("VCD_CHROMIUM") or shutil.which("chromium")
    deps = os.environ.get("VCD_PLAYWRIGHT_DIR", "")
    if not node:
        raise BrowserMissing("node is not installed")
    if not chromium:
        raise BrowserMissing("chromium is not installed (scripts/browser.sh installs it as root: apt-get install -y chromium)")
    if not (Path(deps) / "node_modules" / "playwright-core").is_dir():
        raise BrowserMissing("npm playwright-core is not installed: source scripts/browser.sh (sets VCD_PLAYWRIGHT_DIR)")
    return node, chromium, deps


class Frontend:
    """One browser page on a ComfyUI server's frontend (fresh profile in ``workdir``); ``call`` runs one command."""

    def __init__(self, url: str, workdir: Path, timeout: float = 300.0):
        node, chromium, deps = browser_tools()
        requests.post(f"{url}/settings", json=SETTINGS, timeout=10).raise_for_status()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "driver.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [node, str(DRIVER), url, chromium, str(workdir / "profile"), deps],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.timeout = timeout
        try:
            self.info = self.call("open")
        except FrontendError:
            self.close()
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._answers.put(line)
        self._answers.put(None)

    def call(self, op: str, timeout: float | None = None, **args) -> dict:
        """Send one command and wait for its answer."""
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self._answers.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise FrontendError(f"{op}: no answer within {timeout or self.timeout:.0f} s") from None
        if line is None:
            raise FrontendError(f"{op}: the driver exited:\n{self.log_path.read_text()[-4000:]}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise FrontendError(f"{op} failed in the page: {answer['error']}\nconsole: {answer.get('console')}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=30)
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (FrontendError, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
        self._log.close()
