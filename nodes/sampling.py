"""Shared by the refine nodes: their sampler widgets and one-call sampling of a whole clip (with live previews).

Sampling goes through ``comfy.sample.sample_custom`` (so models load/offload as core does and
AnimateDiff-Evolved's wrappers run), with sigmas from the MODEL's own (possibly ADE-patched)
``model_sampling`` and noise from the 3D prior (gamma 0 = i.i.d.).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..vcd_core import noise_prior
from .noise import SEED_MAX, gamma_input


@dataclass(frozen=True)
class SamplingSettings:
    """What the refine nodes' sampler widgets say."""

    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float
    gamma: float

    def __post_init__(self) -> None:
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1] (got {self.denoise}): 0.2 touches details, 1.0 repaints.")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1 (got {self.steps}).")


def sampler_inputs(denoise: float, gamma: float, sampler: str = "euler", scheduler: str = "normal") -> list[io.Input]:
    """The widgets every refine node shares, with the paper's defaults for that stage."""
    import comfy.samplers

    return [
        io.Float.Input("denoise", default=denoise, min=0.01, max=1.0, step=0.01,
                       tooltip="How much of the noise schedule to redo: lower keeps more of the input."),
        io.Int.Input("steps", default=20, min=1, max=1000),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default=sampler),
        io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default=scheduler),
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
        gamma_input(gamma),
    ]


def partial_sigmas(model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """The last ``steps + 1`` sigmas of a schedule stretched to ``steps / denoise`` (BasicScheduler's way),
    from the MODEL's ``model_sampling`` object patch (ADE's beta schedule when ADE is applied)."""
    import comfy.samplers

    total = steps if denoise >= 1.0 else int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
    return sigmas[-(steps + 1):]


def denoise_clip(model, positive, negative, latent: torch.Tensor, settings: SamplingSettings,
                 noise_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Re-denoise every frame of a clip in ONE sampling call, so a motion module sees the whole clip."""
    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    sigmas = partial_sigmas(model, settings.scheduler, settings.steps, settings.denoise)
    noise = noise_prior.correlated_noise_like(latent, settings.gamma, settings.seed)
    # Progress bar and live previews as KSampler shows them (interrupts: core's ops check them per layer call).
    callback = latent_preview.prepare_callback(model, settings.steps)
    samples = comfy.sample.sample_custom(
        model, noise, settings.cfg, comfy.samplers.sampler_object(settings.sampler_name), sigmas,
        positive, negative, latent, noise_mask=noise_mask, callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=settings.seed,
    )
    comfy.model_management.soft_empty_cache()
    return samples
