"""Shared pieces of the real-size benchmarks (``bench_realsize.py`` on the CPU, ``gpu_realsize.py`` on a GPU).

The UNet is ComfyUI's own SD1.5 ``UNetModel`` built from ``devtools.ade_models.SD15_UNET`` (seeded with
``ade_models.fill_seeded``, the values of the cached test checkpoint), called as the denoiser of a small
Euler + CFG sampler. Tiled and Face VCD run through the same ``vcd_core.tiling`` / ``vcd_core.face``
functions the nodes use; identity training through ``vcd_core.identity`` and ``IdentityTextEncoder``.
No motion module: AnimateDiff's temporal layers are not part of these counts.
"""

from __future__ import annotations

import math
import os
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from torch.utils._pytree import tree_leaves

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from devtools import ade_models  # noqa: E402
from vcd_core import face, identity, tiling  # noqa: E402
from vcd_core.geometry import Box  # noqa: E402
from vcd_core.text_encoder import MARKER, IdentityTextEncoder  # noqa: E402

SCALE = 8  # SD1.5 VAE: pixels per latent cell
TOKENS = 4  # identity tokens (the node's default)
Denoiser = Callable[[torch.Tensor, float, float], torch.Tensor]
ALPHAS = identity.sd_alphas_cumprod().double().tolist()  # plain floats: schedules never touch (fake) tensors


def import_comfy() -> None:
    """ComfyUI from ``$COMFYUI_DIR`` with PyTorch attention (SDPA), as ComfyUI runs on NVIDIA. On the CPU its
    default is sub-quadratic chunks sized by the free RAM, which would make memory depend on the machine."""
    comfyui_dir = os.environ.get("COMFYUI_DIR")
    if not comfyui_dir or not (Path(comfyui_dir) / "main.py").is_file():
        raise SystemExit("COMFYUI_DIR must name a ComfyUI tree (source scripts/env.sh sets it)")
    sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.use_pytorch_cross_attention = True
    from devtools.inproc import import_comfy as load

    load(comfyui_dir)


def build_unet(device: str = "cpu", dtype: torch.dtype = torch.float32, width: int = 320, seeded: bool = True):
    """ComfyUI's SD1.5 UNet (``width`` base channels; 320 is SD1.5), frozen, seeded like the test checkpoint."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = dict(ade_models.SD15_UNET, model_channels=width)
    unet = UNetModel(**config, dtype=dtype, device=device, operations=comfy.ops.disable_weight_init)
    if seeded:
        ade_models.fill_seeded(unet, ade_models.SEED)
    return unet.eval().requires_grad_(False)


class Costs(TorchDispatchMode):
    """Exact live bytes of the tensor storages allocated inside the block, their peak, and the FLOPs.

    Every op's fresh outputs are counted until their storage is freed (a weak reference's callback); outputs
    that alias an input (views, in-place ops) are not new memory. FLOPs use torch's own formulas
    (``torch.utils.flop_counter``; its FlopCounterMode keeps gradient-checkpointed recomputations alive, this
    does not). Works on real and on fake tensors, so a real-size run can be counted without computing it.
    Kernel-internal scratch buffers are not tensors and are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.flops = 0
        self._refs: dict[int, weakref.ref] = {}

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:  # a composite op (linear, conv2d under inference mode): count its parts, as FlopCounterMode does
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        if any(r.alias_info is not None for r in func._schema.returns):
            return out
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in self._refs:
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self._refs[key] = weakref.ref(storage, lambda _, key=key, nbytes=nbytes: self._freed(key, nbytes))
        self.peak = max(self.peak, self.live)
        return out


# ---- sampling -------------------------------------------------------------------------------------------------

def schedule(steps: int, denoise: float) -> list[tuple[float, float]]:
    """``(sigma, timestep)`` pairs of ComfyUI's ``normal`` SD1.5 schedule stretched to ``steps / denoise`` and cut
    to its last ``steps`` (so denoise 0.2 with 20 steps runs 20 steps, as the nodes do), then ``(0, 0)``."""
    total = steps if denoise >= 1.0 else int(steps / denoise)
    last = len(ALPHAS) - 1
    timesteps = [last * (1 - i / (total - 1)) if total > 1 else float(last) for i in range(total)][-steps:]
    pairs = [(math.sqrt((1 - ALPHAS[round(t)]) / ALPHAS[round(t)]), t) for t in timesteps]
    return pairs + [(0.0, 0.0)]


