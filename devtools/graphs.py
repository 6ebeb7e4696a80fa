"""Load the pack's API-format workflows and shrink them to run on the tiny test models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
TINY_CHECKPOINT = "VCDTestTinyCheckpoint"
TINY_GROUNDING_DINO, TINY_SAM = "tiny-grounding-dino", "tiny_sam.pth"
PHOTOS = ("person_1.png", "person_2.png", "person_3.png")  # what train_identity's LoadImage nodes read
# Under models/embeddings, written by provide_test_identity: shrunk graphs pick one per VCD Load Identity, in node order.
TEST_IDENTITIES = ("vcd_test/seeded_identity.safetensors", "vcd_test/seeded_identity_2.safetensors")
TEST_IDENTITY = TEST_IDENTITIES[0]


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
    """The same graph on tiny seeded models at a small size, few frames, few steps and small tiles/crops,
    without AnimateDiff-Evolved's nodes. An upscale model (no weights here) becomes a plain resize."""
    graph = without_animatediff(graph)
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["class_type"], node["inputs"] = TINY_CHECKPOINT, {"seed": seed}
    return _shrink(graph, size=size, frames=frames, steps=steps, tile=(64, 16), upscale=4.0, max_crop=128)


def shrink_keeping_ade(graph: dict, checkpoint: str, motion_model: str, *, size: int = 64, frames: int = 8,
                       steps: int = 1) -> dict:
    """The same graph with its AnimateDiff-Evolved nodes kept: only the checkpoint and motion-model file
    names, the upscale model (a plain 2x resize: full-width models are slow on a CPU), sizes, frame counts
    and step counts change."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = checkpoint
        if node["class_type"] == "ADE_LoadAnimateDiffModel":
            node["inputs"]["model_name"] = motion_model
    return _shrink(graph, size=size, frames=frames, steps=steps, tile=(64, 16), upscale=2.0, max_crop=64)


def _shrink(graph: dict, *, size: int, frames: int, steps: int, tile: tuple[int, int], upscale: float,
            max_crop: int) -> dict:
    """In place: small latents, ``frames`` video frames, at most ``steps`` steps, ``tile`` (size, overlap)
    tiles, face crops of 64 to ``max_crop`` px, the identities TEST_IDENTITIES (one per VCD Load Identity); an upscale
    model becomes a resize by ``upscale``."""
    for nid in [nid for nid, node in graph.items() if node["class_type"] == "UpscaleModelLoader"]:
        del graph[nid]
    for node in graph.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "ImageUpscaleWithModel":
            node["class_type"] = "ImageScaleBy"
            node["inputs"] = {"image": inputs["image"], "upscale_method": "bilinear", "scale_by": upscale}
        if "tile_size" in inputs:
            inputs.update(tile_size=tile[0], overlap=tile[1])
        if "guide_size" in inputs:
            inputs.update(guide_size=64, max_size=max_crop)
        if kind in ("EmptyLatentImage", "VCD3DGaussianNoiseLatent"):
            inputs.update(width=size, height=size)
            count = "batch_size" if kind == "EmptyLatentImage" else "frames"
            if inputs[count] > 1:  # a video; a single still stays one image
                inputs[count] = frames
        if kind == "VCDPromptSegment":
            inputs.update(grounding_dino_model=TINY_GROUNDING_DINO, sam_model=TINY_SAM)
        if kind == "VCDTrainIdentity":
            inputs.update(resolution=size)
        if "steps" in inputs and not isinstance(inputs["steps"], list):
            inputs["steps"] = min(inputs["steps"], steps)
    _pick_identities(graph, TEST_IDENTITIES[:len(_identity_loaders(graph))])
    return graph


def provide_tiny_inputs(models_dir: Path, input_dir: Path) -> None:
    """What tinyized graphs read besides the tiny checkpoint: tiny GroundingDINO/SAM models in
    ``models/grounding-dino`` and ``models/sams``, and the photos of ``provide_photos``."""
    from .tiny_encoders import save_tiny_grounding_dino, save_tiny_sam

    if not (models_dir / "grounding-dino" / TINY_GROUNDING_DINO / "config.json").is_file():
        save_tiny_grounding_dino(models_dir / "grounding-dino" / TINY_GROUNDING_DINO)
    if not (models_dir / "sams" / TINY_SAM).is_file():
        save_tiny_sam(models_dir / "sams" / TINY_SAM)
    provide_photos(input_dir)


def provide_photos(input_dir: Path) -> None:
    """The three photos train_identity's LoadImage nodes read (scikit-image's astronaut: as is, mirrored, shifted)
    in ``input_dir``; with them there the frontend draws each photo on its node, which makes the node taller."""
    import numpy as np
    import skimage.data
    from PIL import Image

    photo = skimage.data.astronaut()
    input_dir.mkdir(parents=True, exist_ok=True)
    for name, image in zip(PHOTOS, (photo, photo[:, ::-1], np.roll(photo, 48, axis=1))):
        Image.fromarray(np.ascontiguousarray(image)).save(input_dir / name)


def provide_test_identity(models_dir: Path) -> None:
    """Seeded random SD1.5-width identities (4 x 768; seed k for the k-th) at ``models/embeddings/TEST_IDENTITIES``,
    each written once."""
    import torch

    from vcd_core import embedding_io

    for seed, (name, class_word) in enumerate(zip(TEST_IDENTITIES, ("woman", "man"), strict=True)):
        target = models_dir / "embeddings" / name
        if not target.is_file():
            vectors = torch.randn(4, 768, generator=torch.Generator().manual_seed(seed)) * 0.02
            embedding_io.write_embedding(target.parent, Path(name).stem,
                                         embedding_io.Embedding(vectors, {"class_word": class_word}))


def _identity_loaders(graph: dict) -> list[str]:
    """The graph's VCD Load Identity node ids, in node order (numeric ids by value)."""
    return sorted((nid for nid, node in graph.items() if node["class_type"] == "VCDLoadIdentity"), key=lambda n: (len(n), n))


