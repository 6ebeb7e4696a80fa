"""Identity training: seconds per step, ours vs a plain diffusers textual-inversion loop, on one tiny model.

Same tiny diffusers UNet / VAE / CLIP-L-width text model (seeded), same batch, same steps, same
views. Ours trains only the new rows (a separate 4 x 768 parameter) on latents encoded once.
The plain loop is diffusers' examples/textual_inversion recipe: placeholder tokens added to the
tokenizer, the whole embedding table handed to AdamW, the other rows restored after each step,
and the VAE run on every batch ("no caching"); it is also timed with cached latents.
Then ours with gradient checkpointing on the UNet's res/transformer blocks: time per step and the
bytes autograd keeps for the backward pass (the activation memory, counted exactly by a hook).

    bash scripts/bench.sh identity
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vcd_core import identity  # noqa: E402
from vcd_core.text_encoder import MARKER, IdentityTextEncoder  # noqa: E402

SIZE, BATCH, STEPS, WARMUP, TOKENS = 128, 4, 12, 2, 4


def tiny_models():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(32, 32, 32, 32), latent_channels=4, norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=256, num_hidden_layers=2,
                                        num_attention_heads=12, max_position_embeddings=77, vocab_size=49408))
    tokenizer = CLIPTokenizer.from_pretrained(Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer",
                                              model_max_length=77)
    return unet.requires_grad_(False), vae.requires_grad_(False), text.requires_grad_(False), tokenizer


def encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.encode(pixels * 2 - 1).latent_dist.mean * 0.18215


def timed(run_step, steps: int) -> float:
    for step in range(WARMUP):
        run_step(step)
    start = time.perf_counter()
    for step in range(steps):
        run_step(WARMUP + step)
    return (time.perf_counter() - start) / steps


def ours(unet, text_model, tokenizer, latents, masks, prompts) -> float:
    text = IdentityTextEncoder(copy.deepcopy(text_model), tokenizer)
    start = identity.init_vectors(text.word_vector, TOKENS)
    alphas = identity.sd_alphas_cumprod()

    def denoise(x, t, context):
        return unet(x, t, encoder_hidden_states=context).sample

    stamps: list[float] = []
    config = identity.TrainConfig(steps=WARMUP + STEPS, batch_size=BATCH, seed=0)
    identity.train_identity(text, denoise, latents, masks, prompts, start, alphas, config,
                            callback=lambda step, loss: stamps.append(time.perf_counter()))
    return (stamps[-1] - stamps[WARMUP - 1]) / STEPS


def saved_bytes(run) -> int:
    """Bytes of the tensors autograd keeps for backward while ``run()`` builds the graph."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return total


def checkpointing(unet, text_model, tokenizer, latents, masks, prompts) -> dict[str, tuple[float, int]]:
    """(seconds per step, bytes kept for backward) without and with gradient checkpointing."""
    text = IdentityTextEncoder(copy.deepcopy(text_model), tokenizer)
    vectors = identity.init_vectors(text.word_vector, TOKENS).requires_grad_(True)
    blocks = [m for m in unet.modules() if type(m).__name__ in ("ResnetBlock2D", "Transformer2DModel")]
    t = torch.randint(0, 1000, (BATCH,), generator=torch.Generator().manual_seed(0))

    def loss():
        context = text(vectors, prompts[:BATCH])
        return identity.masked_mse(unet(latents[:BATCH], t, encoder_hidden_states=context).sample, latents[:BATCH],
                                   masks[:BATCH])

    def step(_index: int) -> None:
        loss().backward()

    results = {"without checkpointing": (timed(step, STEPS), saved_bytes(loss))}
    with identity.gradient_checkpointing(blocks):
        results["with checkpointing"] = (timed(step, STEPS), saved_bytes(loss))
    return results


def plain_diffusers(unet, vae, text_model, tokenizer, views, cache: bool) -> float:
    from diffusers import DDPMScheduler

    tokenizer = copy.deepcopy(tokenizer)
    text_model = copy.deepcopy(text_model)
    placeholders = [f"<v{i}>" for i in range(TOKENS)]
    tokenizer.add_tokens(placeholders)
    ids = tokenizer.convert_tokens_to_ids(placeholders)
    text_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_model.get_input_embeddings().weight
    with torch.no_grad():
        table[ids] = identity.init_vectors(lambda w: table[tokenizer(w, add_special_tokens=False)["input_ids"]].mean(0), TOKENS)
    table.requires_grad_(True)
    original = table.detach().clone()
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    keep[ids] = False
    optimizer = torch.optim.AdamW([table], lr=1e-3, weight_decay=1e-2)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    prompts = [p.replace(MARKER, " ".join(placeholders)) for p in views.prompts("woman")]
    latents = encode(vae, views.pixels) if cache else None

    def step(index: int) -> None:
        g = torch.Generator().manual_seed(index)
        pick = torch.randint(0, len(prompts), (BATCH,), generator=g)
        x0 = latents[pick] if cache else encode(vae, views.pixels[pick])
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (BATCH,), generator=g)
        input_ids = tokenizer([prompts[i] for i in pick.tolist()], padding="max_length", max_length=77,
                              truncation=True, return_tensors="pt").input_ids
        hidden = text_model(input_ids=input_ids).last_hidden_state
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=hidden).sample, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            table[keep] = original[keep]

    return timed(step, STEPS)


def main() -> None:
    import skimage.data

    torch.set_num_threads(max(1, torch.get_num_threads()))
    unet, vae, text_model, tokenizer = tiny_models()
    photo = torch.from_numpy(skimage.data.astronaut().copy()).float().movedim(-1, 0) / 255
    views = identity.make_views([photo, photo.flip(-1), photo.roll(48, -1)], [None] * 3, SIZE, 8, True, seed=0)
    start = time.perf_counter()
    latents = encode(vae, views.pixels)
    cache_seconds = time.perf_counter() - start
    masks = identity.latent_masks(views.masks, latents.shape[-2:])
    results = {
        "ours (new rows only, cached latents)": ours(unet, text_model, tokenizer, latents, masks, views.prompts("woman")),
        "diffusers TI (VAE every step)": plain_diffusers(unet, vae, text_model, tokenizer, views, cache=False),
        "diffusers TI (cached latents)": plain_diffusers(unet, vae, text_model, tokenizer, views, cache=True),
    }
    base = results["ours (new rows only, cached latents)"]
    print(f"tiny SD1.5-shaped models, {SIZE} px, batch {BATCH}, {STEPS} timed steps, CPU, "
          f"{len(views.prompts('woman'))} views encoded once in {cache_seconds:.2f} s")
    for label, seconds in results.items():
        print(f"{label:<38} {seconds:7.3f} s/step  ratio to ours {seconds / base:5.2f}")
    memory = checkpointing(unet, text_model, tokenizer, latents, masks, views.prompts("woman"))
    plain_seconds, plain_bytes = memory["without checkpointing"]
    for label, (seconds, kept) in memory.items():
        print(f"ours {label:<33} {seconds:7.3f} s/step  kept for backward {kept / 2**20:7.1f} MiB  "
              f"ratios: time {seconds / plain_seconds:4.2f}, memory {kept / plain_bytes:4.2f}")


if __name__ == "__main__":
    main()