def cfg_denoiser(unet, cond: torch.Tensor, uncond: torch.Tensor, scale: float = 8.0) -> Denoiser:
    """``f(x, sigma, t) -> x0`` of an epsilon UNet with classifier-free guidance, cond and uncond in ONE batch
    (as ComfyUI batches them)."""
    dtype = next(unet.parameters()).dtype

    def denoise(x: torch.Tensor, sigma: float, t: float) -> torch.Tensor:
        n = x.shape[0]
        x_in = (torch.cat([x, x]) / math.sqrt(sigma ** 2 + 1)).to(dtype)
        context = torch.cat([cond.expand(n, -1, -1), uncond.expand(n, -1, -1)]).to(dtype)
        timesteps = torch.full((2 * n,), t, device=x.device)
        eps_cond, eps_uncond = unet(x_in, timesteps=timesteps, context=context).float().chunk(2)
        return x - sigma * (eps_uncond + scale * (eps_cond - eps_uncond))

    return denoise


def euler(denoise: Denoiser, latent: torch.Tensor, noise: torch.Tensor, steps: int, strength: float,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Euler sampling from ``latent`` noised to ``strength``; with ``mask`` (1 = may change) the rest is held at
    the re-noised input after every step, like KSampler's noise mask."""
    pairs = schedule(steps, strength)
    x = latent + noise * pairs[0][0]
    for (sigma, t), (sigma_next, _) in zip(pairs, pairs[1:]):
        x = x + (x - denoise(x, sigma, t)) / sigma * (sigma_next - sigma)
        if mask is not None:
            x = x * mask + (latent + noise * sigma_next) * (1 - mask)
    return x


# ---- Tiled VCD ---------------------------------------------------------------------------------------------

def tiled_cases(denoise: Denoiser, latent: torch.Tensor, noise: torch.Tensor, tile: int, overlap: int,
                steps: int, strength: float) -> dict[str, Callable[[], torch.Tensor]]:
    """Ours (``vcd_core.tiling.tiled``: every step blends all tiles), untiled, the authors' route (each tile
    sampled through all its steps alone, then stitched with the same weights) and one tile alone (latent units)."""
    height, width = latent.shape[-2:]
    plan = tiling.tile_plan(height, width, tile, overlap)
    weights = tiling.blend_weights(plan, height, width, overlap)

    def tile_by_tile() -> torch.Tensor:
        both = torch.stack([latent, noise])  # cropped together: each tile keeps its own noise
        return tiling.tiled_apply(lambda crop, _count: euler(denoise, crop[0], crop[1], steps, strength), both, plan, weights)

    return {
        "one tile": lambda: euler(denoise, plan[0].crop(latent), plan[0].crop(noise), steps, strength),
        "untiled": lambda: euler(denoise, latent, noise, steps, strength),
        "ours: tiles blended every step": lambda: euler(tiling.tiled(denoise, tile, overlap), latent, noise, steps, strength),
        "authors: tile by tile (USDU)": tile_by_tile,
    }


# ---- Face VCD ----------------------------------------------------------------------------------------------

def face_masks(frames: int, size: int, face_px: int, drift: int) -> torch.Tensor:
    """``[frames, size, size]`` masks of a square face of ``face_px`` near the centre, moving ``drift`` px a frame."""
    masks = torch.zeros(frames, size, size)
    for i in range(frames):
        y0 = x0 = (size - face_px) // 2 + (i - frames // 2) * drift
        masks[i, y0:y0 + face_px, x0:x0 + face_px] = 1
    return masks


@dataclass
class Crops:
    """What Face VCD computes from the masks before sampling (in pixels and latents), prepared outside the counts."""

    windows: list[Box]  # latent units
    size: int  # latent side of the resized crop
    noise_mask: torch.Tensor  # [F, 1, size, size]
    paste_mask: torch.Tensor  # [F, h, w] latent


def prepare_crops(masks: torch.Tensor, windows: list[Box], guide_size: int, max_size: int, feather: int) -> Crops:
    """The node's geometry (``vcd_core.face``) for pixel ``windows``, scaled to latent units."""
    size = face.crop_size(windows[0].height, guide_size, max_size) // SCALE
    latent_masks = F.interpolate(masks[:, None], scale_factor=1 / SCALE, mode="area")[:, 0]
    latent_windows = [Box(w.y0 // SCALE, w.y1 // SCALE, w.x0 // SCALE, w.x1 // SCALE) for w in windows]
    inside, _ = face.cut_to_windows(latent_masks, latent_windows)
    return Crops(latent_windows, size, face.latent_noise_mask(masks, windows, size), face.feather_mask(inside, feather))


def refine_crops(denoise: Denoiser, latent: torch.Tensor, noise: torch.Tensor, crops: Crops, steps: int,
                 strength: float) -> torch.Tensor:
    """Crop each frame's window, resize to the crop size, sample the crop clip in ONE call, paste back feathered."""
    clip = torch.stack([w.crop(x) for x, w in zip(latent, crops.windows)])
    clip_noise = torch.stack([w.crop(n) for n, w in zip(noise, crops.windows)])
    side = clip.shape[-1]
    if side != crops.size:  # the node resizes the pixel crop before encoding it
        clip, clip_noise = (F.interpolate(c, size=(crops.size,) * 2, mode="bilinear") for c in (clip, clip_noise))
    out = euler(denoise, clip, clip_noise, steps, strength, mask=crops.noise_mask)
    if side != crops.size:
        out = F.interpolate(out, size=(side, side), mode="bilinear")
    return face.paste_clip(latent.movedim(1, -1), out.movedim(1, -1), crops.windows, crops.paste_mask).movedim(-1, 1)


def face_cases(denoise: Denoiser, latent: torch.Tensor, noise: torch.Tensor, masks: torch.Tensor, steps: int,
               strength: float, crop_factor: float = 3.0, guide_size: int = 512, max_size: int = 1024,
               feather: int = 1) -> dict[str, Callable[[], torch.Tensor]]:
    """Face VCD (one union window, all frames in one call), the whole frame re-denoised, and a per-frame
    detailer (each frame's own window, one sampling call per frame)."""
    window = face.union_window(masks, crop_factor)
    union = prepare_crops(masks, [window] * masks.shape[0], guide_size, max_size, feather)
    own = face.per_frame_windows(masks, crop_factor)
    single = [prepare_crops(masks[i:i + 1], own[i:i + 1], guide_size, max_size, feather) for i in range(len(own))]

    def per_frame() -> torch.Tensor:
        return torch.cat([refine_crops(denoise, latent[i:i + 1], noise[i:i + 1], c, steps, strength)
                          for i, c in enumerate(single)])

    return {
        "Face VCD: one crop clip": lambda: refine_crops(denoise, latent, noise, union, steps, strength),
        "whole frame re-denoised": lambda: euler(denoise, latent, noise, steps, strength),
        "per-frame detailer": per_frame,
    }


# ---- identity training -------------------------------------------------------------------------------------

def clip_l(layers: int = 12, width: int = 3072):
    """A transformers CLIP-L text model (``layers`` x ``width`` MLP; 12 x 3072 is SD1.5's) and ComfyUI's tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=width, num_hidden_layers=layers,
                                         num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                         hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407,
                                         pad_token_id=49407))
    tokenizer = CLIPTokenizer.from_pretrained(Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer")
    return model.eval().requires_grad_(False), tokenizer


def diffusers_models(width: int = 320, seeded_from=None):
    """diffusers' SD1.5 UNet (same config; the weights of ``seeded_from``, a ComfyUI UNet, when given) and VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    channels = tuple(width * m for m in ade_models.SD15_UNET["channel_mult"])
    unet = UNet2DConditionModel(sample_size=64, block_out_channels=channels, cross_attention_dim=768, attention_head_dim=8)
    if seeded_from is not None:
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        state = {f"model.diffusion_model.{k}": v for k, v in seeded_from.state_dict().items()}
        unet.load_state_dict(convert_ldm_unet_checkpoint(state, dict(unet.config)))
    vae_channels = tuple(ade_models.SD15_VAE["ch"] * m for m in ade_models.SD15_VAE["ch_mult"])
    vae = AutoencoderKL(block_out_channels=vae_channels, latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return unet.eval().requires_grad_(False), vae.eval().requires_grad_(False)


def checkpointed_blocks(unet) -> list[torch.nn.Module]:
    """The blocks Train Identity checkpoints, chosen by the node's own function (the pack loaded as ``vcd``)."""
    from types import SimpleNamespace

    from devtools.inproc import load_package

    nodes = load_package("vcd", REPO).nodes
    return nodes.identity.checkpointed_blocks(SimpleNamespace(model=SimpleNamespace(diffusion_model=unet)))


@dataclass
class Batch:
    """One training batch: latents (or pixels for a loop that encodes every step), masks, noise, timesteps."""

    latents: torch.Tensor
    masks: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    prompts: list[str]


def ours_loss(unet, text, vectors: torch.Tensor) -> tuple[Callable, Callable]:
    """(``encode(batch) -> context``, ``loss(context, batch)``): one ``train_identity`` step's work, split at the
    conditioning so the text side can run on real tensors while the UNet side is counted on fake ones."""
    alphas = identity.sd_alphas_cumprod()

    def encode(batch: Batch) -> torch.Tensor:
        return text(vectors, batch.prompts)

    def loss(context: torch.Tensor, batch: Batch) -> torch.Tensor:
        a = alphas.to(batch.latents.device)[batch.timesteps][:, None, None, None]
        x_t = a.sqrt() * batch.latents + (1 - a).sqrt() * batch.noise
        dtype = next(unet.parameters()).dtype
        eps = unet(x_t.to(dtype), timesteps=batch.timesteps, context=context.to(dtype)).float()
        return identity.masked_mse(eps, batch.noise, batch.masks)

    return encode, loss


def plain_ti(unet, vae, text_model, tokenizer) -> tuple[Callable, Callable, Callable]:
    """diffusers' examples/textual_inversion step: placeholder tokens added to the tokenizer and the whole
    embedding table trained by AdamW (other rows restored after each step), the VAE run on every batch.
    Returns (``encode(batch)``, ``loss(context, batch)`` with ``batch.latents`` holding pixels, ``update()``)."""
    import copy

    from diffusers import DDPMScheduler

    tokenizer = copy.deepcopy(tokenizer)
    placeholders = [f"<v{i}>" for i in range(TOKENS)]
    tokenizer.add_tokens(placeholders)
    text_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_model.get_input_embeddings().weight
    table.requires_grad_(True)
    original = table.detach().clone()
    keep = torch.ones(len(tokenizer), dtype=torch.bool, device=table.device)
    keep[tokenizer.convert_tokens_to_ids(placeholders)] = False
    optimizer = torch.optim.AdamW([table], lr=1e-3, weight_decay=1e-2)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

    def encode(batch: Batch) -> torch.Tensor:
        prompts = [p.replace(MARKER, " ".join(placeholders)) for p in batch.prompts]
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return text_model(input_ids=ids.to(table.device)).last_hidden_state

    def loss(context: torch.Tensor, batch: Batch) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        with torch.no_grad():
            x0 = vae.encode((batch.latents * 2 - 1).to(dtype)).latent_dist.sample() * 0.18215
        x_t = scheduler.add_noise(x0.float(), batch.noise, batch.timesteps).to(dtype)
        eps = unet(x_t, batch.timesteps, encoder_hidden_states=context.to(dtype)).sample.float()
        return F.mse_loss(eps, batch.noise)

    def update() -> None:
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            table[keep] = original[keep]

    return encode, loss, update
