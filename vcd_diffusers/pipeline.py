"""T2V VCD on diffusers: SD1.5 + AnimateDiff sampled from the 3D Gaussian noise prior, and the one-call clip
sampler that Face VCD and Tiled VCD re-denoise through.

Latents are frames-first ``[F, C, h, w]`` (as in ComfyUI and ``vcd_core``); each model call hands the UNet with
its motion module whole clips ``[n, C, F, h, w]``, so temporal attention sees every frame. Noise comes from
``vcd_core.noise_prior`` (the seed's chain, drawn on the CPU: the nodes' noise for the same seed and shape), the
schedule from a diffusers scheduler over AnimateDiff's linear betas (sigma_max about 25, as AnimateDiff-Evolved
samples). Partial denoise (``denoise`` < 1) runs the last ``steps`` of a ``steps / denoise`` schedule, as
ComfyUI's refine nodes do; a latent noise mask keeps the rest of the clip on the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vcd_core import noise_prior
from vcd_core.embedding_io import Embedding
from vcd_core.text_encoder import MARKER

from .loading import Models

__all__ = ["SAMPLERS", "Sampling", "T2V", "Progress", "Denoiser", "initial_noise", "make_scheduler", "conditioning",
           "encode_frames", "decode_latents", "video_denoiser", "sample_clip", "generate", "check_frames",
           "check_clip_length"]

SAMPLERS = ("euler", "dpmpp_2m", "ddim")
VAE_CHUNK = 4  # frames per VAE call: memory stays that of a few frames, whatever the clip length
Progress = Callable[[int, int], None]  # (steps done, steps in all)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [F*n, C, h, w], t) -> eps, same shape


@dataclass(frozen=True)
class Sampling:
    """One sampling call: steps, CFG, the diffusers scheduler (``SAMPLERS``, ``karras`` sigmas or not), how much
    of the schedule to redo (``denoise``), the prior's ``gamma`` (0: i.i.d. noise) and the ``seed``."""

    steps: int = 20
    cfg: float = 8.0
    sampler: str = "euler"
    karras: bool = False
    denoise: float = 1.0
    gamma: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1 (got {self.steps}).")
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1] (got {self.denoise}): 0.2 touches details, 1.0 repaints.")
        if self.cfg < 0:
            raise ValueError(f"cfg must be at least 0 (got {self.cfg}).")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r}).")
        if self.karras and self.sampler == "ddim":
            raise ValueError("karras sigmas work with euler and dpmpp_2m, not ddim.")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1] (got {self.gamma}): 0 is i.i.d. noise, 1 identical frames.")


T2V = Sampling(steps=20, cfg=8.0, sampler="dpmpp_2m", karras=True, gamma=0.1)  # the authors' T2V graph


def initial_noise(frames: int, channels: int, height: int, width: int, gamma: float, seed: int) -> torch.Tensor:
    """The prior's unit-variance noise ``[F, C, h, w]`` for ``seed``: what VCD 3D Gaussian Noise gives a latent
    of this shape (drawn on the CPU in float32)."""
    return noise_prior.correlated_noise_like(torch.zeros((frames, channels, height, width)), gamma, seed)


def make_scheduler(settings: Sampling, config: dict):
    """A fresh diffusers scheduler for one sampling call, on the betas of ``config``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    base = {k: v for k, v in config.items() if not k.startswith("_")}
    if settings.sampler == "euler":
        return EulerDiscreteScheduler.from_config(base, use_karras_sigmas=settings.karras)
    if settings.sampler == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                       use_karras_sigmas=settings.karras)
    return DDIMScheduler.from_config(base)


def check_frames(frames: torch.Tensor, what: str = "frames") -> torch.Tensor:
    """``[F, H, W, C]`` float frames in [0, 1]: grey becomes RGB, alpha is dropped."""
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{what}: expected frames [F, H, W, 1/3/4] (got shape {tuple(frames.shape)}).")
    frames = frames.float()
    return frames.expand(-1, -1, -1, 3) if frames.shape[-1] == 1 else frames[..., :3]


def check_clip_length(models: Models, frames: int) -> None:
    """Every frame of a clip goes through the motion module in one call: at most ``models.max_frames`` of them."""
    if not 1 <= frames <= models.max_frames:
        raise ValueError(f"frames must be 1 to {models.max_frames} (the motion module's position encoding covers "
                         f"{models.max_frames}; got {frames}); split a longer clip, or refine it in ComfyUI with "
                         "AnimateDiff-Evolved's context windows.")


def conditioning(models: Models, prompt: str, negative: str = "",
                 identity: Embedding | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` text conditioning ``[1, 77, D]``; the identity's vectors take the place of
    ``{identity}`` in ``prompt`` (what core CLIPTextEncode gives for ``embedding:NAME`` there)."""
    if identity is not None and MARKER not in prompt:
        raise ValueError(f"prompt: write {MARKER} where the person goes, e.g. 'a photo of {MARKER} woman "
                         "in a garden' (an identity was given).")
    if identity is None and MARKER in prompt:
        raise ValueError(f"prompt: it holds {MARKER} but no identity is given; pass --identity FILE or "
                         f"take {MARKER} out.")
    if MARKER in negative:
        raise ValueError(f"negative prompt: {MARKER} belongs in the prompt only.")
    width = models.text.width
    vectors = identity.vectors if identity is not None else torch.zeros(0, width)
    with torch.no_grad():
        cond = models.text(vectors.to(models.device, models.dtype), [prompt, negative])
    return cond[:1], cond[1:]


