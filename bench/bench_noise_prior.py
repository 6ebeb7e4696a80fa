"""Noise prior speed: our AR(1) sampler vs the authors' MultivariateNormal, and vs one UNet step.

    bash scripts/bench.sh noise_prior

Prints wall times side by side from one run and their ratios (noisy machines: read the ratios).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))
from vcd_core import noise_prior  # noqa: E402


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_unet_step_seconds(frames: int) -> float:
    from devtools.inproc import load_comfy

    env = load_comfy(os.environ["COMFYUI_DIR"])
    model = env.tiny.tiny_model(0)
    clip = env.tiny.tiny_clip(0)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo"))[0][0]
    x = torch.randn(frames, 4, 64, 64)
    sigma = torch.full((frames,), 5.0)
    context = cond.expand(frames, -1, -1)
    with torch.inference_mode():
        return best_of(lambda: model.model.apply_model(x, sigma, c_crossattn=context), repeats=1)


def main() -> None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"{'frames':>6} {'ar1 ms':>9} {'authors ms':>11} {'authors/ar1':>12} {'unet step ms':>13} {'ar1/unet':>9}")
    for frames in (16, 64, 256):
        latent = torch.zeros(frames, 4, 64, 64)
        ar1 = best_of(lambda: noise_prior.correlated_noise_like(latent, 0.1, seed=0))
        authors = best_of(lambda: noise_prior.authors_noise(frames, 4, 64, 64, gamma=0.1, seed=0), repeats=3)
        unet = tiny_unet_step_seconds(frames) if frames == 16 else float("nan")
        print(f"{frames:>6} {ar1 * 1e3:>9.2f} {authors * 1e3:>11.2f} {authors / ar1:>12.1f} {unet * 1e3:>13.1f} {ar1 / unet:>9.4f}")
    print("64x64 latents (512 px), 4 channels, CPU; unet = one conditional forward of the tiny SD1.5 test model "
          "(16 frames only: 64x64 attention is slow on a CPU).")


if __name__ == "__main__":
    main()
