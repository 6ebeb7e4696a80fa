"""Face VCD geometry: one crop window for the clip, crop/resize, latent noise mask, feathered paste-back.

The paper takes the union of the face masks of all frames, enlarges its box by ``crop_factor``
(3) into ONE square window, re-denoises that crop clip jointly, and pastes it back with a
feathered mask. ``per_frame_windows`` is the alternative for faces that move a lot: same-size
windows whose centres follow the face, smoothed over time. The paste mask is the face mask cut to
each frame's window, then feathered, so a face larger than its window blends in softly at the
window's border. Images are ComfyUI-style ``[F, H, W, C]`` floats, masks ``[F, H, W]``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .geometry import Box, draw_outlines

__all__ = [
    "CROP_MODES", "mask_box", "crop_window", "union_window", "per_frame_windows", "clip_windows", "crop_size",
    "crop_clip", "paste_clip", "cut_to_windows", "exclusive_masks", "feather_mask", "latent_noise_mask",
    "window_preview", "masks_for_frames", "FacePlan", "plan_crops", "outside_message", "CropDenoiser", "Refined",
    "refine_clip",
]

CROP_MODES = ["union", "per_frame_smoothed"]


def mask_box(mask: torch.Tensor) -> Box | None:
    """The bounding box of the non-zero pixels of a ``[H, W]`` (or ``[F, H, W]``, all frames) mask."""
    nonzero = (mask > 0.5).reshape(-1, *mask.shape[-2:]).any(dim=0)
    if not bool(nonzero.any()):
        return None
    rows, cols = nonzero.any(dim=1).nonzero(), nonzero.any(dim=0).nonzero()
    return Box(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _square_side(box: Box, crop_factor: float, height: int, width: int, multiple: int) -> int:
    side = math.ceil(max(box.height, box.width) * crop_factor / multiple) * multiple
    limit = (min(height, width) // multiple) * multiple or min(height, width)
    return max(min(side, limit), min(multiple, limit))


def _place(center_y: float, center_x: float, side: int, height: int, width: int) -> Box:
    y0 = int(round(center_y - side / 2))
    x0 = int(round(center_x - side / 2))
    y0, x0 = min(max(y0, 0), height - side), min(max(x0, 0), width - side)
    return Box(y0, y0 + side, x0, x0 + side)


def crop_window(box: Box, crop_factor: float, height: int, width: int, multiple: int = 8) -> Box:
    """A square window around ``box`` enlarged by ``crop_factor``, side a multiple of ``multiple``,
    clamped into the frame (a window larger than the frame shrinks to fit)."""
    side = _square_side(box, crop_factor, height, width, multiple)
    return _place((box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2, side, height, width)


def union_window(masks: torch.Tensor, crop_factor: float, multiple: int = 8) -> Box | None:
    """The paper's single window for every frame: the union of all frames' masks, enlarged. None without a face."""
    box = mask_box(masks)
    return None if box is None else crop_window(box, crop_factor, masks.shape[-2], masks.shape[-1], multiple)


def per_frame_windows(masks: torch.Tensor, crop_factor: float, smoothing: int = 2, multiple: int = 8) -> list[Box] | None:
    """Same-size windows following the face, centres averaged over ``2*smoothing+1`` frames.

    Frames without a face take the nearest detected frame's box. None when no frame has a face.
    """
    boxes = [mask_box(m) for m in masks]
    found = [i for i, b in enumerate(boxes) if b is not None]
    if not found:
        return None
    boxes = [boxes[min(found, key=lambda j: abs(j - i))] for i in range(len(boxes))]
    height, width = masks.shape[-2:]
    side = max(_square_side(b, crop_factor, height, width, multiple) for b in boxes)
    centers = torch.tensor([[(b.y0 + b.y1) / 2, (b.x0 + b.x1) / 2] for b in boxes], dtype=torch.float64)
    windows = []
    for i in range(len(boxes)):
        lo, hi = max(0, i - smoothing), min(len(boxes), i + smoothing + 1)
        cy, cx = centers[lo:hi].mean(dim=0).tolist()
        windows.append(_place(cy, cx, side, height, width))
    return windows


def clip_windows(masks: torch.Tensor, crop_factor: float, crop_mode: str) -> list[Box] | None:
    """One window per frame of ``masks`` by ``crop_mode`` (``CROP_MODES``): the union window repeated, or
    ``per_frame_windows``. None when no frame has a face."""
    if crop_mode == "union":
        window = union_window(masks, crop_factor)
        return None if window is None else [window] * masks.shape[0]
    if crop_mode == "per_frame_smoothed":
        return per_frame_windows(masks, crop_factor)
    raise ValueError(f"crop_mode must be one of {CROP_MODES} (got {crop_mode!r}).")


def crop_size(side: int, guide_size: int, max_size: int, multiple: int = 8) -> int:
    """Side of the resized crop: up to ``guide_size`` if smaller (never down), capped at ``max_size``."""
    target = max(side, guide_size)
    target = min(target, max_size)
    return max(multiple, (target // multiple) * multiple)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[F, H, W, C]`` to ``size x size`` with antialiasing (bicubic, clamped to [0, 1])."""
    x = images.movedim(-1, 1)
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.movedim(1, -1).clamp(0.0, 1.0)


