"""IMAGE inputs as RGB: every VCD node that takes an IMAGE adapts it here first.

ComfyUI's IMAGE is ``[B, H, W, C]`` floats; most are RGB, but packs hand on grey (1 channel),
grey + alpha (2) and RGBA (4) images. Grey is repeated into RGB; alpha is dropped, as ComfyUI's
own loaders give it as a separate MASK. Anything else is refused naming the input.
"""

from __future__ import annotations

import torch


def as_rgb(image: torch.Tensor, name: str) -> torch.Tensor:
    """``image`` as ``[B, H, W, 3]``; ``name`` is the node input, for the error message."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE batch [B, H, W, C], got {shape}; connect an IMAGE output.")
    if 0 in image.shape[:3]:
        raise ValueError(f"{name}: the batch is empty (shape {tuple(image.shape)}); connect at least one image.")
    channels = image.shape[-1]
    if channels in (1, 2):
        return image[..., :1].expand(-1, -1, -1, 3)
    if channels in (3, 4):
        return image[..., :3]
    raise ValueError(f"{name}: an IMAGE has 1 to 4 channels (grey, grey + alpha, RGB, RGBA); this one has {channels} channels.")
