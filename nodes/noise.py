"""T2V VCD: the 3D Gaussian noise prior as a NOISE (for SamplerCustomAdvanced) and as a LATENT."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .inputs import checked
from ..vcd_core import noise_prior
from .ade import warn_if_prior_lost

GAMMA_TOOLTIP = (
    "Correlation of the initial noise between neighbouring frames (frames i and j share gamma^|i-j|). "
    "0 = independent frames (more motion, more flicker); higher = steadier video with smaller motion; "
    "1 = the same noise in every frame. The paper uses 0.1; 0.2 is already almost still."
)
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def gamma_input(default: float = 0.1) -> io.Float.Input:
    """The prior's gamma widget, shared by every node that draws from the prior."""
    return io.Float.Input("gamma", default=default, min=0.0, max=1.0, step=0.01, tooltip=GAMMA_TOOLTIP)


class VCDNoise:
    """A ComfyUI NOISE: correlated along frames, drawn on the CPU from ``seed``.

    ``seed`` is the int AnimateDiff-Evolved regenerates noise from when its sample settings
    replace the sampler's noise; with default settings it passes this noise through unchanged.
    """

    def __init__(self, seed: int, gamma: float):
        self.seed = int(seed)
        self.gamma = float(gamma)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if getattr(samples, "is_nested", False):
            raise ValueError("VCD 3D Gaussian Noise: multi-part (nested) latents are not supported; use one video latent.")
        return noise_prior.correlated_noise_like(samples, self.gamma, self.seed, input_latent.get("batch_index"))


class VCD3DGaussianNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCD3DGaussianNoise",
            display_name="VCD 3D Gaussian Noise",
            category="VCD/sampling",
            description=(
                "Initial noise correlated across video frames (Magic-Me's training-free 3D Gaussian prior) "
                "for SamplerCustomAdvanced. Frames are the batch of an AnimateDiff latent or the time axis "
                "of a 5-D video latent. Keep AnimateDiff-Evolved's sample settings at their defaults, or "
                "it replaces this noise with its own (wire the sampled MODEL in to be warned)."
            ),
            inputs=[
                io.Int.Input("noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
                gamma_input(),
                io.Model.Input("model", optional=True,
                               tooltip="The MODEL you sample with (after AnimateDiff-Evolved), only checked: a warning "
                                       "when its Sample Settings would replace this noise."),
            ],
            outputs=[io.Noise.Output()],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked
    def execute(cls, noise_seed: int, gamma: float, model=None) -> io.NodeOutput:
        if model is not None:
            warn_if_prior_lost(model, gamma, getattr(cls.hidden, "unique_id", None), "VCD 3D Gaussian Noise")
        return io.NodeOutput(VCDNoise(noise_seed, gamma))


MODES = ["ar1", "authors"]


class VCD3DGaussianNoiseLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCD3DGaussianNoiseLatent",
            display_name="VCD 3D Gaussian Noise Latent",
            category="VCD/sampling",
            description=(
                "A LATENT of unit-variance frame-correlated noise (SD1.5, 4 channels), for graphs built like "
                "the authors': scale it by the model's sigma_max and sample with the sampler's noise off. "
                "mode 'authors' reproduces their node draw for draw for a given seed."
            ),
            inputs=[
                io.Int.Input("width", default=512, min=16, max=8192, step=8),
                io.Int.Input("height", default=512, min=16, max=8192, step=8),
                io.Int.Input("frames", default=16, min=1, max=4096, tooltip="Number of video frames (the latent batch)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
                gamma_input(),
                io.Combo.Input(
                    "mode",
                    options=MODES,
                    default="ar1",
                    tooltip="ar1: fast exact AR(1) sampler. authors: the authors' MultivariateNormal draw "
                    "(same numbers as their node for the same seed; slower for many frames).",
                ),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    @checked
    def execute(cls, width: int, height: int, frames: int, seed: int, gamma: float, mode: str) -> io.NodeOutput:
        shape = (4, height // 8, width // 8)
        if mode == "authors":
            samples = noise_prior.authors_noise(frames, *shape, gamma=gamma, seed=seed)
        else:
            samples = noise_prior.correlated_noise_like(torch.zeros((frames, *shape)), gamma, seed)
        return io.NodeOutput({"samples": samples})