def _pick_identities(graph: dict, embeddings: tuple[str, ...]) -> None:
    """In place: one file for every VCD Load Identity, or one per loader in node order."""
    loaders = _identity_loaders(graph)
    if len(embeddings) != 1 and len(embeddings) != len(loaders):
        raise ValueError(f"{len(embeddings)} identity files for {len(loaders)} VCD Load Identity nodes "
                         f"({', '.join(loaders)}): give one for all or one each")
    for k, nid in enumerate(loaders):
        graph[nid]["inputs"]["embedding"] = embeddings[k if len(embeddings) > 1 else 0]


def use_identity(graph: dict, *embeddings: str) -> dict:
    """The graph with these files (under models/embeddings) picked in its VCD Load Identity nodes: one file for
    all of them, or one per loader in node order."""
    graph = copy.deepcopy(graph)
    _pick_identities(graph, embeddings)
    return graph



VIDEO_NODES = ("CreateVideo", "SaveVideo")  # core's video nodes: the shipped workflows save mp4 (h264) with them


def with_webp_output(graph: dict) -> dict:
    """The graph saving an animated WEBP instead of an mp4, for hosts without core's video nodes: each
    CreateVideo -> SaveVideo pair becomes a SaveAnimatedWEBP (same id, prefix and fps as the pair)."""
    graph = copy.deepcopy(graph)
    for nid, node in list(graph.items()):
        if node["class_type"] != "SaveVideo":
            continue
        source = str(node["inputs"]["video"][0])
        create = graph.pop(source)
        if create["class_type"] != "CreateVideo":
            raise ValueError(f"node {nid} (SaveVideo) saves a video from {create['class_type']}, not CreateVideo")
        graph[nid] = {"class_type": "SaveAnimatedWEBP", "_meta": node.get("_meta", {}), "inputs": {
            "images": create["inputs"]["images"], "filename_prefix": node["inputs"]["filename_prefix"],
            "fps": create["inputs"]["fps"], "lossless": False, "quality": 90, "method": "default"}}
    return graph


def for_host(graph: dict, node_types: set[str] | dict) -> tuple[dict, str]:
    """The graph as this host can run it and the format it saves: mp4 (h264) where the host has core's video
    nodes, animated WEBP where it does not. ``node_types``: the host's node types (its /object_info)."""
    if all(kind in node_types for kind in VIDEO_NODES):
        return graph, "mp4 (h264)"
    return with_webp_output(graph), "animated WEBP"