def crop_clip(images: torch.Tensor, windows: Sequence[Box], size: int) -> torch.Tensor:
    """Crop frame ``i`` to ``windows[i]`` and resize every crop to ``size x size``: the crop clip ``[F, s, s, C]``."""
    crops = torch.stack([w.crop(img.movedim(-1, 0)).movedim(0, -1) for img, w in zip(images, windows)])
    return crops if crops.shape[1] == size else _resize(crops, size)


def cut_to_windows(masks: torch.Tensor, windows: Sequence[Box]) -> tuple[torch.Tensor, list[int]]:
    """Each frame's ``[H, W]`` mask cleared outside its window (all a paste can cover), and the frames whose
    face reached outside it (that part is not refined)."""
    inside = torch.zeros_like(masks)
    for i, window in enumerate(windows):
        inside[i, window.y0:window.y1, window.x0:window.x1] = window.crop(masks[i])
    leaving = [i for i in range(len(windows)) if bool(((masks[i] > 0.5) & ~(inside[i] > 0.5)).any())]
    return inside, leaving


def exclusive_masks(masks: torch.Tensor) -> torch.Tensor:
    """``[K, F, H, W]`` masks of K faces, each cleared wherever any other face's mask is over 0.5: where two faces
    overlap, neither may paste, so no face's refinement ever covers another face."""
    faces = (masks > 0.5).int()
    others = (faces.sum(dim=0, keepdim=True) - faces) > 0
    return masks.float() * ~others


