"""Seeded random weights for tests with the real AnimateDiff-Evolved: a full-width SD1.5 checkpoint and
motion modules in the ``mm_sd_v15_v2`` and v1 layouts, built once and cached outside the clone.

The files live in ``$VCD_CACHE/models`` (default ``~/.cache/vcd-comfyui/models``), named with
``VERSION``; change it whenever what is built changes. Build them with ``ensure_models`` (or
``python -m devtools.ade_models [FOLDER]`` with COMFYUI_DIR set): the checkpoint needs ComfyUI's classes.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

VERSION = "1"
SEED = 0
CHECKPOINT = f"vcd_random_sd15.v{VERSION}.safetensors"
MOTION_V2 = f"vcd_random_mm_sd_v15_v2.v{VERSION}.safetensors"
MOTION_V1 = f"vcd_random_mm_sd_v15_v1.v{VERSION}.safetensors"
REPO = Path(__file__).resolve().parents[1]

# SD1.5's UNet (what comfy.model_detection finds in a real SD1.5 checkpoint).
SD15_UNET = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "context_dim": 768, "num_heads": 8,
    "num_head_channels": -1, "use_spatial_transformer": True, "legacy": False, "use_linear_in_transformer": False,
    "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False, "dims": 2,
    "use_checkpoint": False,
}
SD15_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}

# AnimateDiff motion modules for SD1.5: one temporal transformer after each UNet block's attention
# (2 per down block, 3 per up block, 1 in the middle for v2), 8 heads, 2 temporal self-attentions,
# GEGLU feed-forward (4x), sinusoidal position encoding of PE_LENGTH frames.
SD15_CHANNELS = (320, 640, 1280, 1280)
PE_LENGTH = {2: 32, 1: 24}
# Scale of the temporal output projections: large enough that the motion module visibly changes
# the result, small enough that 21 residual temporal layers keep the UNet's activations finite.
PROJ_OUT_SCALE = 0.5


def cache_dir() -> Path:
    """Where the built files live (outside the clone)."""
    root = os.environ.get("VCD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcd-comfyui"
    return Path(root) / "models"


def seeded_value(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A float32 value for one weight: zero biases, unit norm weights, small embeddings, fan-in scaled normals."""
    if name.endswith("bias"):
        return torch.zeros(shape)
    if len(shape) == 1:
        return torch.ones(shape)
    if "embedding" in name:
        return torch.randn(shape, generator=generator) * 0.02
    return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))


def sinusoidal_encoding(length: int, width: int) -> torch.Tensor:
    """``[1, length, width]``: sin on even channels, cos on odd ones (AnimateDiff's positional encoding)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    encoding = torch.zeros(1, length, width)
    encoding[0, :, 0::2] = torch.sin(position * frequency)
    encoding[0, :, 1::2] = torch.cos(position * frequency)
    return encoding


def motion_module_shapes(version: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of an SD1.5 motion module file (version 2: ``mm_sd_v15_v2``; 1: v1)."""
    modules = [(f"down_blocks.{b}.motion_modules.{m}", c) for b, c in enumerate(SD15_CHANNELS) for m in range(2)]
    modules += [(f"up_blocks.{b}.motion_modules.{m}", c) for b, c in enumerate(reversed(SD15_CHANNELS)) for m in range(3)]
    if version == 2:
        modules.append(("mid_block.motion_modules.0", SD15_CHANNELS[-1]))
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, c in modules:
        t = f"{prefix}.temporal_transformer"
        shapes.update({f"{t}.norm.weight": (c,), f"{t}.norm.bias": (c,), f"{t}.proj_in.weight": (c, c), f"{t}.proj_in.bias": (c,)})
        block = f"{t}.transformer_blocks.0"
        for a in range(2):
            attention = f"{block}.attention_blocks.{a}"
            shapes.update({f"{attention}.to_{p}.weight": (c, c) for p in "qkv"})
            shapes.update({f"{attention}.to_out.0.weight": (c, c), f"{attention}.to_out.0.bias": (c,),
                           f"{attention}.pos_encoder.pe": (1, PE_LENGTH[version], c),
                           f"{block}.norms.{a}.weight": (c,), f"{block}.norms.{a}.bias": (c,)})
        shapes.update({f"{block}.ff.net.0.proj.weight": (8 * c, c), f"{block}.ff.net.0.proj.bias": (8 * c,),
                       f"{block}.ff.net.2.weight": (c, 4 * c), f"{block}.ff.net.2.bias": (c,),
                       f"{block}.ff_norm.weight": (c,), f"{block}.ff_norm.bias": (c,),
                       f"{t}.proj_out.weight": (c, c), f"{t}.proj_out.bias": (c,)})
    return shapes


