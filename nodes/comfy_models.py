"""ComfyUI's MODEL, CLIP and VAE seen by identity training: a differentiable text path, an epsilon denoiser
borrowed without changing the MODEL, cached view latents, and a hash of the weights training sees."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ..vcd_core import embedding_io
from ..vcd_core.text_encoder import IdentityTextEncoder, clip_text_model_from_state_dict

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, context) -> eps
CHECKPOINTED_BLOCKS = ("ResBlock", "SpatialTransformer")  # the UNet's memory-heavy blocks
UNET_KEY = "diffusion_model.input_blocks.0.0.weight"  # the UNet's input conv, hashed to tell bases apart
TOKEN_TABLE_KEY = "clip_l.transformer.text_model.embeddings.token_embedding.weight"


def sd15_clip_l(clip):
    """The CLIP-L text model inside an SD1.5 CLIP, or a clear error for other CLIPs."""
    stage = getattr(clip, "cond_stage_model", None)
    clip_l = getattr(stage, "clip_l", None)
    if clip_l is None or hasattr(stage, "clip_g") or not hasattr(clip_l, "transformer"):
        raise ValueError("clip: identity embeddings are trained for SD1.5; connect the CLIP of an SD1.5 checkpoint.")
    return clip_l


def clip_width(clip) -> int:
    """The width of the CLIP's token vectors (768 for SD1.5)."""
    return int(sd15_clip_l(clip).transformer.get_input_embeddings().weight.shape[1])


def text_encoder_from_clip(clip, device: torch.device) -> IdentityTextEncoder:
    """The CLIP's weights (LoRAs applied) in a differentiable transformers model, with its clip skip."""
    import comfy.model_management

    clip_l = sd15_clip_l(clip)
    comfy.model_management.load_model_gpu(clip.patcher)
    heads = clip_l.transformer.text_model.encoder.layers[0].self_attn.heads
    model = clip_text_model_from_state_dict(clip_l.transformer.state_dict(), num_heads=heads)
    layer_idx = clip_l.layer_idx if clip_l.layer == "hidden" else None
    if clip.layer_idx is not None:  # CLIPSetLastLayer, applied the way core applies it at encode time
        layer_idx = clip.layer_idx if abs(clip.layer_idx) <= clip_l.num_layers else None
    return IdentityTextEncoder(model, clip.tokenizer.clip_l.tokenizer, layer_idx).to(device)


@contextlib.contextmanager
def autograd_ready(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block, tensors made under inference mode are swapped for equal normal ones (autograd can save
    those for the backward pass) and no parameter wants gradients; afterwards ``module`` holds its own tensors
    again, with their own ``requires_grad``: the MODEL other nodes share is left exactly as it was."""
    wanted = [(param, param.requires_grad) for param in module.parameters()]
    copies: dict[int, torch.Tensor] = {}  # one copy per tensor, so weights shared by two modules stay shared
    swapped = []
    for sub in module.modules():
        for table, is_param in ((sub._parameters, True), (sub._buffers, False)):
            for name, tensor in list(table.items()):
                if tensor is not None and tensor.is_inference():
                    if id(tensor) not in copies:
                        copies[id(tensor)] = torch.nn.Parameter(tensor.clone(), False) if is_param else tensor.clone()
                    swapped.append((table, name, tensor))
                    table[name] = copies[id(tensor)]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for table, name, tensor in swapped:
            table[name] = tensor
        for param, flag in wanted:
            if param.requires_grad != flag:  # inference tensors were swapped out, never changed
                param.requires_grad_(flag)


def checkpointed_blocks(model) -> list[torch.nn.Module]:
    """The UNet's res and transformer blocks, whose activations gradient checkpointing recomputes."""
    return [m for m in model.model.diffusion_model.modules() if type(m).__name__ in CHECKPOINTED_BLOCKS]


def check_epsilon_model(model) -> None:
    """Refuse a MODEL that does not predict epsilon (v-prediction, flow...) or takes more than the latent (an
    inpainting checkpoint's mask and masked image), before any work is done."""
    import comfy.model_base

    model_type = getattr(model.model, "model_type", None)
    if model_type != comfy.model_base.ModelType.EPS:
        raise ValueError("model: identity training needs an SD1.5 epsilon-prediction checkpoint "
                         f"(this MODEL predicts {model_type or 'something else'}).")
    if getattr(model.model, "concat_keys", ()):
        raise ValueError("model: this is an inpainting checkpoint (its UNet also takes a mask and a masked image); "
                         "train the identity on the regular SD1.5 checkpoint you generate with.")


@contextlib.contextmanager
def denoiser(model) -> Iterator[tuple[Denoise, torch.Tensor]]:
    """``(denoise(x_t, t, context) -> eps, alphas_cumprod)`` of an SD1.5 epsilon MODEL (see ``check_epsilon_model``),
    loaded like core's trainer loads it, for the block; the MODEL's own tensors are back in place afterwards."""
    import comfy.model_management

    base = model.model
    comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)
    unet = base.diffusion_model
    dtype = base.get_dtype()

    def denoise(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return unet(x_t.to(dtype), timesteps=t, context=context.to(dtype)).float()

    sigmas = base.model_sampling.sigmas.float().cpu()
    with autograd_ready(unet):
        yield denoise, 1.0 / (1.0 + sigmas ** 2)


def encode_views(vae, pixels: torch.Tensor, model) -> torch.Tensor:
    """VAE latents of the views ``[V, 3, S, S]``, scaled the way the UNet sees them (encoded once, cached)."""
    latents = vae.encode(pixels.movedim(1, -1))
    return model.model.process_latent_in(latents).float()


def _patch_parts(patches: dict, tensors: list[torch.Tensor], words: list[str]) -> None:
    """Collect the tensors and the plain values (strengths, kinds) of a patcher's weight patches, in key order."""
    def walk(value) -> None:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif hasattr(value, "weights"):  # comfy.weight_adapter's LoRA, LoHa... adapters
            words.append(type(value).__name__)
            walk(value.weights)
        else:
            words.append(repr(value) if isinstance(value, (int, float, str, type(None))) else type(value).__name__)

    for key in sorted(patches):
        words.append(key)
        walk(patches[key])


def base_fingerprint(model, clip) -> str:
    """A short hash of the weights training sees, cheap and stable across restarts: the UNet's input conv and the
    CLIP's token table as the checkpoint gave them, plus every weight patch (LoRAs...) on the MODEL or the CLIP."""
    [[(unet_weight, _), *_]] = model.get_key_patches(UNET_KEY).values()
    [[(token_table, _), *_]] = clip.patcher.get_key_patches(TOKEN_TABLE_KEY).values()
    tensors, words = [unet_weight, token_table], []
    for patcher in (model, clip.patcher):
        _patch_parts(patcher.patches, tensors, words)
    return embedding_io.fingerprint(*tensors, *([" ".join(words)] if words else []))
