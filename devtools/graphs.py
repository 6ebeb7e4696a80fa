"""Load the pack's API-format workflows and shrink them to run on the tiny test models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
TINY_CHECKPOINT = "VCDTestTinyCheckpoint"


def load_api(name: str) -> dict:
    """An API-format twin from ``workflows/api/``."""
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def without_animatediff(graph: dict) -> dict:
    """Drop AnimateDiff-Evolved's nodes (not installable in CI): UseEvolvedSampling passes its MODEL through."""
    graph = copy.deepcopy(graph)
    passthrough = {nid: node["inputs"]["model"] for nid, node in graph.items() if node["class_type"] == "ADE_UseEvolvedSampling"}
    for nid in [nid for nid, node in graph.items() if node["class_type"].startswith("ADE_")]:
        del graph[nid]
    for node in graph.values():
        for name, value in node["inputs"].items():
            while isinstance(value, list) and len(value) == 2 and str(value[0]) in passthrough:
                value = passthrough[str(value[0])]
            node["inputs"][name] = value
    return graph


def tinyize(graph: dict, *, size: int = 64, frames: int = 8, steps: int = 2, seed: int = 0) -> dict:
    """The same graph on tiny seeded models at a small size, few frames, few steps and small tiles/crops.

    An upscale model (no weights here) becomes a plain 4x resize of the same factor.
    """
    graph = without_animatediff(graph)
    for nid in [nid for nid, node in graph.items() if node["class_type"] == "UpscaleModelLoader"]:
        del graph[nid]
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            node["class_type"], node["inputs"] = TINY_CHECKPOINT, {"seed": seed}
        if kind == "ImageUpscaleWithModel":
            node["class_type"] = "ImageScaleBy"
            node["inputs"] = {"image": inputs["image"], "upscale_method": "bilinear", "scale_by": 4.0}
        if "tile_size" in inputs:
            inputs.update(tile_size=64, overlap=16)
        if "guide_size" in inputs:
            inputs.update(guide_size=64, max_size=128)
        if kind in ("EmptyLatentImage", "VCD3DGaussianNoiseLatent"):
            inputs.update(width=size, height=size)
            inputs["batch_size" if kind == "EmptyLatentImage" else "frames"] = frames
        for key in ("steps",):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = min(inputs[key], steps)
    return graph
