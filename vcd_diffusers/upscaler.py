"""Tiled VCD's upscale by a model: an ESRGAN-type upscaler (4x-UltraSharp, RealESRGAN, SwinIR ...) read with
spandrel from a tensors-only file, as ComfyUI's Load Upscale Model reads it, run frame by frame, then resized to
the scale asked for (a 4x model for a 2x video, as the shipped workflows do)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .loading import read_state_dict

__all__ = ["load_upscale_model", "upscale_with_model"]

WHAT = "upscale model"


def load_upscale_model(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """A spandrel ``ImageModelDescriptor`` (``.scale``, callable on ``[N, C, H, W]``) for an upscaler file; the
    weights may sit under ``params_ema`` / ``params`` / ``model`` as in RealESRGAN's and SwinIR's releases."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    path = Path(path)
    state = read_state_dict(path, WHAT, as_saved=True)  # spandrel unwraps the release layouts itself
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in state:  # SwinIR saved from DataParallel
        state = {key.removeprefix("module."): value for key, value in state.items()}
    try:
        model = ModelLoader().load_from_state_dict(state)
    except UnsupportedModelError:
        raise ValueError(f"{WHAT}: {path.name} is no upscaler architecture spandrel knows; give an ESRGAN-type model "
                         "such as 4x-UltraSharp.pth.") from None
    except Exception as error:  # a known architecture whose tensors do not fit it: a damaged or edited file
        reason = (str(error).splitlines() or [""])[0][:200]  # torch lists every mismatched tensor after it
        raise ValueError(f"{WHAT}: {path.name} looks like an upscaler but does not load ({type(error).__name__}: "
                         f"{reason}); copy it again.") from None
    if not isinstance(model, ImageModelDescriptor):
        raise ValueError(f"{WHAT}: {path.name} is an inpainting model, not a single-image upscaler.")
    return model.to(device).eval()


@torch.no_grad()
def upscale_with_model(model, frames: torch.Tensor) -> torch.Tensor:
    """``[F, H, W, C]`` frames in [0, 1] upscaled by the model's own factor, one frame per call, clamped to [0, 1]."""
    parameter = next(model.model.parameters())
    out = []
    for frame in frames:
        x = frame[..., :3].movedim(-1, 0)[None].to(parameter.device, parameter.dtype)
        out.append(model(x).float().clamp(0, 1)[0].movedim(0, -1).cpu())
    return torch.stack(out)
