"""vcd_diffusers.pipeline on the tiny models: the motion module joins the frames, stacked tiles are sampled as
separate clips, the noise mask keeps the rest of the clip on the input, partial denoise runs the end of the
schedule, and a seed gives the same video again."""

import pytest
import torch

from vcd_diffusers import pipeline


# one torch thread (conftest); diffusers 0.42 hands numpy 2 a tensor in its schedulers (their warning)
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

@pytest.fixture(scope="module")
def prompts(tiny_models):
    return pipeline.conditioning(tiny_models, "a photo of a woman", "blurry")


def clip_latents(seed: int, frames: int = 4) -> torch.Tensor:
    return torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_temporal_attention_joins_the_frames(tiny_models, prompts):
    """Changing the last frame's input changes the first frame's prediction through the motion module, and only
    through it: the image UNet alone keeps frames apart."""
    eps = pipeline.video_denoiser(tiny_models, *prompts, cfg=8.0, frames=4)
    x, t = clip_latents(0), torch.tensor(500.0)
    moved = x.clone()
    moved[3] += 1.0
    with torch.no_grad():
        first, again = eps(x, t)[0], eps(moved, t)[0]
        image_unet = [tiny_models.unet(v[:1], t, encoder_hidden_states=prompts[0]).sample for v in (x, moved)]
    assert (first - again).abs().max() > 1e-3
    assert torch.equal(image_unet[0], image_unet[1])


def test_guidance_is_classifier_free_guidance_on_whole_clips(tiny_models, prompts):
    """eps = uncond + cfg * (cond - uncond), each from the motion UNet on the whole clip with its text repeated per
    frame."""
    x, t = clip_latents(5), torch.tensor(700.0)
    unet = tiny_models.video_unet()
    with torch.no_grad():
        cond, uncond = (unet(x.movedim(0, 1)[None], t, encoder_hidden_states=text.expand(4, -1, -1)).sample[0]
                        .movedim(1, 0) for text in prompts)
        torch.testing.assert_close(pipeline.video_denoiser(tiny_models, *prompts, cfg=7.5, frames=4)(x, t),
                                   uncond + 7.5 * (cond - uncond), atol=1e-4, rtol=1e-3)


def test_stacked_clips_are_sampled_as_separate_clips(tiny_models, prompts):
    """Two clips stacked along dim 0 (as Tiled VCD stacks tiles) get what each gets alone, CFG included."""
    eps = pipeline.video_denoiser(tiny_models, *prompts, cfg=8.0, frames=4)
    a, b, t = clip_latents(1), clip_latents(2), torch.tensor(300.0)
    with torch.no_grad():
        together = eps(torch.cat([a, b]), t)
        torch.testing.assert_close(together, torch.cat([eps(a, t), eps(b, t)]), atol=1e-4, rtol=1e-3)  # CFG 8 x batch rounding
        assert not torch.allclose(eps(a, t), pipeline.video_denoiser(tiny_models, *prompts, cfg=1.0, frames=4)(a, t))


def test_the_noise_mask_keeps_the_rest_of_the_clip(tiny_models, prompts):
    latents = clip_latents(3)
    mask = torch.zeros(4, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    settings = pipeline.Sampling(steps=3, cfg=4.0, sampler="euler", denoise=0.6, gamma=0.1, seed=5)
    out = pipeline.sample_clip(tiny_models, tuple(latents.shape), *prompts, settings, latents=latents, noise_mask=mask)
    keep = (mask == 0).expand_as(latents)
    assert torch.equal(out[keep], latents[keep]) and (out - latents)[~keep].abs().mean() > 1e-2


@pytest.mark.parametrize("sampler, karras", [("euler", False), ("dpmpp_2m", True), ("ddim", False)])
def test_partial_denoise_runs_the_end_of_the_schedule(tiny_models, prompts, sampler, karras):
    """denoise 0.5 with 2 steps: 2 model calls on the last two of a 4-step schedule, starting from the input noised
    to that level (the nodes' partial_sigmas way); denoise 1 starts from the prior's noise alone."""
    calls = []
    wrap = lambda eps: (lambda x, t: calls.append(float(t)) or eps(x, t))  # noqa: E731
    latents = clip_latents(4)
    settings = pipeline.Sampling(steps=2, cfg=1.0, sampler=sampler, karras=karras, denoise=0.5, seed=1)
    pipeline.sample_clip(tiny_models, tuple(latents.shape), *prompts, settings, latents=latents, wrap=wrap)
    full = pipeline.make_scheduler(settings, tiny_models.scheduler_config)
    full.set_timesteps(4)
    assert calls == [float(t) for t in full.timesteps[-2:]]


def test_identity_training_checkpoints_the_unets_heavy_blocks(tiny_models, monkeypatch):
    from vcd_diffusers import train

    seen = []
    real = train.identity.gradient_checkpointing
    monkeypatch.setattr(train.identity, "gradient_checkpointing", lambda blocks: seen.append(blocks) or real(blocks))
    photo = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(0))
    config = train.identity.TrainConfig(steps=1, batch_size=1)
    train.train_identity(tiny_models, [photo], name="x", config=config, resolution=64, augment=False)
    assert {type(b).__name__ for b in seen[0]} == {"ResnetBlock2D", "Transformer2DModel"}
    assert len(seen[0]) == sum(type(m).__name__ in train.CHECKPOINTED_BLOCKS for m in tiny_models.unet.modules())
    train.train_identity(tiny_models, [photo], name="x", config=config, resolution=64, augment=False,
                         gradient_checkpointing=False)
    assert seen[1] == []


def test_half_precision_models_sample_finite_frames(tiny_files):
    """What a GPU gets by default (bf16): weights cast, text and latents in bf16, frames finite in [0, 1]."""
    from vcd_diffusers import loading

    half = loading.load_models(tiny_files.checkpoint, tiny_files.motion_module, tiny_files.config_dir, dtype=torch.bfloat16)
    frames = pipeline.generate(half, "a photo", frames=2, height=64, width=64,
                               settings=pipeline.Sampling(steps=1, sampler="euler"))
    assert half.video_unet().dtype == half.vae.dtype == half.text.model.dtype == torch.bfloat16
    assert frames.dtype == torch.float32 and torch.isfinite(frames).all() and 0 <= frames.min() <= frames.max() <= 1


def test_a_seed_gives_the_same_video_and_another_seed_another(tiny_models):
    def video(seed):
        settings = pipeline.Sampling(steps=2, cfg=4.0, sampler="dpmpp_2m", karras=True, seed=seed)
        return pipeline.generate(tiny_models, "a photo of a woman", frames=3, height=64, width=64, settings=settings)

    first = video(7)
    assert first.shape == (3, 64, 64, 3) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, video(7)) and not torch.equal(first, video(8))
