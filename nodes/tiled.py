"""Tiled VCD: re-denoise an upscaled video in spatial tiles that each carry all frames."""

from __future__ import annotations

from typing import Sequence

import torch
from comfy_api.latest import io

from .inputs import checked
from ..vcd_core import tiling
from ..vcd_core.geometry import Box
from ..vcd_core.tiling import LATENT_SCALE, check_tiling, pixel_plan
from .ade import warn_if_prior_lost
from .channels import as_rgb
from .conditioning import refuse_whole_frame
from .progress import send_preview_image
from .sampling import SamplingSettings, denoise_clip, sampler_inputs

WRAPPER_KEY = "VCD_tiled"


def _run_chain(x: torch.Tensor, timestep, *, executor, model, conds, model_options):
    return executor(model, conds, x, timestep, model_options)


def _conds_for_tiles(kwargs: dict, tiles: Sequence[Box], frames: int) -> dict:
    """The cond-batch call's conds with each conditioning mask (ConditioningSetMask, the sampler has sized it to the
    whole latent frame) cut to the tiles being sampled, so a region keeps its place in every tile. A group is None
    where the sampler skips it (the uncond at CFG 1)."""
    conds = [None if group is None else
             [{**c, "mask": tiling.cut_mask(c["mask"], tiles, frames)} if "mask" in c else c for c in group]
             for group in kwargs["conds"]]
    return {**kwargs, "conds": conds}


def tiling_wrapper(tile: int, overlap: int, tile_batch: int):
    """A CALC_COND_BATCH wrapper: run the rest of the chain (ADE's windows stay outside) per tile and blend.

    Placed on a clone of the incoming MODEL, it sits inside AnimateDiff-Evolved's own wrapper, so each call
    gets one whole context window and every tile keeps all of its frames, contiguous.
    """
    # the per-frame timestep is repeated per tile, conditioning masks are cut to each tile
    run_tiled = tiling.tiled(_run_chain, tile, overlap, tile_batch, tile_kwargs=_conds_for_tiles)

    def wrapper(executor, model, conds, x_in: torch.Tensor, timestep, model_options):
        return run_tiled(x_in, timestep, executor=executor, model=model, conds=conds, model_options=model_options)

    return wrapper


def check_conditioning(model, positive: list, negative: list) -> None:
    """Refuse what cannot be cut into tiles: whole-frame conditioning (masks are cut per tile, areas and hints are
    not) and an inpainting model's whole-frame inputs."""
    refuse_whole_frame({"positive": positive, "negative": negative}, "VCD Tiled Refine", "one tile at a time",
                       ("area", "set_area_to_bounds", "control", "gligen"),
                       " Conditioning (Set Mask) with set_cond_area 'default' works here: its mask is cut per tile.")
    if getattr(getattr(model, "model", None), "concat_keys", ()):
        raise ValueError("model: an inpainting model takes whole-frame image inputs that cannot be cut into tiles; "
                         "connect the MODEL of a regular (non-inpainting) SD1.5 checkpoint.")


def tiled_model(model, tile_size: int, overlap: int, tile_batch: int):
    """A clone of ``model`` whose cond-batch calls run tile by tile (latent units)."""
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    patched.remove_wrappers_with_key(WrappersMP.CALC_COND_BATCH, WRAPPER_KEY)
    patched.add_wrapper_with_key(
        WrappersMP.CALC_COND_BATCH, WRAPPER_KEY,
        tiling_wrapper(tile_size // LATENT_SCALE, overlap // LATENT_SCALE, tile_batch),
    )
    return patched


class VCDTiledRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDTiledRefine",
            display_name="VCD Tiled Refine",
            category="VCD/upscale",
            description="Tiled VCD: partial-noise and re-denoise frames already upscaled by any upscaler, in spatial "
                        "tiles that each carry ALL frames (so the motion module sees the whole clip), blended every "
                        "step so no seam survives. Memory follows the tile size, not the frame size.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Vae.Input("vae"),
                io.Image.Input("image", tooltip="Frames already upscaled (e.g. 2x with Upscale Image (using Model))."),
                io.Int.Input("tile_size", default=512, min=64, max=4096, step=8, tooltip="Tile side in pixels."),
                io.Int.Input("overlap", default=64, min=0, max=2048, step=8, tooltip="Overlap between tiles, in pixels."),
                *sampler_inputs(denoise=0.2, gamma=0.1),
                io.Int.Input("tile_batch", default=1, min=1, max=64,
                             tooltip="Tiles per model call: faster on a big GPU, memory grows with it."),
            ],
            outputs=[
                io.Image.Output(),
                io.Image.Output(display_name="tile_plan",
                                tooltip="The first frame with the sampling tiles outlined and their overlaps tinted "
                                        "magenta; shown on the node before sampling starts."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked
    def execute(cls, model, positive, negative, vae, image: torch.Tensor, tile_size: int, overlap: int,
                denoise: float, steps: int, cfg: float, sampler_name: str, scheduler: str, seed: int,
                gamma: float, tile_batch: int) -> io.NodeOutput:
        settings = SamplingSettings(seed, steps, cfg, sampler_name, scheduler, denoise, gamma)
        check_tiling(tile_size, overlap, tile_batch)
        check_conditioning(model, positive, negative)
        image = as_rgb(image, "image")
        height, width = image.shape[1:3]
        padded = tiling.pad_to_multiple(image, LATENT_SCALE)  # cropped back after decoding
        plan = tiling.plan_preview(padded[0], pixel_plan(*padded.shape[1:3], tile_size, overlap))[:, :height, :width]
        send_preview_image(plan[0], steps)  # where the tiles are, before the long part
        # ComfyUI's tiled VAE also runs half-size tiles, which an overlap of tile_size/2 or more divides by
        # zero: cap the VAE's overlap as core VAEDecodeTiled does (the sampling tiles keep the full overlap).
        vae_overlap = min(overlap, tile_size // 4)
        latent = vae.encode_tiled(padded, tile_x=tile_size, tile_y=tile_size, overlap=vae_overlap)
        warn_if_prior_lost(model, gamma, getattr(cls.hidden, "unique_id", None), "VCD Tiled Refine")
        samples = denoise_clip(tiled_model(model, tile_size, overlap, tile_batch), positive, negative, latent, settings)
        tile = tile_size // LATENT_SCALE
        frames = vae.decode_tiled(samples, tile_x=tile, tile_y=tile, overlap=vae_overlap // LATENT_SCALE)
        return io.NodeOutput(frames.reshape(-1, *frames.shape[-3:])[:, :height, :width], plan)
