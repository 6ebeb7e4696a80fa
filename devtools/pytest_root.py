"""Collect the repository root as a plain folder, not a package.

The root ``__init__.py`` is the pack's entry point for ComfyUI (relative imports, ComfyUI on the
path); pytest would import it as a test package and fail in a clone whose folder name is not a
Python name (``comfyui-video-custom-diffusion``).
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_collect_directory(path: Path, parent: pytest.Collector):
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
