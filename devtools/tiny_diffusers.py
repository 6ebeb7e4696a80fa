"""Tiny seeded models for the diffusers library's tests, in the files users have (never shipped).

- ``write_config_dir``: a ``--config-dir`` for the tests' tiny SD1.5-architecture models (the shipped
  tokenizer and scheduler, tiny UNet / VAE / text encoder / motion adapter configs). The UNet, VAE and text
  configs are the diffusers twins of ``tests/vcd_test_pack/tiny.py``'s ComfyUI models, so a checkpoint ComfyUI
  saves from those loads here.
- ``save_comfy_checkpoint``: core's CheckpointSave (``comfy.sd.save_checkpoint``): the original
  single-file layout (``model.diffusion_model.*``, ``cond_stage_model.transformer.*``, ``first_stage_model.*``).
- ``motion_module_state_dict``: a seeded diffusers ``MotionAdapter`` written back in AnimateDiff's original
  ``mm_sd_v15_v2`` key layout (``*.temporal_transformer.*``, ``attention_blocks``, ``norms``, ``ff_norm`` and a
  ``pos_encoder.pe`` per attention block), the inverse of diffusers' conversion.
- ``tiny_files``: all of them written once under a folder (conftest's ``tiny_files`` fixture).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from vcd_diffusers.loading import CONFIGS, COMPONENT_FILES

UNET = {
    "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 768, "attention_head_dim": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 32,
}
VAE = {
    "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 64,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
TEXT = {**json.loads((CONFIGS / COMPONENT_FILES["text_encoder"]).read_text()),
        "num_hidden_layers": 2, "intermediate_size": 256}
MOTION = {
    "_class_name": "MotionAdapter", "block_out_channels": [32, 64], "motion_layers_per_block": 1,
    "motion_mid_block_layers_per_block": 1, "motion_num_attention_heads": 2, "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32, "use_motion_mid_block": True,
}
# diffusers' MotionAdapter names -> AnimateDiff's (the reverse of convert_animatediff_checkpoint_to_diffusers)
TO_ORIGINAL = ((".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm"),
               (".attn1", ".attention_blocks.0"), (".attn2", ".attention_blocks.1"))


def write_config_dir(folder: Path) -> Path:
    """A config folder for the tiny models: tiny component configs, the shipped tokenizer and scheduler."""
    for name, config in (("unet", UNET), ("vae", VAE), ("text_encoder", TEXT), ("motion_adapter", MOTION)):
        path = folder / COMPONENT_FILES[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=1))
    for name in ("scheduler", "tokenizer"):
        shutil.copytree(CONFIGS / COMPONENT_FILES[name].split("/")[0], folder / COMPONENT_FILES[name].split("/")[0])
    return folder


def save_comfy_checkpoint(path: Path, model, clip, vae) -> Path:
    """Save ComfyUI MODEL / CLIP / VAE as core's CheckpointSave does (``comfy.sd.save_checkpoint``, whose state-dict
    calls differ between hosts): one original-layout ``.safetensors``. The models it loaded are let go again."""
    import comfy.model_management
    import comfy.sd

    comfy.sd.save_checkpoint(str(path), model, clip, vae)
    comfy.model_management.unload_all_models()
    return path


def fill_seeded(module: torch.nn.Module, seed: int, out_scale: float = 0.5) -> torch.nn.Module:
    """Seeded values for every parameter (devtools.ade_models' recipe); the motion module's output projections,
    which diffusers zero-initialises, get ``out_scale`` so temporal attention changes the result."""
    from devtools.ade_models import seeded_value

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
            value = seeded_value(name, tuple(param.shape), generator)
            param.copy_((value * out_scale if name.endswith("proj_out.weight") else value).to(param.dtype))
    return module


def seeded_motion_adapter(config: dict = MOTION, seed: int = 0):
    from diffusers import MotionAdapter

    return fill_seeded(MotionAdapter.from_config(config), seed).eval()


def motion_module_state_dict(adapter) -> dict[str, torch.Tensor]:
    """A ``MotionAdapter``'s weights in AnimateDiff's original file layout (``mm_sd_v15_v2``)."""
    state: dict[str, torch.Tensor] = {}
    for key, value in adapter.state_dict().items():
        module = re.match(r"((?:down_blocks\.\d+|up_blocks\.\d+|mid_block)\.motion_modules\.\d+)\.(.*)", key)
        rest = module.group(2)
        if rest.endswith("pos_embed.pe"):  # one table per transformer block -> one per attention block
            block = rest[: -len(".pos_embed.pe")]
            for a in range(2):
                state[f"{module.group(1)}.temporal_transformer.{block}.attention_blocks.{a}.pos_encoder.pe"] = value.clone()
            continue
        for new, old in TO_ORIGINAL:
            rest = rest.replace(new, old)
        state[f"{module.group(1)}.temporal_transformer.{rest}"] = value.detach().clone().contiguous()
    return state


def full_size_motion_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``motion_module_state_dict`` for a full-size adapter of ``config``, built on the meta
    device (no memory)."""
    from diffusers import MotionAdapter

    with torch.device("meta"):
        adapter = MotionAdapter.from_config(config)
    return {k: tuple(v.shape) for k, v in motion_module_state_dict(adapter).items()}


def sinusoid_matches(pe: torch.Tensor) -> bool:
    """Whether a ``[1, L, C]`` position table is AnimateDiff's sinusoid (devtools.ade_models)."""
    from devtools.ade_models import sinusoidal_encoding

    return torch.allclose(pe.float(), sinusoidal_encoding(pe.shape[1], pe.shape[2]), atol=1e-5)



@dataclass(frozen=True)
class TinyFiles:
    """The tiny model files as users have the real ones: a config folder, an original-layout checkpoint saved by
    ComfyUI (``.safetensors`` and the same tensors as a ``.ckpt``) and a motion module in AnimateDiff's layout."""

    config_dir: Path
    checkpoint: Path
    checkpoint_ckpt: Path
    motion_module: Path


def tiny_files(root: Path, tiny) -> TinyFiles:
    """The files under ``root``, written the first time (later calls find them); ``tiny`` is the test pack's
    tiny-model module (ComfyUI running in this process), whose seed-0 MODEL / CLIP / VAE the checkpoint holds."""
    import safetensors.torch

    files = TinyFiles(root / "configs", root / "tiny_sd15.safetensors", root / "tiny_sd15.ckpt",
                      root / "tiny_mm_sd_v15_v2.safetensors")
    done = root / "complete"
    if done.is_file():
        return files
    root.mkdir(parents=True, exist_ok=True)
    write_config_dir(files.config_dir)
    save_comfy_checkpoint(files.checkpoint, tiny.tiny_model(0), tiny.tiny_clip(0), tiny.tiny_vae(0))
    torch.save({"state_dict": safetensors.torch.load_file(str(files.checkpoint))}, files.checkpoint_ckpt)
    safetensors.torch.save_file(motion_module_state_dict(seeded_motion_adapter()), str(files.motion_module))
    done.touch()
    return files


def tiny_models(files: TinyFiles):
    """The tiny files loaded by the library (CPU, float32)."""
    from vcd_diffusers.loading import load_models

    return load_models(files.checkpoint, files.motion_module, files.config_dir)


def save_tiny_esrgan(path: Path, seed: int = 0, scale: int = 4) -> Path:
    """A seeded ESRGAN upscaler (8 filters, 1 RRDB) in the original ESRGAN key layout of 4x-UltraSharp.pth
    (``model.0.weight`` ...), written as a tensors-only ``torch.save``: what spandrel and ComfyUI's Load Upscale
    Model read."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    with torch.no_grad():
        last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.fill_(0.5)  # outputs around mid-grey, not clamped to black
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
