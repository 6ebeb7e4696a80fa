"""Absolute time and peak GPU memory of each stage at real size, on a seeded random full-width SD1.5 UNet.

T2V (16 x 512 px), Face VCD (the face crop of those frames at guide size 512), Tiled VCD (the frames at 1024 px:
ours with 3x3 tiles of 512 and 2x2 of 576, and the authors' tile-by-tile route), 20 steps each with CFG in one
batch; identity training at 512 px under autocast (ours, ours with gradient checkpointing, diffusers'
textual-inversion loop on the same weights). Random weights, nothing downloaded; under 10 minutes on one
recent GPU. Needs torch with CUDA, ComfyUI (``COMFYUI_DIR``), transformers and diffusers:

    source scripts/env.sh && $VCD_PYTHON bench/gpu_realsize.py [--json results.json]
    ... bench/gpu_realsize.py --smoke   # tiny sizes, narrow UNet, on the CPU: proves the script runs
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

import realsize as rs


@dataclass(frozen=True)
class Sizes:
    frames: int = 16
    side: int = 512  # T2V frames (px); Tiled VCD runs at twice this
    face: int = 85  # face side (px) in the T2V frames: crop_factor 3 gives a 256 px window, resized to 512
    steps: int = 20
    width: int = 320  # UNet base channels (SD1.5)
    train_side: int = 512
    train_batch: int = 4
    train_steps: int = 10
    text_layers: int = 12
    text_width: int = 3072


SMOKE = Sizes(frames=2, side=128, face=20, steps=1, width=32, train_side=64, train_batch=2, train_steps=2,
              text_layers=2, text_width=256)


class Meter:
    """Wall time and peak memory of a block (CUDA's allocator statistics; on the CPU, time only)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, run: Callable[[], object]) -> dict[str, float]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if cuda else 0
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if cuda else float("nan")
        return {"seconds": seconds, "peak_gib": peak / 2**30, "working_gib": (peak - base) / 2**30}


def stages(unet, sizes: Sizes, device: torch.device, meter: Meter) -> dict[str, dict[str, float]]:
    """T2V, Face VCD and Tiled VCD (3 routes), each through all its steps."""
    gen = torch.Generator().manual_seed(0)
    lat, big = sizes.side // rs.SCALE, 2 * sizes.side // rs.SCALE

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device)

    cond = randn(1, 77, 768)
    denoise = rs.cfg_denoiser(unet, cond, torch.zeros_like(cond))
    t2v = (torch.zeros(sizes.frames, 4, lat, lat, device=device), randn(sizes.frames, 4, lat, lat))
    upscaled = (randn(sizes.frames, 4, big, big), randn(sizes.frames, 4, big, big))
    masks = rs.face_masks(sizes.frames, sizes.side, sizes.face, max(1, sizes.side // 256))
    face_run = rs.face_cases(denoise, *t2v, masks.to(device), sizes.steps, 0.8)["Face VCD: one crop clip"]
    tile, overlap = lat, lat // 8  # 512 / 64 px at full size
    tiled = rs.tiled_cases(denoise, *upscaled, tile, overlap, sizes.steps, 0.2)
    runs = {
        "T2V": lambda: rs.euler(denoise, *t2v, sizes.steps, 1.0),
        "Face VCD": face_run,
        "Tiled VCD, ours (3x3 tiles)": tiled["ours: tiles blended every step"],
        "Tiled VCD, ours (2x2 tiles, 576/128)": rs.tiled_cases(denoise, *upscaled, (big + 2 * overlap) // 2, 2 * overlap,
                                                               sizes.steps, 0.2)["ours: tiles blended every step"],
        "Tiled VCD, authors' route (3x3 tiles)": tiled["authors: tile by tile (USDU)"],
    }
    with torch.inference_mode():
        rs.euler(denoise, *t2v, 1, 1.0)  # warm-up: kernels chosen, memory pools filled
        return {name: meter(run) for name, run in runs.items()}


def training(unet, sizes: Sizes, device: torch.device, meter: Meter) -> dict[str, dict[str, float]]:
    """Seconds per step and peak memory of ``train_identity`` with and without checkpointing, and of diffusers' loop."""
    autocast = None if device.type == "cpu" else torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    text_model, tokenizer = rs.clip_l(sizes.text_layers, sizes.text_width)
    text = rs.IdentityTextEncoder(copy.deepcopy(text_model), tokenizer).to(device)
    side, views, warmup = sizes.train_side // rs.SCALE, 8, 2
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(views, 4, side, side, generator=gen).to(device)
    masks = torch.ones(views, 1, side, side, device=device)
    prompts = [f"photo of a {rs.MARKER} woman"] * views
    start = rs.identity.init_vectors(text.word_vector, rs.TOKENS)

    def denoise(x_t, t, context):
        return unet(x_t.to(unet.dtype), timesteps=t, context=context.to(unet.dtype)).float()

    def ours(blocks) -> float:
        stamps: list[float] = []

        def stamp(_step: int, _loss: float) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        config = rs.identity.TrainConfig(steps=warmup + sizes.train_steps, batch_size=sizes.train_batch, autocast_dtype=autocast)
        with rs.identity.gradient_checkpointing(blocks):
            rs.identity.train_identity(text, denoise, latents, masks, prompts, start, rs.identity.sd_alphas_cumprod(),
                                       config, callback=stamp)
        return (stamps[-1] - stamps[warmup - 1]) / sizes.train_steps

    def plain() -> float:
        d_unet, vae = rs.diffusers_models(sizes.width, seeded_from=unet)
        d_unet, vae = d_unet.to(device, unet.dtype), vae.to(device, unet.dtype)
        encode, loss, update = rs.plain_ti(d_unet, vae, copy.deepcopy(text_model).to(device), tokenizer)
        pixels = torch.rand(views, 3, sizes.train_side, sizes.train_side, generator=gen).to(device)
        for step in range(warmup + sizes.train_steps):
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                begin = time.perf_counter()
            pick = torch.randint(0, views, (sizes.train_batch,), generator=gen)
            batch = rs.Batch(pixels[pick.to(device)], masks[:sizes.train_batch], torch.randn(
                sizes.train_batch, 4, side, side, generator=gen).to(device), torch.randint(0, 1000, (sizes.train_batch,)).to(device),
                [prompts[i] for i in pick.tolist()])
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss(encode(batch), batch).backward()
            update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - begin) / sizes.train_steps

    results = {}
    for name, run in (("train: ours", lambda: ours([])), ("train: ours + gradient checkpointing", lambda: ours(rs.checkpointed_blocks(unet))),
                      ("train: diffusers textual inversion", plain)):
        per_step: list[float] = []
        results[name] = meter(lambda: per_step.append(run()))
        results[name]["seconds_per_step"] = per_step[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a narrow UNet on the CPU (a check, not a benchmark)")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    rs.import_comfy()
    sizes = SMOKE if options.smoke else Sizes()
    device = torch.device("cpu" if options.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --smoke to check the script on the CPU")
    start = time.perf_counter()
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    unet = rs.build_unet(str(device), dtype, sizes.width)
    meter = Meter(device)
    results = stages(unet, sizes, device, meter)
    results.update(training(unet, sizes, device, meter))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke)"
    print(f"{name}, torch {torch.__version__}, UNet {dtype}, sizes {asdict(sizes)}")
    print(f"{'case':<40} {'seconds':>9} {'s/step':>8} {'peak GiB':>9} {'working GiB':>12}")
    for case, r in results.items():
        per_step = r.get("seconds_per_step", r["seconds"] / sizes.steps)
        print(f"{case:<40} {r['seconds']:9.2f} {per_step:8.3f} {r['peak_gib']:9.2f} {r['working_gib']:12.2f}")
    print(f"end to end {time.perf_counter() - start:.0f} s")
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"device": name, "sizes": asdict(sizes), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
