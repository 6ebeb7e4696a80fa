"""Synthetic clips the tests detect faces in: real faces (scikit-image's astronaut) moving on a plain background."""

from __future__ import annotations

import numpy as np
import skimage.data
import torch
from PIL import Image, ImageOps


def two_faces(frames: int = 4) -> list[Image.Image]:
    """384x128 frames: the astronaut's face moving left, and its mirror image moving right."""
    photo = Image.fromarray(skimage.data.astronaut()[:256, 96:352]).resize((112, 112), Image.BILINEAR)
    clip = []
    for i in range(frames):
        canvas = Image.new("RGB", (384, 128), (90, 90, 90))
        canvas.paste(photo, (40 - 8 * i, 8))
        canvas.paste(ImageOps.mirror(photo), (232 + 8 * i, 8))
        clip.append(canvas)
    return clip


def as_tensor(clip: list[Image.Image]) -> torch.Tensor:
    """PIL frames as a ComfyUI IMAGE batch ``[F, H, W, C]`` in 0..1."""
    return torch.from_numpy(np.stack([np.asarray(frame) for frame in clip])).float() / 255
