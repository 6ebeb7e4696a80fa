"""Start a real headless ComfyUI server with this pack (and the test pack) and talk to it over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
TEST_PACK = REPO / "tests" / "vcd_test_pack"
# The real AnimateDiff-Evolved, unmodified, beside the clone (absent in a user's clone).
ADE_PACK = REPO.parent / "shared" / "vendor" / "ComfyUI-AnimateDiff-Evolved"


def ade_available() -> bool:
    """Whether the real AnimateDiff-Evolved is beside the clone (``../shared/vendor``)."""
    return (ADE_PACK / "__init__.py").is_file()


class HostError(RuntimeError):
    """The server did not start, a pack failed to import, or a request failed."""


@dataclass
class RunResult:
    """What one queued API graph did: HTTP status, validation errors, or its history entry."""

    http_status: int
    response: dict
    history: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.history.get("status", {}).get("status_str") == "success"

    @property
    def node_errors(self) -> dict:
        return self.response.get("node_errors", {})

    @property
    def execution_error(self) -> dict | None:
        for kind, data in self.history.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def describe(self) -> str:
        return json.dumps({"response": self.response, "error": self.execution_error}, indent=1)[:4000]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyHost:
    """A ComfyUI server in its own work folder, with this pack and the tiny-model test pack."""

    def __init__(self, comfyui_dir: str | os.PathLike, workdir: str | os.PathLike, python: str = sys.executable,
                 with_ade: bool | None = None):
        self.with_ade = ade_available() if with_ade is None else with_ade
        self.comfyui_dir = Path(comfyui_dir)
        self.workdir = Path(workdir)
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.models_dir = self.workdir / "models"
        self.output_dir = self.workdir / "output"
        self.input_dir = self.workdir / "input"
        self.log_path = self.workdir / "server.log"

    def _layout(self) -> Path:
        packs = self.workdir / "custom_nodes"
        packs.mkdir(parents=True, exist_ok=True)
        packs_to_link = [("vcd", REPO), ("vcd_test_pack", TEST_PACK)]
        if self.with_ade:
            packs_to_link.append(("ComfyUI-AnimateDiff-Evolved", ADE_PACK))
        for name, target in packs_to_link:
            link = packs / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        for sub in ("embeddings", "checkpoints", "grounding-dino", "sams", "insightface", "ultralytics/bbox", "vcd_eval",
                    "animatediff_models", "upscale_models"):
            (self.models_dir / sub).mkdir(parents=True, exist_ok=True)
        for d in (self.output_dir, self.input_dir, self.workdir / "temp", self.workdir / "user"):
            d.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "extra_model_paths.yaml"
        config.write_text(
            "vcd_host:\n"
            f"  base_path: {self.models_dir}\n"
            "  is_default: true\n"  # first in every list: what nodes write lands here, not in the ComfyUI tree
            "  embeddings: embeddings\n"
            "  checkpoints: checkpoints\n"
            "  vcd_eval: vcd_eval\n"
            "  grounding-dino: grounding-dino\n"
            "  sams: sams\n"
            "  insightface: insightface\n"
            "  ultralytics_bbox: ultralytics/bbox\n"
            "  animatediff_models: animatediff_models\n"
            "  upscale_models: upscale_models\n"
            f"  custom_nodes: {packs}\n"
        )
        return config

    def start(self, timeout: float = 240.0) -> "ComfyHost":
        config = self._layout()
        cmd = [
            self.python, str(self.comfyui_dir / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
            "--extra-model-paths-config", str(config), "--output-directory", str(self.output_dir),
            "--input-directory", str(self.input_dir), "--temp-directory", str(self.workdir / "temp"),
            "--user-directory", str(self.workdir / "user"),
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HostError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/queue", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            self.stop()
            raise HostError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")
        # Core's optional audio nodes fail without torchaudio ("IMPORT FAILED: nodes_audio.py");
        # a custom-node pack that fails is listed as "(IMPORT FAILED): <path>" under the import times.
        failed = [line for line in self.log_path.read_text(errors="replace").splitlines() if "(IMPORT FAILED)" in line]
        if failed:
            self.stop()
            raise HostError("a custom-node pack failed to import:\n" + "\n".join(failed) + "\n" + self.log_tail())
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def __enter__(self) -> "ComfyHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def object_info(self, node_class: str | None = None) -> dict:
        path = f"/object_info/{node_class}" if node_class else "/object_info"
        response = requests.get(self.url + path, timeout=60)
        response.raise_for_status()
        return response.json()

    def run(self, graph: dict, timeout: float = 600.0, client_id: str | None = None,
            extra_data: dict | None = None) -> RunResult:
        """Queue an API-format graph and wait for its history entry (or its validation errors). ``client_id``: the
        websocket client that gets its progress and previews; ``extra_data``: e.g. ``{"preview_method": "none"}``."""
        # json.dumps, not requests' json=: it refuses NaN, and bad-input tests send NaN as the frontend can.
        body = json.dumps({"prompt": graph, "client_id": client_id or uuid.uuid4().hex, "extra_data": extra_data or {}})
        response = requests.post(f"{self.url}/prompt", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        body = response.json()
        result = RunResult(response.status_code, body)
        if response.status_code != 200:
            return result
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json()
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
                result.history = entry
                return result
            if self.proc is None or self.proc.poll() is not None:
                raise HostError(f"ComfyUI died while running:\n{self.log_tail()}")
            time.sleep(0.5)
        requests.post(f"{self.url}/interrupt", timeout=10)
        raise HostError(f"graph did not finish within {timeout:.0f} s")

    def output_files(self, result: RunResult) -> list[Path]:
        """Files the run's output nodes wrote (images, animations, videos), as paths on disk."""
        files = []
        for node_output in result.history.get("outputs", {}).values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                        files.append(self.output_dir / item.get("subfolder", "") / item["filename"])
        return files