def _scale(models: Models) -> float:
    return float(models.vae.config.scaling_factor)


def encode_frames(models: Models, frames: torch.Tensor) -> torch.Tensor:
    """VAE latents ``[F, C, h, w]`` of ``[F, H, W, 3]`` frames (posterior mean, scaled for the UNet)."""
    latents = []
    with torch.no_grad():
        for chunk in frames.split(VAE_CHUNK):
            pixels = chunk.movedim(-1, 1).to(models.device, models.dtype) * 2 - 1
            latents.append(models.vae.encode(pixels).latent_dist.mean * _scale(models))
    return torch.cat(latents)


def decode_latents(models: Models, latents: torch.Tensor) -> torch.Tensor:
    """``[F, H, W, 3]`` float32 frames in [0, 1] on the CPU from latents ``[F, C, h, w]``."""
    frames = []
    with torch.no_grad():
        for chunk in latents.split(VAE_CHUNK):
            pixels = models.vae.decode(chunk.to(models.device, models.dtype) / _scale(models)).sample
            frames.append(((pixels.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu())
    return torch.cat(frames)


def video_denoiser(models: Models, positive: torch.Tensor, negative: torch.Tensor, cfg: float,
                   frames: int) -> Denoiser:
    """``eps(x, t)`` of the motion UNet with CFG, for ``x`` ``[F * n, C, h, w]``: ``n`` clips of ``frames`` frames
    (n > 1 when tiles are stacked), each handed to the UNet whole, ``[n, C, F, h, w]``."""
    unet = models.video_unet()
    guided = cfg != 1.0

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        clips = x.shape[0] // frames
        sample = x.reshape(clips, frames, *x.shape[1:]).movedim(1, 2)
        context = positive.expand(clips, -1, -1)
        if guided:
            sample = torch.cat([sample, sample])
            context = torch.cat([negative.expand(clips, -1, -1), context])
        out = unet(sample, t, encoder_hidden_states=context.repeat_interleave(frames, dim=0)).sample
        if guided:
            uncond, cond = out.chunk(2)
            out = uncond + cfg * (cond - uncond)
        return out.movedim(2, 1).reshape(x.shape)

    return eps


def sample_clip(models: Models, shape: tuple[int, int, int, int], positive: torch.Tensor, negative: torch.Tensor,
                settings: Sampling, latents: torch.Tensor | None = None, noise_mask: torch.Tensor | None = None,
                wrap: Callable[[Denoiser], Denoiser] | None = None, callback: Progress | None = None) -> torch.Tensor:
    """Denoise a whole clip of latents ``shape`` ``[F, C, h, w]`` in ONE sampling call.

    ``latents`` (the encoded input) is noised to where the partial schedule starts; without them (T2V) sampling
    starts from the prior's noise alone. ``noise_mask`` ``[F, 1, h, w]`` (1: may change) keeps the rest on the
    input, re-noised to each step's level. ``wrap`` wraps the denoiser (Tiled VCD runs it per tile).
    """
    if latents is None and settings.denoise < 1.0:
        raise ValueError("denoise below 1 re-denoises an input: give the latents to start from.")
    frames = shape[0]
    noise = initial_noise(*shape, settings.gamma, settings.seed).to(models.device, models.dtype)
    scheduler = make_scheduler(settings, models.scheduler_config)
    total = settings.steps if settings.denoise >= 1.0 else int(settings.steps / settings.denoise)
    scheduler.set_timesteps(total, device=models.device)
    begin = (total - settings.steps) * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    if latents is not None:
        latents = latents.to(models.device, models.dtype)
    x = noise * scheduler.init_noise_sigma if settings.denoise >= 1.0 else scheduler.add_noise(latents, noise, timesteps[:1])
    denoise = video_denoiser(models, positive, negative, settings.cfg, frames)
    if wrap is not None:
        denoise = wrap(denoise)
    if noise_mask is not None:
        noise_mask = noise_mask.to(models.device, models.dtype)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            x = scheduler.step(denoise(scheduler.scale_model_input(x, t), t), t, x).prev_sample
            if noise_mask is not None:
                kept = latents if i + 1 == len(timesteps) else scheduler.add_noise(latents, noise, timesteps[i + 1:i + 2])
                x = noise_mask * x + (1 - noise_mask) * kept
            if callback is not None:
                callback(i + 1, len(timesteps))
    return x


def generate(models: Models, prompt: str, *, negative: str = "", identity: Embedding | None = None,
             frames: int = 16, height: int = 512, width: int = 512, settings: Sampling = T2V,
             callback: Progress | None = None) -> torch.Tensor:
    """T2V VCD: ``[F, H, W, 3]`` frames in [0, 1] sampled from the 3D Gaussian prior (``settings.gamma``)."""
    scale = 2 ** (len(models.vae.config.block_out_channels) - 1)
    if height % scale or width % scale or height < scale or width < scale:
        raise ValueError(f"height and width must be positive multiples of {scale} (got {width}x{height}).")
    check_clip_length(models, frames)
    if settings.denoise < 1.0:
        raise ValueError("generate samples from noise: denoise must be 1.")
    positive, negative_cond = conditioning(models, prompt, negative, identity)
    shape = (frames, int(models.unet.config.in_channels), height // scale, width // scale)
    latents = sample_clip(models, shape, positive, negative_cond, settings, callback=callback)
    return decode_latents(models, latents)
