"""Tiled VCD: denoise a video in spatial tiles that each carry ALL frames, blended every call.

A tile plan covers the frame exactly with uniform tiles that overlap; blend weights ramp across
each overlap and are normalised so they sum to one at every pixel. ``tiled_apply`` runs any
per-tile function (a denoiser ``f(x, sigma, cond) -> x``, or ComfyUI's cond-batch executor) and
blends its outputs, so the model only ever sees one tile's area: peak memory follows the tile size.
Frames are never split or reordered, so a motion module sees the whole clip in every tile.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .geometry import Box, draw_outlines

__all__ = ["LATENT_SCALE", "tile_plan", "blend_weights", "tiled_apply", "repeat_per_frame", "tiled", "cut_mask",
           "pad_to_multiple", "check_tiling", "pixel_plan", "plan_preview"]

LATENT_SCALE = 8  # SD1.5's VAE: one latent cell per 8 x 8 pixels


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_plan(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Uniform tiles of ``min(tile, side)`` covering ``height x width`` exactly, overlapping by at least ``overlap``."""
    if tile < 1:
        raise ValueError(f"tile must be positive (got {tile})")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be at least 0 and smaller than the tile (got overlap {overlap}, tile {tile})")
    th, tw = min(tile, height), min(tile, width)
    return [Box(y, y + th, x, x + tw) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def _ramp(size: int, start: int, end: int, length: int, overlap: int) -> torch.Tensor:
    """1 inside, rising linearly over ``overlap`` at edges that are not the frame border."""
    ramp = torch.ones(size, dtype=torch.float64)
    if overlap > 0:
        rise = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        n = min(overlap, size)
        if start > 0:
            ramp[:n] = torch.minimum(ramp[:n], rise[:n])
        if end < length:
            ramp[size - n:] = torch.minimum(ramp[size - n:], rise[:n].flip(0))
    return ramp


def blend_weights(plan: Sequence[Box], height: int, width: int, overlap: int) -> list[torch.Tensor]:
    """Per-tile ``[th, tw]`` float32 weights that sum to exactly one at every pixel of the frame."""
    raw = [
        _ramp(t.y1 - t.y0, t.y0, t.y1, height, overlap)[:, None] * _ramp(t.x1 - t.x0, t.x0, t.x1, width, overlap)[None, :]
        for t in plan
    ]
    total = torch.zeros((height, width), dtype=torch.float64)
    for t, w in zip(plan, raw):
        total[t.y0:t.y1, t.x0:t.x1] += w
    if not bool((total > 0).all()):
        raise ValueError("tile plan does not cover the frame")
    return [(w / total[t.y0:t.y1, t.x0:t.x1]).float() for t, w in zip(plan, raw)]


TileFn = Callable[[torch.Tensor, Sequence[Box]], "torch.Tensor | Sequence[torch.Tensor]"]


def tiled_apply(
    fn: TileFn,
    x: torch.Tensor,
    plan: Sequence[Box],
    weights: Sequence[torch.Tensor],
    tile_batch: int = 1,
) -> torch.Tensor | list[torch.Tensor]:
    """Blend ``fn`` over the tiles of ``x`` (``[..., H, W]``); ``fn`` may return one tensor or a list.

    ``fn(tiles, group)`` receives the boxes ``group`` of ``plan`` cut from ``x`` and concatenated along
    dim 0 (each tile keeps every frame, contiguous) and returns outputs with the same layout. With a
    single tile covering the whole frame this is exactly ``fn(x, plan)``.
    """
    if len(plan) == 1 and plan[0] == Box(0, x.shape[-2], 0, x.shape[-1]):
        return fn(x, list(plan))
    outputs: list[torch.Tensor] | None = None
    for first in range(0, len(plan), tile_batch):
        group = plan[first:first + tile_batch]
        result = fn(torch.cat([t.crop(x) for t in group]), group)
        single = isinstance(result, torch.Tensor)
        results = [result] if single else list(result)
        if outputs is None:
            outputs = [r.new_zeros((r.shape[0] // len(group), *r.shape[1:-2], x.shape[-2], x.shape[-1])) for r in results]
        for out, r in zip(outputs, results):
            for k, (t, chunk) in enumerate(zip(group, r.chunk(len(group)))):
                w = weights[first + k].to(device=chunk.device, dtype=chunk.dtype)
                out[..., t.y0:t.y1, t.x0:t.x1] += chunk * w
    return outputs[0] if single else outputs


def repeat_per_frame(value, frames: int, count: int):
    """Repeat a per-frame tensor (batch == frames) for ``count`` stacked tiles; leave anything else as is."""
    if count > 1 and isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == frames:
        return value.repeat(count, *[1] * (value.ndim - 1))
    return value


def tiled(denoiser: Callable[..., "torch.Tensor | Sequence[torch.Tensor]"], tile: int, overlap: int,
          tile_batch: int = 1, tile_kwargs: "Callable[[dict, Sequence[Box], int], dict] | None" = None,
          ) -> Callable[..., "torch.Tensor | list[torch.Tensor]"]:
    """Wrap ``denoiser(x, *args, **kwargs)`` (e.g. ``f(x, sigma, cond)``, or ComfyUI's cond-batch executor) to run on
    spatial tiles of ``x`` and blend; per-frame ``args`` are repeated per stacked tile, ``kwargs`` pass as they are,
    or as ``tile_kwargs(kwargs, tiles, frames)`` makes them for those tiles (e.g. conditioning masks cut to them)."""

    def run(x: torch.Tensor, *args, **kwargs) -> "torch.Tensor | list[torch.Tensor]":
        plan = tile_plan(x.shape[-2], x.shape[-1], tile, overlap)
        weights = blend_weights(plan, x.shape[-2], x.shape[-1], overlap)

        def per_tile(tiles: torch.Tensor, group: Sequence[Box]) -> "torch.Tensor | Sequence[torch.Tensor]":
            extra = kwargs if tile_kwargs is None else tile_kwargs(kwargs, group, x.shape[0])
            return denoiser(tiles, *[repeat_per_frame(a, x.shape[0], len(group)) for a in args], **extra)

        return tiled_apply(per_tile, x, plan, weights, tile_batch)

    return run


def cut_mask(mask: torch.Tensor, tiles: Sequence[Box], frames: int) -> torch.Tensor:
    """A ``[1 or frames, H, W]`` mask over the whole frame cut to ``tiles``, stacked as ``tiled`` stacks their frames."""
    mask = mask[:frames]
    if len(tiles) == 1:
        return tiles[0].crop(mask)
    if mask.shape[0] < frames:  # as ComfyUI repeats a shorter mask over the frames
        mask = mask.repeat(frames // mask.shape[0], *[1] * (mask.ndim - 1))
    return torch.cat([t.crop(mask) for t in tiles])


def pad_to_multiple(frames: torch.Tensor, multiple: int) -> torch.Tensor:
    """``[F, H, W, C]`` frames grown at the bottom and right to multiples of ``multiple`` by repeating the edge
    pixels (a VAE works in whole cells); crop ``[:, :H, :W]`` to get the original size back."""
    height, width = frames.shape[1:3]
    extra_h, extra_w = -height % multiple, -width % multiple
    if not extra_h and not extra_w:
        return frames
    return F.pad(frames.movedim(-1, 1), (0, extra_w, 0, extra_h), mode="replicate").movedim(1, -1)


def check_tiling(tile_size: int, overlap: int, tile_batch: int) -> None:
    """Tiled VCD's pixel settings: tiles a multiple of 8 and at least 64 px, an overlap smaller than a tile."""
    if tile_size < 64 or tile_size % LATENT_SCALE:
        raise ValueError(f"tile_size must be a multiple of 8 and at least 64 px (got {tile_size}).")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be at least 0 and smaller than tile_size (got overlap {overlap}, tile_size {tile_size}).")
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be at least 1 (got {tile_batch}).")


def pixel_plan(height: int, width: int, tile_size: int, overlap: int) -> list[Box]:
    """The tiles Tiled VCD samples on frames of ``height x width`` (multiples of 8), in pixels: the latent plan
    of ``tile_size // 8`` tiles overlapping by ``overlap // 8``, scaled back."""
    plan = tile_plan(height // LATENT_SCALE, width // LATENT_SCALE, tile_size // LATENT_SCALE, overlap // LATENT_SCALE)
    return [box.scaled(LATENT_SCALE) for box in plan]


TILE_COLOURS = ((0.2, 0.6, 1.0), (1.0, 0.55, 0.1))  # blue / orange, alternating like a chessboard
OVERLAP_COLOUR = (1.0, 0.0, 1.0)  # magenta tint where tiles overlap (there they are blended)


def plan_preview(frame: torch.Tensor, plan: Sequence[Box]) -> torch.Tensor:
    """``[1, H, W, C]``: a ``[H, W, C]`` frame with every tile of ``plan`` outlined and the overlaps tinted half magenta."""
    cover = torch.zeros(frame.shape[:2], dtype=torch.int64)
    for t in plan:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
    tint = torch.tensor(OVERLAP_COLOUR, dtype=frame.dtype, device=frame.device)
    shaded = torch.where((cover > 1).to(frame.device)[..., None], (frame + tint) / 2, frame)[None]
    rows, cols = sorted({t.y0 for t in plan}), sorted({t.x0 for t in plan})
    for parity, colour in enumerate(TILE_COLOURS):
        boxes = [t for t in plan if (rows.index(t.y0) + cols.index(t.x0)) % 2 == parity]
        shaded = draw_outlines(shaded, [boxes], colour)
    return shaded
