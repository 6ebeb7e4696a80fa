"""Axis-aligned integer boxes shared by tiling and face cropping, and their outlines on preview frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Box:
    """The window ``[y0:y1, x0:x1]`` of a frame (pixel or latent units, end-exclusive)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The window of the last two dims of ``x`` (``[..., H, W]``)."""
        return x[..., self.y0:self.y1, self.x0:self.x1]

    def contains(self, other: "Box") -> bool:
        return self.y0 <= other.y0 and self.x0 <= other.x0 and self.y1 >= other.y1 and self.x1 >= other.x1

    def scaled(self, factor: int) -> "Box":
        """The same window in units ``factor`` times finer (a latent box scaled by 8 is its pixel box)."""
        return Box(self.y0 * factor, self.y1 * factor, self.x0 * factor, self.x1 * factor)


def line_width(height: int, width: int) -> int:
    """Outline width that stays visible on a preview of this size: 1 px per 128 px of the shorter side."""
    return max(1, min(height, width) // 128)


def draw_outlines(frames: torch.Tensor, boxes: Sequence[Sequence[Box]], colour: Sequence[float],
                  width: int | None = None) -> torch.Tensor:
    """A copy of ``[F, H, W, C]`` frames with frame ``i``'s ``boxes[i]`` outlined ``width`` px inside their edges."""
    out = frames.clone()
    width = line_width(*frames.shape[1:3]) if width is None else width
    paint = torch.tensor(colour, dtype=out.dtype, device=out.device)
    for frame, frame_boxes in zip(out, boxes):
        for box in frame_boxes:
            w = min(width, box.height, box.width)
            for edge in (Box(box.y0, box.y0 + w, box.x0, box.x1), Box(box.y1 - w, box.y1, box.x0, box.x1),
                         Box(box.y0, box.y1, box.x0, box.x0 + w), Box(box.y0, box.y1, box.x1 - w, box.x1)):
                frame[edge.y0:edge.y1, edge.x0:edge.x1] = paint
    return out
