"""Import ComfyUI in this process (CPU) with this pack and the tiny-model test pack loaded as packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def load_package(name: str, path: Path) -> ModuleType:
    """Import a folder as a package under ``name``, the way ComfyUI imports a custom-node pack."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_comfy(comfyui_dir: str | Path) -> None:
    """Make ComfyUI's modules importable here, running on the CPU."""
    comfyui_dir = str(comfyui_dir)
    if comfyui_dir not in sys.path:
        # ComfyUI's top-level modules (nodes, server, folder_paths...) must win over the repo's folders.
        sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management: a CUDA torch build on a machine without a GPU
    import comfy.model_management  # noqa: F401


def load_comfy(comfyui_dir: str | Path) -> SimpleNamespace:
    """ComfyUI on the CPU; returns the pack (``vcd``) and the tiny-model module."""
    import_comfy(comfyui_dir)
    pack = load_package("vcd", REPO)
    test_pack = load_package("vcd_test_pack", REPO / "tests" / "vcd_test_pack")
    return SimpleNamespace(pack=pack, tiny=test_pack.tiny)
