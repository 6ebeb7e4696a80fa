"""Prompt-to-segmentation (README "Identity embeddings"): GroundingDINO boxes for a text prompt, SAM masks for the boxes.

GroundingDINO runs through transformers' ``GroundingDinoForObjectDetection`` from a local
Hugging Face folder, or from an original ``.pth`` + ``.cfg.py`` converted on load
(``grounding_dino_original``; ``groundingdino-py`` cannot build its model under transformers 5). SAM
runs through ``segment-anything`` from the original ``.pth`` checkpoints, read with
``torch.load(weights_only=True)`` (or ``.safetensors``); its size (ViT-B/L/H or smaller) is
read from the weights. Unlike the released code, an image with no detection never crashes:
it gets an empty or a full mask, and every image gets exactly one mask.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .files import check_weights_downloaded, load_tensors

__all__ = ["Detection", "load_grounding_dino", "detect", "load_sam", "segment_boxes", "prompt_masks"]

SAM_IMAGE_SIZE, SAM_PATCH = 1024, 16
BOX_THRESHOLD, TEXT_THRESHOLD = 0.3, 0.25  # the released config's GroundingDINO thresholds


@dataclass
class Detection:
    """Boxes ``[k, 4]`` (x0, y0, x1, y1 in pixels), best first, and their ``scores`` ``[k]``."""

    boxes: torch.Tensor
    scores: torch.Tensor


def load_grounding_dino(folder: str | os.PathLike, device: torch.device | str = "cpu",
                        bert: str | os.PathLike | None = None):
    """``(model, processor)`` from a transformers GroundingDINO folder, or an original ``.pth`` (BERT files in ``bert``)."""
    from transformers import AutoConfig, AutoProcessor, GroundingDinoForObjectDetection

    folder = Path(folder)
    if folder.is_file():
        from .grounding_dino_original import load_original

        if bert is None:
            raise ValueError(f"{folder.name} is an original GroundingDINO checkpoint: it needs a bert-base-uncased folder")
        return load_original(folder, bert, device)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: put a Hugging Face GroundingDINO folder there "
                                "(e.g. IDEA-Research/grounding-dino-tiny: config, weights, processor and tokenizer files).")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type != "grounding-dino":
        raise ValueError(f"{folder.name} holds a {config.model_type!r} model, not GroundingDINO")
    check_weights_downloaded(folder, "GroundingDINO")
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = GroundingDinoForObjectDetection.from_pretrained(folder, local_files_only=True).to(device).eval()
    return model, processor


def grounding_text(prompt: str) -> str:
    """GroundingDINO's caption form: lower case, ending with a full stop."""
    text = prompt.strip().lower()
    if not text:
        raise ValueError("the prompt is empty: say what to segment, e.g. 'person'")
    return text if text.endswith(".") else text + "."


@torch.no_grad()
def detect(model, processor, image: np.ndarray, prompt: str, box_threshold: float = BOX_THRESHOLD,
           text_threshold: float = TEXT_THRESHOLD) -> Detection:
    """Boxes for ``prompt`` in one RGB uint8 ``[H, W, 3]`` image, best score first."""
    inputs = processor(images=[image], text=[grounding_text(prompt)], return_tensors="pt").to(model.device)
    outputs = model(**inputs)
    result = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=box_threshold, text_threshold=text_threshold,
        target_sizes=[image.shape[:2]])[0]
    order = result["scores"].argsort(descending=True)
    return Detection(result["boxes"][order].float().cpu(), result["scores"][order].float().cpu())


def _sam_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = load_tensors(path, "Use a released SAM checkpoint (e.g. sam_vit_b_01ec64.pth).")
    return state.get("model", state) if isinstance(state, dict) else state


def load_sam(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """A ``segment_anything.SamPredictor`` for an original SAM checkpoint; encoder size read from the weights."""
    from segment_anything import SamPredictor
    from segment_anything.build_sam import _build_sam

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SAM checkpoint at {path}: put e.g. sam_vit_b_01ec64.pth in models/sams")
    state = _sam_state_dict(path)
    try:
        embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    except KeyError as missing:
        raise ValueError(f"{path.name} is not an original SAM checkpoint (no {missing})") from None
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)))
    grid = SAM_IMAGE_SIZE // SAM_PATCH
    global_blocks = [i for i in range(depth) if state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] == 2 * grid - 1]
    sam = _build_sam(embed_dim, depth, embed_dim // head_dim, global_blocks, checkpoint=None)
    expected = set(sam.state_dict())
    extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
    if extra or missing:  # e.g. HQ-SAM (sam_hq_vit_*.pth), which the segment-anything packs keep in models/sams too
        kind = " (an HQ-SAM checkpoint)" if any(k.startswith("mask_decoder.hf_") for k in extra) else ""
        raise ValueError(f"{path.name} is not an original SAM checkpoint{kind}: "
                         f"{len(extra)} unexpected weights (e.g. {extra[:2]}), {len(missing)} missing (e.g. "
                         f"{missing[:2]}). Use the original SAM release (e.g. sam_vit_b_01ec64.pth).")
    sam.load_state_dict(state)
    return SamPredictor(sam.to(device).eval())


@torch.no_grad()
def segment_boxes(predictor, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
    """SAM masks ``[k, H, W]`` (bool) for boxes ``[k, 4]`` in one RGB uint8 image."""
    predictor.set_image(image)
    masks = []
    for box in boxes.tolist():
        mask, _, _ = predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=False)
        masks.append(torch.from_numpy(mask[0]))
    return torch.stack(masks) if masks else torch.zeros((0, *image.shape[:2]), dtype=torch.bool)


def prompt_masks(images: torch.Tensor, find_boxes: Callable[[np.ndarray], Detection],
                 segment: Callable[[np.ndarray, torch.Tensor], torch.Tensor], box_mode: str = "first",
                 if_none: str = "empty") -> tuple[torch.Tensor, list[int]]:
    """One mask per image ``[B, H, W]`` for IMAGE ``[B, H, W, 3]`` in [0, 1], and the indices with no detection.

    ``box_mode`` "first" keeps the best box (the released code's choice), "union" merges the
    masks of all boxes. ``if_none`` "empty" gives an all-zero mask, "full" an all-one mask.
    """
    if box_mode not in ("first", "union"):
        raise ValueError(f"box_mode must be 'first' or 'union', got {box_mode!r}")
    if if_none not in ("empty", "full"):
        raise ValueError(f"if_none must be 'empty' or 'full', got {if_none!r}")
    masks, missed = [], []
    for index, image in enumerate(images):
        pixels = (image[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        boxes = find_boxes(pixels).boxes
        if box_mode == "first":
            boxes = boxes[:1]
        found = segment(pixels, boxes) if len(boxes) else torch.zeros((0, *pixels.shape[:2]), dtype=torch.bool)
        if len(found):
            masks.append(found.any(0).float())
        else:
            missed.append(index)
            masks.append(torch.full(pixels.shape[:2], 1.0 if if_none == "full" else 0.0))
    return torch.stack(masks), missed