def feather_mask(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """Soften a binary ``[F, H, W]`` mask inward: 0 outside, rising over ``feather`` px to 1 inside (the frame's
    border is no edge). A face narrower than ``2 x feather`` gets a shorter ramp, so its centre still reaches 1."""
    mask = (mask > 0.5).float()
    if feather <= 0:
        return mask
    eroded = mask[:, None]
    total, depth = eroded.clone(), eroded.amax(dim=(2, 3), keepdim=True)
    for _ in range(1, feather):
        eroded = -F.max_pool2d(-eroded, kernel_size=3, stride=1, padding=1)  # one more pixel in from the edge
        total += eroded
        depth += eroded.amax(dim=(2, 3), keepdim=True)  # per frame: erosions that leave some pixel
    return (total / depth.clamp(min=1))[:, 0]


def paste_clip(images: torch.Tensor, clip: torch.Tensor, windows: Sequence[Box], paste_mask: torch.Tensor) -> torch.Tensor:
    """Resize the crop clip back to each window and blend it into the frames with ``paste_mask`` ``[F, H, W]``."""
    out = images.clone()
    for i, window in enumerate(windows):
        patch = clip[i : i + 1]
        if patch.shape[1] != window.height:
            patch = _resize(patch, window.height)
        alpha = window.crop(paste_mask[i])[..., None].to(images.dtype)
        region = out[i, window.y0:window.y1, window.x0:window.x1]
        out[i, window.y0:window.y1, window.x0:window.x1] = region * (1 - alpha) + patch[0].to(images.dtype) * alpha
    return out


def latent_noise_mask(masks: torch.Tensor, windows: Sequence[Box], latent_size: int) -> torch.Tensor:
    """The face mask inside each window at latent resolution: ``[F, 1, l, l]``, 1 where the model may change."""
    crops = torch.stack([w.crop(m) for m, w in zip(masks, windows)])[:, None].float()
    return F.interpolate(crops, size=(latent_size, latent_size), mode="area").clamp(0.0, 1.0)


WINDOW_COLOUR = (1.0, 0.85, 0.0)  # yellow: the crop window that is re-denoised
FACE_COLOUR = (1.0, 0.2, 0.2)  # red: the face's box (the part the noise mask lets change)


def window_preview(images: torch.Tensor, windows: Sequence[Box], masks: torch.Tensor) -> torch.Tensor:
    """Frame ``i`` with its crop window outlined in yellow and the box of its face mask in red, ``[F, H, W, C]``."""
    faces = [[box] if (box := mask_box(mask)) is not None else [] for mask in masks]
    return draw_outlines(draw_outlines(images, faces, FACE_COLOUR), [[window] for window in windows], WINDOW_COLOUR)


def masks_for_frames(mask: torch.Tensor, images: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A float ``[F, H, W]`` mask batch matching ``images`` one to one (one ``[H, W]`` / ``[1, H, W]`` mask serves
    every frame); ``name`` is the input the errors name."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}: give a MASK batch [frames, height, width] (or one "
                         "[height, width] mask for all frames).")
    if mask.shape[-2:] != images.shape[1:3]:
        raise ValueError(f"{name} is {mask.shape[-1]}x{mask.shape[-2]} but the frames are {images.shape[2]}x"
                         f"{images.shape[1]}: resize the mask to the frames.")
    if mask.shape[0] == 1:
        mask = mask.expand(images.shape[0], -1, -1)
    if mask.shape[0] != images.shape[0]:
        raise ValueError(f"{name} has {mask.shape[0]} frames but image has {images.shape[0]}: give one mask per frame "
                         "(or one for all).")
    if not bool(torch.isfinite(mask).all()):  # NaN would reach the noise mask and blacken the face
        raise ValueError(f"{name} holds NaN or infinite values: check the node that made it (a mask is 0 to 1).")
    return mask.float()


class FacePlan(NamedTuple):
    """Where one face is refined: a window per frame, the paste mask cut to them (also the noise mask), the
    side the crops are denoised at, and the frames whose face reached outside its window."""

    windows: list[Box]
    inside: torch.Tensor
    size: int
    leaving: list[int]


def plan_crops(masks: torch.Tensor, crop_factor: float, crop_mode: str, guide_size: int, max_size: int,
               paste: torch.Tensor | None = None) -> FacePlan | None:
    """The crop windows of ``masks`` ``[F, H, W]`` (``clip_windows``) and ``paste`` (default: ``masks``; a track's
    exclusive mask) cut to them. None when no frame has a face."""
    windows = clip_windows(masks, crop_factor, crop_mode)
    if windows is None:
        return None
    inside, leaving = cut_to_windows(masks if paste is None else paste, windows)
    return FacePlan(windows, inside, crop_size(windows[0].height, guide_size, max_size), leaving)


def outside_message(leaving: Sequence[int], face_name: str = "the face") -> str:
    """What to tell the artist when a face reaches outside its crop window in frames ``leaving``."""
    return (f"{face_name} reaches outside its crop window in frame(s) {list(leaving)}; only the part inside is "
            "refined, blended softly at the window's edge. Raise crop_factor, or use crop_mode 'union' for a moving "
            "face (a window never exceeds the frame's shorter side).")


CropDenoiser = Callable[[torch.Tensor, Callable[[int], torch.Tensor]], torch.Tensor]
"""``(crop clip [F, s, s, C], noise_mask(latent side) -> [F, 1, l, l])`` -> the crop clip re-denoised in ONE
sampling call (encode, sample with the noise mask, decode): the host's part of Face VCD."""


class Refined(NamedTuple):
    """Face VCD's result: the frames with the face pasted, the feathered paste mask, the crop clip before/after."""

    frames: torch.Tensor
    paste_mask: torch.Tensor
    crop_before: torch.Tensor
    crop_after: torch.Tensor


def refine_clip(images: torch.Tensor, plan: FacePlan, feather: int, denoise: CropDenoiser,
                onto: torch.Tensor | None = None) -> Refined:
    """Face VCD on ``images`` ``[F, H, W, C]``: crop every frame to its window, re-denoise the crop clip jointly
    with the face as noise mask, paste it back through the face mask cut to the window and feathered, into
    ``onto`` (default: ``images``; a later face track pastes into the frames an earlier one refined)."""
    before = crop_clip(images, plan.windows, plan.size)
    after = denoise(before, lambda side: latent_noise_mask(plan.inside, plan.windows, side))
    paste_mask = feather_mask(plan.inside, feather)
    pasted = paste_clip(images if onto is None else onto, after, plan.windows, paste_mask)
    return Refined(pasted, paste_mask, before, after)
