"""Shared fixtures: the ComfyUI tree (in-process), a real ComfyUI server, and paths.

``scripts/test.sh`` sets COMFYUI_DIR; running pytest by hand needs it too (``source scripts/env.sh``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
# ComfyUI's top-level modules (nodes, server, folder_paths, comfy...) must win over the repo's folders.
if COMFYUI_DIR:
    sys.path.insert(0, COMFYUI_DIR)
sys.path.append(str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _require_comfyui() -> str:
    if not COMFYUI_DIR or not Path(COMFYUI_DIR, "main.py").is_file():
        pytest.fail("COMFYUI_DIR is not set to a ComfyUI tree: run the suite with scripts/test.sh", pytrace=False)
    return COMFYUI_DIR


def _load_package(name: str, path: Path) -> ModuleType:
    """Import a folder as a package under ``name``, the way ComfyUI imports a custom-node pack."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def inproc() -> SimpleNamespace:
    """ComfyUI imported in this process on the CPU, with this pack and the tiny-model test pack."""
    _require_comfyui()
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (must come after args.cpu)

    pack = _load_package("vcd", REPO)
    test_pack = _load_package("vcd_test_pack", REPO / "tests" / "vcd_test_pack")
    return SimpleNamespace(pack=pack, tiny=test_pack.tiny)


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """One real ComfyUI server for the whole session (fails loudly if a pack does not import)."""
    from devtools.host import ComfyHost

    server = ComfyHost(_require_comfyui(), tmp_path_factory.mktemp("comfyui"), python=sys.executable)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the clone (docs, the authors' files); absent in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this clone")
    return SHARED
