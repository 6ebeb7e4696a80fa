"""Prompt-to-segmentation for ``vcd train-id``: a subject mask per photo from GroundingDINO's boxes for a text
prompt and SAM's masks for them (``vcd_core.segment``, what VCD Prompt Segment runs), so the identity loss
covers the person only, as the paper trains."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from vcd_core import segment

__all__ = ["segment_photos"]


def segment_photos(photos: Sequence[torch.Tensor], prompt: str, grounding_dino: str | os.PathLike,
                   sam: str | os.PathLike, *, bert: str | os.PathLike | None = None, box_threshold: float = segment.BOX_THRESHOLD,
                   text_threshold: float = segment.TEXT_THRESHOLD, box_mode: str = "first",
                   device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], list[int]]:
    """A ``[H, W]`` mask of what ``prompt`` names in each ``[H, W, C]`` photo, and the photos where nothing was
    found (their masks are empty: training leaves them out). ``grounding_dino``: a transformers folder or an
    original ``.pth`` (+ ``bert``); ``sam``: an original SAM checkpoint."""
    model, processor = segment.load_grounding_dino(grounding_dino, device, bert)
    predictor = segment.load_sam(sam, device)

    def find_boxes(pixels):
        return segment.detect(model, processor, pixels, prompt, box_threshold, text_threshold)

    def segment_boxes(pixels, boxes):
        return segment.segment_boxes(predictor, pixels, boxes)

    masks, missed = [], []
    for index, photo in enumerate(photos):
        mask, none = segment.prompt_masks(photo[None], find_boxes, segment_boxes, box_mode, "empty")
        masks.append(mask[0])
        if none:
            missed.append(index)
    return masks, missed
