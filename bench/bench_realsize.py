"""Real-size cost of Tiled VCD, Face VCD and identity training on a full-width SD1.5 UNet, side by side in one run.

    bash scripts/bench.sh realsize

Every case runs the vcd_core functions the nodes use (bench/realsize.py) with ComfyUI's SD1.5 UNet (fp32, CPU)
as the denoiser. Peak memory is counted exactly: the live bytes of every tensor a case allocates (weights
and inputs excluded), and so is compute (FLOPs by torch's formulas), both by ``realsize.Costs``; time ratios
here are FLOP ratios. The cases run on fake tensors (FakeTensorMode on the CPU device: the same
kernels are chosen, nothing is computed), so 1024 px frames are counted in minutes on a shared 2-core machine
where one real 512 px UNet call takes a minute; a real call checks that fake and real counts agree. The text
encoder of the training cases runs for real. Absolute times: bench/gpu_realsize.py on a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily
from torch.utils.flop_counter import FlopCounterMode

import realsize as rs

blend_weights = rs.tiling.blend_weights

FRAMES, STEPS, CFG = 2, 1, 8.0
TILE, OVERLAP = 512, 64  # the Tiled VCD node's defaults (pixels)
BATCH, TRAIN_SIZE = 4, 512  # TrainConfig's batch, the training views' side
PIPELINE_FRAMES, PIPELINE_STEPS = 16, 20  # the shipped full pipeline: every stage runs 20 steps
MiB = 2 ** 20


class Counter:
    """Peak live bytes and FLOPs of what runs inside (``realsize.Costs``), with the wall time of counting it."""

    def __enter__(self) -> "Counter":
        self.costs, self.start = rs.Costs(), time.perf_counter()
        self.costs.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.costs.__exit__(*exc)
        self.peak, self.total, self.seconds = self.costs.peak, self.costs.flops, time.perf_counter() - self.start


def count(fake: FakeTensorMode, run) -> Counter:
    with Counter() as counter, fake:
        run()
    return counter


def table(title: str, results: dict[str, Counter], base: str) -> None:
    print(f"\n{title}")
    print(f"  {'case':<34} {'peak MiB':>9} {'x ' + base[:12]:>15} {'TFLOP':>8} {'x ' + base[:12]:>15}")
    for name, c in results.items():
        b = results[base]
        print(f"  {name:<34} {c.peak / MiB:9.1f} {c.peak / b.peak:15.2f} {c.total / 1e12:8.2f} {c.total / b.total:15.2f}")


def verdict(label: str, value: float, limit: float) -> None:
    print(f"  target {label}: {value:.2f} <= {limit:.2f}: {'met' if value <= limit else 'MISSED'}")


def check_fake_counts(fake: FakeTensorMode) -> None:
    """One CFG call of the seeded UNet at 8x8 latents, counted for real and on fake tensors: the counts must agree."""
    unet = rs.build_unet()
    cond = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    counts = []
    for mode in (contextlib.nullcontext(), fake):
        with torch.inference_mode(), Counter() as c, mode:
            rs.cfg_denoiser(unet, cond, cond, CFG)(torch.randn(1, 4, 8, 8), 1.0, 500.0)
        counts.append((c.peak, c.total))
    with torch.inference_mode(), FlopCounterMode(display=False) as reference:
        rs.cfg_denoiser(unet, cond, cond, CFG)(torch.randn(1, 4, 8, 8), 1.0, 500.0)
    (real_bytes, real_flops), (fake_bytes, fake_flops) = counts
    same = real_bytes == fake_bytes and real_flops == fake_flops == reference.get_total_flops()
    print(f"counter check, one call at 8x8 latents: real {real_bytes} B, {real_flops} FLOP; fake {fake_bytes} B, "
          f"{fake_flops} FLOP; torch FlopCounterMode {reference.get_total_flops()} FLOP: {'equal' if same else 'DIFFERENT'}")


def real_blend_weights(*args, **kwargs):
    """``tiling.blend_weights`` on real tensors: its coverage check reads values, which fake tensors do not have."""
    with unset_fake_temporarily():
        return blend_weights(*args, **kwargs)


def tiled(fake: FakeTensorMode, denoise) -> None:
    with fake:
        latent, noise = torch.randn(FRAMES, 4, 128, 128), torch.randn(FRAMES, 4, 128, 128)
    cases = rs.tiled_cases(denoise, latent, noise, TILE // rs.SCALE, OVERLAP // rs.SCALE, STEPS, 0.2)
    results = {name: count(fake, run) for name, run in cases.items()}
    plan = rs.tiling.tile_plan(128, 128, TILE // rs.SCALE, OVERLAP // rs.SCALE)
    area = sum(t.height * t.width for t in plan) / 128 ** 2
    table(f"Tiled VCD: {FRAMES} frames of 1024 px, {len(plan)} tiles of {TILE} px (overlap {OVERLAP}), "
          f"{STEPS} step, CFG batch (tile area / frame area {area:.2f})", results, "one tile")
    ours, one, untiled = results["ours: tiles blended every step"], results["one tile"], results["untiled"]
    verdict("peak memory ours / one tile <= 1.3", ours.peak / one.peak, 1.3)
    verdict(f"compute ours / untiled <= 1.2 x {area:.2f}", ours.total / untiled.total, 1.2 * area)


def faces(fake: FakeTensorMode, denoise) -> None:
    with fake:
        latent, noise = torch.randn(FRAMES, 4, 128, 128), torch.randn(FRAMES, 4, 128, 128)
    masks = rs.face_masks(FRAMES, 1024, 170, 8)  # a 170 px face: crop_factor 3 gives a 512 px window
    cases = rs.face_cases(denoise, latent, noise, masks, STEPS, 0.8)
    results = {name: count(fake, run) for name, run in cases.items()}
    table(f"Face VCD: {FRAMES} frames of 1024 px, 512 px window, {STEPS} step, CFG batch", results,
          "whole frame re-denoised")


def training(fake: FakeTensorMode, unet) -> None:
    text_model, tokenizer = rs.clip_l()
    text = rs.IdentityTextEncoder(copy.deepcopy(text_model), tokenizer)
    vectors = rs.identity.init_vectors(text.word_vector, rs.TOKENS).requires_grad_(True)
    prompts = [f"photo of a {rs.MARKER} woman"] * BATCH
    with fake:
        d_unet, vae = rs.diffusers_models()
        side = TRAIN_SIZE // rs.SCALE
        shape = (BATCH, 4, side, side)
        batch = rs.Batch(torch.randn(shape), torch.ones(BATCH, 1, side, side), torch.randn(shape),
                         torch.randint(0, 1000, (BATCH,)), prompts)
        pixels = rs.Batch(torch.rand(BATCH, 3, TRAIN_SIZE, TRAIN_SIZE), batch.masks, batch.noise, batch.timesteps, prompts)

    def step(encode, loss, data: rs.Batch, update=None, blocks=()) -> None:
        context = encode(data)  # real: the text side
        with fake, rs.identity.gradient_checkpointing(blocks):
            leaf = context.detach().requires_grad_()
            loss(leaf, data).backward()
            grad = leaf.grad
        context.backward(torch.randn(grad.shape))  # the real text side's backward, a gradient of the same shape
        if update is not None:
            update()

    encode, loss = rs.ours_loss(unet, text, vectors)
    blocks = rs.checkpointed_blocks(unet)
    t_encode, t_loss, t_update = rs.plain_ti(d_unet, vae, copy.deepcopy(text_model), tokenizer)
    results = {}
    for name, args in (("ours", (encode, loss, batch)), ("ours + gradient checkpointing", (encode, loss, batch, None, blocks)),
                       ("diffusers textual inversion", (t_encode, t_loss, pixels, t_update))):
        with Counter() as c:
            step(*args)
        results[name] = c
    table(f"Train Identity: {TRAIN_SIZE} px, batch {BATCH}, one step (the CLIP-L text side real, the UNet side fake)",
          results, "ours")
    ratio = results["diffusers textual inversion"].total / results["ours"].total
    print(f"  diffusers loop FLOPs / ours: {ratio:.2f} (the VAE encoder on every batch; AdamW over the 49412-row "
          "table is elementwise, not in FLOPs)")
    verdict("steps/s ours >= 2x diffusers, as FLOPs: 2 / ratio", 2 / ratio, 1.0)


def stages(fake: FakeTensorMode, unet) -> None:
    with fake:
        cond = torch.randn(1, 77, 768)
        denoise = rs.cfg_denoiser(unet, cond, cond, CFG)
        t2v = (torch.zeros(PIPELINE_FRAMES, 4, 64, 64), torch.randn(PIPELINE_FRAMES, 4, 64, 64))
        big = (torch.randn(PIPELINE_FRAMES, 4, 128, 128), torch.randn(PIPELINE_FRAMES, 4, 128, 128))
    masks = rs.face_masks(PIPELINE_FRAMES, 512, 85, 2)  # on the 512 px T2V frames: a 256 px window, resized to 512
    face_run = rs.face_cases(denoise, *t2v, masks, 1, 0.8)["Face VCD: one crop clip"]
    runs = {
        "T2V": lambda: rs.euler(denoise, *t2v, 1, 1.0),
        "Face VCD": face_run,
        "Tiled VCD (512/64: 3x3 tiles)": rs.tiled_cases(denoise, *big, 64, 8, 1, 0.2)["ours: tiles blended every step"],
        "Tiled VCD (576/128: 2x2 tiles)": rs.tiled_cases(denoise, *big, 72, 16, 1, 0.2)["ours: tiles blended every step"],
    }
    results = {name: count(fake, run) for name, run in runs.items()}
    table(f"Stages per sampling step, {PIPELINE_FRAMES} frames, 512 px -> 1024 px, CFG batch (the pipeline runs "
          f"{PIPELINE_STEPS} steps in each stage)", results, "T2V")
    f, t3, t2 = (results[k].total / results["T2V"].total for k in list(runs)[1:])
    print(f"  Face + Tiled at the shipped settings (20 steps each, 3x3 tiles): {f + t3:.2f} x T2V; authors ~2 + 6")
    verdict("Face <= 1.5 x T2V", f, 1.5)
    verdict("Face + Tiled <= 4 x T2V (shipped: 20 steps, 3x3 tiles)", f + t3, 4.0)
    verdict("Face + Tiled <= 4 x T2V (2x2 tiles of 576 px)", f + t2, 4.0)
    for steps in (8, 5):
        verdict(f"Face + Tiled <= 4 x T2V (3x3 tiles, Tiled at {steps} steps, same denoise 0.2)", f + t3 * steps / 20, 4.0)


def main() -> None:
    torch.set_num_threads(1)  # on a loaded 2-core machine, OpenMP barriers make 2 threads slower than 1
    rs.import_comfy()
    start = time.perf_counter()
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    rs.tiling.blend_weights = real_blend_weights  # looked up by tiling.tiled at each call
    check_fake_counts(fake)
    with fake:
        unet = rs.build_unet(seeded=False)
        cond = torch.randn(1, 77, 768)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    print(f"full-width SD1.5 UNet: {weights / 2**30:.2f} GiB of fp32 weights (not in the peaks below); "
          "no motion module; fp32, PyTorch attention (SDPA)")
    denoise = rs.cfg_denoiser(unet, cond, cond, CFG)
    with torch.inference_mode():
        tiled(fake, denoise)
        faces(fake, denoise)
    training(fake, unet)
    with torch.inference_mode():
        stages(fake, unet)
    print(f"\ncounted in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
