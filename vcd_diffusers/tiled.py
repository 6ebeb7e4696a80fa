"""Tiled VCD on diffusers: frames upscaled, VAE-encoded, partly re-noised from the 3D prior and re-denoised in
spatial tiles that each carry ALL frames, blended after every model call (``vcd_core.tiling``, as VCD Tiled
Refine's wrapper blends them), so the motion UNet only ever sees one tile's area and no seam survives."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from vcd_core import tiling
from vcd_core.embedding_io import Embedding
from vcd_core.tiling import LATENT_SCALE

from .loading import Models
from .pipeline import (Denoiser, Progress, Sampling, check_clip_length, check_frames, conditioning, decode_latents,
                       encode_frames, sample_clip)

__all__ = ["TILED", "tiled_denoiser", "scaled_size", "resize_to", "tiled_refine", "upscale"]

TILED = Sampling(steps=20, cfg=8.0, sampler="euler", denoise=0.2, gamma=0.1)  # the paper's Tiled VCD stage


def tiled_denoiser(denoiser: Denoiser, tile_size: int, overlap: int, tile_batch: int = 1) -> Denoiser:
    """``denoiser(x, t)`` over latents ``[F, C, h, w]`` run per tile of ``tile_size`` px overlapping by ``overlap``
    px (``tile_batch`` tiles per call, stacked along dim 0) and blended."""
    return tiling.tiled(denoiser, tile_size // LATENT_SCALE, overlap // LATENT_SCALE, tile_batch)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The frame size after resizing by ``scale``."""
    if not scale > 0:
        raise ValueError(f"scale must be positive (got {scale}).")
    return round(height * scale), round(width * scale)


@contextmanager
def vae_tiles(models: Models) -> Iterator[None]:
    """Inside the block the VAE works in tiles (diffusers' tiled VAE) for frames larger than its sample size."""
    was = models.vae.use_tiling
    models.vae.enable_tiling()
    try:
        yield
    finally:
        models.vae.use_tiling = was


def tiled_refine(models: Models, frames: torch.Tensor, prompt: str, *, negative: str = "",
                 identity: Embedding | None = None, tile_size: int = 512, overlap: int = 64, tile_batch: int = 1,
                 settings: Sampling = TILED, callback: Progress | None = None) -> torch.Tensor:
    """Tiled VCD on ``[F, H, W, C]`` frames already upscaled: the same size back, details re-denoised."""
    tiling.check_tiling(tile_size, overlap, tile_batch)
    frames = check_frames(frames)
    check_clip_length(models, len(frames))
    height, width = frames.shape[1:3]
    padded = tiling.pad_to_multiple(frames, LATENT_SCALE)  # cropped back after decoding
    positive, negative_cond = conditioning(models, prompt, negative, identity)
    with vae_tiles(models):
        latents = encode_frames(models, padded)
        samples = sample_clip(models, tuple(latents.shape), positive, negative_cond, settings, latents=latents,
                              wrap=lambda denoise: tiled_denoiser(denoise, tile_size, overlap, tile_batch),
                              callback=callback)
        return decode_latents(models, samples)[:, :height, :width]


def resize_to(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[F, H, W, C]`` frames resized to ``height`` x ``width`` (bicubic, antialiased when shrinking, in [0, 1])."""
    if (height, width) == tuple(frames.shape[1:3]):
        return frames
    x = F.interpolate(frames.movedim(-1, 1), size=(height, width), mode="bicubic",
                      antialias=height < frames.shape[1] or width < frames.shape[2], align_corners=False)
    return x.movedim(1, -1).clamp(0, 1)


def upscale(models: Models, frames: torch.Tensor, prompt: str, *, scale: float = 2.0, negative: str = "",
            identity: Embedding | None = None, tile_size: int = 512, overlap: int = 64, tile_batch: int = 1,
            settings: Sampling = TILED, upscale_model=None, callback: Progress | None = None) -> torch.Tensor:
    """Tiled VCD's upscale stage: ``frames`` resized by ``scale`` (the paper: 2x; through ``upscale_model`` first
    when given, from ``upscaler.load_upscale_model``), then ``tiled_refine``."""
    frames = check_frames(frames)
    check_clip_length(models, len(frames))  # before the upscale model's minutes
    size = scaled_size(frames.shape[1], frames.shape[2], scale)
    if upscale_model is not None:
        from .upscaler import upscale_with_model

        frames = upscale_with_model(upscale_model, frames)
    return tiled_refine(models, resize_to(frames, *size), prompt, negative=negative, identity=identity,
                        tile_size=tile_size, overlap=overlap, tile_batch=tile_batch, settings=settings,
                        callback=callback)
