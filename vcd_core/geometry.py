"""Axis-aligned integer boxes shared by tiling and face cropping."""

from __future__ import annotations

from dataclasses import dataclass

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

    def scaled(self, factor: float) -> "Box":
        return Box(*(round(v * factor) for v in (self.y0, self.y1, self.x0, self.x1)))
