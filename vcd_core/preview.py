"""Preview drawing shared by the nodes: mask outlines (and crop windows) in a colour per track on ``[F, H, W, C]`` frames."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .geometry import Box, draw_outlines, line_width

__all__ = ["PALETTE", "outline", "outline_all", "track_windows"]

# Distinct colours for tracks / identities, RGB 0..1 (the first is the face detector's red).
PALETTE = [(1.0, 0.2, 0.2), (0.2, 0.6, 1.0), (0.2, 0.9, 0.3), (1.0, 0.8, 0.1), (0.8, 0.3, 1.0), (0.1, 0.9, 0.9),
           (1.0, 0.5, 0.1), (1.0, 0.4, 0.7)]


def outline(images: torch.Tensor, masks: torch.Tensor, colour: Sequence[float], width: int = 2) -> torch.Tensor:
    """A copy of RGB ``images`` with the inner border (``width`` px) of each frame's ``[F, H, W]`` mask in ``colour``."""
    masks = (masks > 0.5).float()
    eroded = -F.max_pool2d(-masks[:, None], 2 * width + 1, 1, width)[:, 0]
    drawn = images.clone()
    drawn[(masks - eroded) > 0] = torch.tensor(colour, dtype=images.dtype)
    return drawn


def outline_all(images: torch.Tensor, masks: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Every mask of ``[K, F, H, W]`` outlined on ``images``, mask k in ``PALETTE[k]`` (cycling), later ones on top."""
    for k in range(masks.shape[0]):
        images = outline(images, masks[k], PALETTE[k % len(PALETTE)], width)
    return images


def track_windows(images: torch.Tensor, windows: Sequence[Sequence[Box | None]], masks: torch.Tensor) -> torch.Tensor:
    """Track k's face masks (``[K, F, H, W]``, thin outline) and crop windows (``windows[k][i]`` for frame i, None
    where the track is absent; twice as thick) on ``images``, both in ``PALETTE[k]``."""
    width = line_width(*images.shape[1:3])
    images = outline_all(images, masks, width)
    for k, track in enumerate(windows):
        boxes = [[] if window is None else [window] for window in track]
        images = draw_outlines(images, boxes, PALETTE[k % len(PALETTE)], 2 * width)
    return images
