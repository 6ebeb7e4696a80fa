"""Tiny SD1.5-architecture MODEL / CLIP / VAE in ComfyUI's own classes, with seeded weights.

Same classes, layouts and code paths as a real SD1.5 checkpoint (SD15 model config, CLIP-L
tokenizer and 768-wide text model, AutoencoderKL with 8x downscale), only narrow and shallow,
so tests and the demo run on a CPU in seconds. Imported inside a running ComfyUI only.
"""

from __future__ import annotations

import functools
import math

import torch

UNET_CONFIG = {
    "image_size": 32,
    "model_channels": 32,
    "channel_mult": [1, 2],
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "dims": 2,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
}
# A 768-wide CLIP-L text model (the width embeddings need), with two layers instead of twelve.
CLIP_TEXT_CONFIG = {"num_hidden_layers": 2, "intermediate_size": 256}
VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
    "ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}


def fill_seeded(module: torch.nn.Module, seed: int) -> None:
    """Give every parameter a seeded value: fan-in scaled normals, unit norms, zero biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
            if name.endswith("bias"):
                value = torch.zeros(param.shape)
            elif param.ndim == 1:
                value = torch.ones(param.shape)
            elif "embedding" in name:
                value = torch.randn(param.shape, generator=generator) * 0.02
            else:
                fan_in = math.prod(param.shape[1:])
                value = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
            param.copy_(value.to(param.dtype))


@functools.lru_cache(maxsize=4)
def tiny_model(seed: int = 0):
    """A ModelPatcher around an SD15 BaseModel with a tiny UNet."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(UNET_CONFIG)
    config.unet_config.update(num_heads=2, num_head_channels=-1)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    fill_seeded(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


@functools.lru_cache(maxsize=4)
def tiny_clip(seed: int = 0, embedding_directory: tuple[str, ...] = ()):
    """An SD1.5 CLIP (real CLIP-L tokenizer, 768-wide text model) with seeded weights."""
    import comfy.sd
    import comfy.supported_models

    target = comfy.supported_models.SD15(UNET_CONFIG).clip_target()
    clip = comfy.sd.CLIP(
        target,
        embedding_directory=list(embedding_directory) or None,
        model_options={"clip_l_model_config": dict(CLIP_TEXT_CONFIG), "dtype": torch.float32},
    )
    fill_seeded(clip.cond_stage_model, seed)
    return clip


@functools.lru_cache(maxsize=4)
def tiny_vae(seed: int = 0):
    """An AutoencoderKL VAE (8x downscale, 4 latent channels) with seeded weights."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    config = {"params": {"ddconfig": dict(VAE_DDCONFIG), "embed_dim": 4}}
    source = AutoencoderKL(**config["params"])
    fill_seeded(source, seed)
    return comfy.sd.VAE(sd=source.state_dict(), config=config, dtype=torch.float32)
