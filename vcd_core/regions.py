"""Regions of the frame for regional conditioning: a box as a mask, and a mask batch checked against the video.

ComfyUI applies a conditioning mask ``[B, H, W]`` per frame when ``B`` equals the latent's frame count,
and AnimateDiff-Evolved slices such a mask to each context window's frames; a single mask (``B`` 1) holds
for every frame. Any other ``B`` would be applied to the wrong frames without an error, so it is refused
here. The mask is resized (stretched) to the latent, so its aspect ratio must be the frames'.
"""

from __future__ import annotations

import torch

__all__ = ["box_mask", "check_region_mask"]


def box_mask(x: float, y: float, width: float, height: float, frame_height: int, frame_width: int) -> torch.Tensor:
    """``[1, H, W]``: 1 inside the box given as fractions of the frame (left, top, width, height), cut to the frame."""
    if width <= 0 or height <= 0:
        raise ValueError(f"the box needs a width and height above 0 (got {width} x {height}).")
    mask = torch.zeros((1, frame_height, frame_width))
    x0, y0 = round(x * frame_width), round(y * frame_height)
    x1, y1 = round((x + width) * frame_width), round((y + height) * frame_height)
    mask[:, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 1.0
    if not bool(mask.any()):
        raise ValueError(f"the box (x {x}, y {y}, {width} x {height}) lies outside the frame: give fractions 0..1.")
    return mask


def check_region_mask(mask: torch.Tensor, frames: int | None = None, frame_size: tuple[int, int] | None = None) -> torch.Tensor:
    """``mask`` as a ``[B, H, W]`` float batch with ``B`` 1 or ``frames``, and the aspect ratio of ``frame_size``
    (height, width) when given; otherwise a ValueError saying what to change."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or 0 in mask.shape:
        raise ValueError(f"mask: expected a MASK [frames, height, width], got shape {tuple(mask.shape)}.")
    if frames is not None and mask.shape[0] not in (1, frames):
        raise ValueError(f"mask has {mask.shape[0]} frames but the latent has {frames}: give one mask per frame "
                         "or one for all frames (it would be applied to the wrong frames otherwise).")
    if frame_size is not None:
        height, width = frame_size
        if abs(mask.shape[2] / mask.shape[1] - width / height) > 0.01 * width / height:
            raise ValueError(f"mask is {mask.shape[2]}x{mask.shape[1]} but the frames are {width}x{height}: the mask "
                             "is stretched to the frames, so give it their aspect ratio (resize or crop it).")
    return mask.float()
