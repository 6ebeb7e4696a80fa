"""Face VCD on diffusers: one crop window for the clip, the crop clip re-denoised in ONE sampling call with the
face as latent noise mask, pasted back feathered. The geometry is ``vcd_core.face``'s, composed as VCD Face
Refine composes it (tested equal on the same frames, masks, VAE and sampler)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vcd_core import face, face_detect
from vcd_core.embedding_io import Embedding
from vcd_core.geometry import Box

from .loading import Models
from .pipeline import Progress, Sampling, check_frames, conditioning, decode_latents, encode_frames, sample_clip

__all__ = ["FACE", "FaceResult", "detect_faces", "face_masks", "refine_face"]

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


def face_masks(masks: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Face masks ``[F, H, W]`` for ``frames``: one per frame, or one ``[H, W]`` / ``[1, H, W]`` for all."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[-2:] != frames.shape[1:3]:
        raise ValueError(f"mask: {tuple(masks.shape)} does not fit frames of {frames.shape[2]}x{frames.shape[1]}: "
                         "give masks the frames' size, one per frame or one for all.")
    if masks.shape[0] == 1:
        masks = masks.expand(frames.shape[0], -1, -1)
    if masks.shape[0] != frames.shape[0]:
        raise ValueError(f"mask: {masks.shape[0]} masks for {frames.shape[0]} frames; give one per frame (or one "
                         "for all).")
    return masks.float()


def refine_face(models: Models, frames: torch.Tensor, prompt: str, *, masks: torch.Tensor | None = None,
                negative: str = "", identity: Embedding | None = None, crop_factor: float = 3.0,
                guide_size: int = 512, max_size: int = 1024, feather: int = 5, crop_mode: str = "union",
                settings: Sampling = FACE, callback: Progress | None = None) -> FaceResult:
    """Face VCD on ``[F, H, W, C]`` frames; ``masks`` (None: detected) say where the face is in each frame."""
    frames = check_frames(frames)
    masks = face_masks(masks, frames) if masks is not None else detect_faces(frames)
    windows = face.clip_windows(masks, crop_factor, crop_mode)
    if windows is None:
        return FaceResult(frames, torch.zeros(frames.shape[:3]), frames, frames, None,
                          "no face in any frame; the frames are unchanged.")
    inside, leaving = face.cut_to_windows(masks, windows)
    warning = None
    if leaving:
        warning = (f"the face reaches outside its crop window in frame(s) {leaving}; only the part inside is "
                   "refined, blended softly at the window's edge. Raise crop_factor, or use crop_mode 'union'.")
    size = face.crop_size(windows[0].height, guide_size, max_size)
    before = face.crop_clip(frames, windows, size)
    latents = encode_frames(models, before)
    noise_mask = face.latent_noise_mask(masks, windows, latents.shape[-1])
    positive, negative_cond = conditioning(models, prompt, negative, identity)
    samples = sample_clip(models, tuple(latents.shape), positive, negative_cond, settings, latents=latents,
                          noise_mask=noise_mask, callback=callback)
    after = decode_latents(models, samples).reshape(before.shape)
    paste_mask = face.feather_mask(inside, feather)
    return FaceResult(face.paste_clip(frames, after, windows, paste_mask), paste_mask, before, after, windows, warning)