def motion_module_state_dict(version: int, seed: int = SEED) -> dict[str, torch.Tensor]:
    """A seeded random motion module (fp16) in the layout of AnimateDiff's SD1.5 files."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in sorted(motion_module_shapes(version).items()):
        if name.endswith("pos_encoder.pe"):
            value = sinusoidal_encoding(shape[1], shape[2])
        else:
            value = seeded_value(name, shape, generator)
            if name.endswith("proj_out.weight"):
                value *= PROJ_OUT_SCALE
        tensors[name] = value.half()
    return tensors


def fill_seeded(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter of a module a seeded value (see ``seeded_value``), in the parameter's dtype."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
            param.copy_(seeded_value(name, tuple(param.shape), generator).to(param.dtype))


def checkpoint_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """A seeded random SD1.5 checkpoint (fp16) in the original LDM layout, built with ComfyUI's own classes:
    ``model.diffusion_model.*``, ``cond_stage_model.transformer.*``, ``first_stage_model.*``."""
    import comfy.sd1_clip
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL

    config = comfy.supported_models.SD15(dict(SD15_UNET))
    config.set_inference_dtype(torch.float16, None)
    unet = config.get_model({}).diffusion_model
    fill_seeded(unet, seed)
    state = config.process_unet_state_dict_for_saving(unet.state_dict())
    del unet
    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float16)
    fill_seeded(clip, seed + 1)
    state.update(config.process_clip_state_dict_for_saving(clip.state_dict()))
    vae = AutoencoderKL(ddconfig=dict(SD15_VAE), embed_dim=4)
    fill_seeded(vae, seed + 2)
    state.update(config.process_vae_state_dict_for_saving(vae.state_dict()))
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file under a temporary name beside ``path``, then rename it into place."""
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        safetensors.torch.save_file(tensors, tmp, metadata={"vcd_test_weights": f"seeded random, v{VERSION}"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_paths(root: Path | None = None) -> dict[str, Path]:
    """The cached files by role: ``checkpoint``, ``motion_v2``, ``motion_v1``."""
    root = root or cache_dir()
    return {"checkpoint": root / CHECKPOINT, "motion_v2": root / MOTION_V2, "motion_v1": root / MOTION_V1}


def build_missing(root: Path | None = None) -> dict[str, Path]:
    """Build (in this process; ComfyUI importable) each file that is not cached yet."""
    paths = model_paths(root)
    for version, key in ((2, "motion_v2"), (1, "motion_v1")):
        if not paths[key].is_file():
            save_atomic(motion_module_state_dict(version), paths[key])
    if not paths["checkpoint"].is_file():
        save_atomic(checkpoint_state_dict(), paths["checkpoint"])
    return paths


def ensure_models(comfyui_dir: str | os.PathLike, python: str = sys.executable, root: Path | None = None) -> dict[str, Path]:
    """The cached files; missing ones are built in a child process (its ~3 GB are freed when it exits)."""
    paths = model_paths(root)
    if not all(p.is_file() for p in paths.values()):
        env = dict(os.environ, COMFYUI_DIR=str(comfyui_dir))
        subprocess.run([python, "-m", "devtools.ade_models", str(paths["checkpoint"].parent)], cwd=REPO, env=env, check=True)
    return paths


def link_models(models_dir: Path, paths: dict[str, Path]) -> None:
    """Symlink the files into a ComfyUI models folder: the checkpoint into ``checkpoints``, the motion
    modules into ``animatediff_models``, under their own names."""
    for key, sub in (("checkpoint", "checkpoints"), ("motion_v2", "animatediff_models"), ("motion_v1", "animatediff_models")):
        link = models_dir / sub / paths[key].name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(paths[key])


def main() -> None:
    from devtools.inproc import import_comfy

    import_comfy(os.environ["COMFYUI_DIR"])
    for path in build_missing(Path(sys.argv[1]) if len(sys.argv) > 1 else None).values():
        print(path)


if __name__ == "__main__":
    main()
