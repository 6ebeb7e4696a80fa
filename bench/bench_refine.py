"""Tiled VCD and Face VCD cost on the tiny SD1.5 model (CPU), measured side by side in one run.

    bash scripts/bench.sh refine

Each case runs in a fresh subprocess; peak memory is the growth of the process's peak RSS over the
loaded baseline (models, inputs), so it counts what sampling allocates. Read the ratios.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
FRAMES, LATENT, STEPS = 2, 64, 1
CASES = {
    "untiled": None,
    "tiled 2x2": (320, 128),  # tile, overlap in pixels -> 40 / 16 latent: 2x2 tiles over 64x64
    "tiled 4x4": (176, 64),  # 22 / 8 latent: 4x4 tiles
    "face refine": "face",
    "whole frame": "whole",
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(name: str) -> dict:
    sys.path.insert(0, str(REPO))
    from devtools.inproc import load_comfy

    env = load_comfy(os.environ["COMFYUI_DIR"])
    from vcd.nodes.sampling import SamplingSettings, denoise_clip
    from vcd.nodes.tiled import tiled_model

    model, clip, vae = env.tiny.tiny_model(0), env.tiny.tiny_clip(0), env.tiny.tiny_vae(0)
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a woman"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    settings = SamplingSettings(seed=0, steps=STEPS, cfg=4.0, sampler_name="euler", scheduler="normal", denoise=0.5, gamma=0.1)
    case = CASES[name]
    with torch.inference_mode():
        if case in ("face", "whole"):
            import skimage.data

            photo = torch.from_numpy(skimage.data.astronaut()).float() / 255
            frames = torch.stack([photo.roll(2 * i, dims=1) for i in range(4)])
            vae.encode(frames[:1, :64, :64])  # warm-up
            baseline = peak_rss_mb()
            start = time.perf_counter()
            if case == "face":
                env.pack.nodes.face.VCDFaceRefine.execute(
                    model, positive, negative, vae, frames, crop_factor=3.0, guide_size=256, max_size=256,
                    denoise=0.5, steps=STEPS, cfg=4.0, sampler_name="euler", scheduler="normal", seed=0, gamma=0.0,
                    feather=5, crop_mode="union", detector="opencv_haar")
            else:
                vae.decode(denoise_clip(model, positive, negative, vae.encode(frames), settings))
        else:
            latent = torch.randn(FRAMES, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
            target = model if case is None else tiled_model(model, case[0], case[1], 1)
            denoise_clip(target, positive, negative, latent[:, :, :2, :2], settings)  # warm-up, smallest size
            baseline = peak_rss_mb()
            start = time.perf_counter()
            denoise_clip(target, positive, negative, latent, settings)
    return {"seconds": time.perf_counter() - start, "peak_mb": max(peak_rss_mb() - baseline, 0.1)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        print(json.dumps(run_case(sys.argv[2])))
        return
    results = {}
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"tiled: {FRAMES} frames, {LATENT}x{LATENT} latent ({LATENT * 8} px), {STEPS} steps, CFG batch; face: 4 frames of 512 px, guide 256")
    print(f"{'case':<12} {'seconds':>8} {'peak MB':>8} {'time ratio':>11} {'memory ratio':>13}")
    for name, base in (("untiled", "untiled"), ("tiled 2x2", "untiled"), ("tiled 4x4", "untiled"),
                       ("whole frame", "whole frame"), ("face refine", "whole frame")):
        r, b = results[name], results[base]
        print(f"{name:<12} {r['seconds']:>8.2f} {r['peak_mb']:>8.1f} {r['seconds'] / b['seconds']:>11.2f} {r['peak_mb'] / b['peak_mb']:>13.2f}")


if __name__ == "__main__":
    main()
