"""Face VCD on diffusers: one crop window for the clip, the crop clip re-denoised in ONE sampling call with the
face as latent noise mask, pasted back feathered: ``vcd_core.face.plan_crops`` and ``refine_clip``, as VCD Face
Refine runs them, with diffusers' VAE and sampler as the crop denoiser (tested equal on the same frames, masks,
VAE and sampler)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from vcd_core import face, face_detect
from vcd_core.embedding_io import Embedding
from vcd_core.geometry import Box

from .loading import Models
from .pipeline import (Progress, Sampling, check_clip_length, check_frames, conditioning, decode_latents, encode_frames,
                       sample_clip)

__all__ = ["FACE", "FaceResult", "detect_faces", "refine_face"]

FACE = Sampling(steps=20, cfg=8.0, sampler="euler", denoise=0.8, gamma=0.0)  # the authors' Face VCD stage


@dataclass
class FaceResult:
    """The refined ``frames`` and the paste mask ``[F, H, W]``, the crop clip before/after sampling, the crop
    ``windows`` (None: no face anywhere, frames unchanged) and a ``warning`` to show, if any."""

    frames: torch.Tensor
    paste_mask: torch.Tensor
    crop_before: torch.Tensor
    crop_after: torch.Tensor
    windows: list[Box] | None
    warning: str | None = None


def detect_faces(frames: torch.Tensor) -> torch.Tensor:
    """``[F, H, W]`` box-shaped masks of the largest face per frame (OpenCV's Haar detector, no downloads); frames
    without a face get an empty mask."""
    boxes = face_detect.haar_faces(frames)
    return face_detect.boxes_to_masks(boxes, frames.shape[1], frames.shape[2], largest_only=True)


def refine_face(models: Models, frames: torch.Tensor, prompt: str, *, masks: torch.Tensor | None = None,
                negative: str = "", identity: Embedding | None = None, crop_factor: float = 3.0,
                guide_size: int = 512, max_size: int = 1024, feather: int = 5, crop_mode: str = "union",
                settings: Sampling = FACE, callback: Progress | None = None) -> FaceResult:
    """Face VCD on ``[F, H, W, C]`` frames; ``masks`` (None: detected) say where the face is in each frame."""
    frames = check_frames(frames)
    check_clip_length(models, len(frames))
    masks = face.masks_for_frames(masks, frames) if masks is not None else detect_faces(frames)
    plan = face.plan_crops(masks, crop_factor, crop_mode, guide_size, max_size)
    if plan is None:
        return FaceResult(frames, torch.zeros(frames.shape[:3]), frames, frames, None,
                          "no face in any frame; the frames are unchanged.")
    positive, negative_cond = conditioning(models, prompt, negative, identity)

    def denoise(crops: torch.Tensor, noise_mask: Callable[[int], torch.Tensor]) -> torch.Tensor:
        latents = encode_frames(models, crops)
        samples = sample_clip(models, tuple(latents.shape), positive, negative_cond, settings, latents=latents,
                              noise_mask=noise_mask(latents.shape[-1]), callback=callback)
        return decode_latents(models, samples).reshape(crops.shape)

    refined = face.refine_clip(frames, plan, feather, denoise)
    return FaceResult(*refined, plan.windows, face.outside_message(plan.leaving) if plan.leaving else None)
