"""The noise nodes in-process: a NOISE driving core SamplerCustomAdvanced on the tiny SD1.5 model."""

import pytest
import torch


def sample_with_vcd_noise(inproc, gamma: float, frames: int = 6, steps: int = 3) -> torch.Tensor:
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced

    model, clip = inproc.tiny.tiny_model(0), inproc.tiny.tiny_clip(0)
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a woman"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(4.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
    noise = inproc.pack.nodes.noise.VCD3DGaussianNoise.execute(noise_seed=11, gamma=gamma).result[0]
    latent = {"samples": torch.zeros((frames, 4, 8, 8))}
    with torch.inference_mode():
        out = SamplerCustomAdvanced.execute(noise, guider, comfy.samplers.sampler_object("euler"), sigmas, latent)
    return out.result[0]["samples"]


def frame_difference(samples: torch.Tensor) -> float:
    """Mean absolute difference of neighbouring frames, relative to the mean magnitude."""
    return float((samples[1:] - samples[:-1]).abs().mean() / samples.abs().mean())


def test_frames_differ_less_as_gamma_rises(inproc):
    differences = {gamma: frame_difference(sample_with_vcd_noise(inproc, gamma)) for gamma in (0.0, 0.5, 0.9, 1.0)}
    print("relative neighbour-frame difference by gamma:", differences)
    assert differences[0.0] > differences[0.5] > differences[0.9] > differences[1.0]
    assert differences[1.0] < 1e-5  # identical noise and a per-frame model: identical frames


def test_sampled_latents_are_finite_and_shaped(inproc):
    samples = sample_with_vcd_noise(inproc, 0.1, frames=4, steps=2)
    assert samples.shape == (4, 4, 8, 8) and torch.isfinite(samples).all()


def test_noise_object_carries_int_seed_and_honours_batch_index(inproc):
    noise = inproc.pack.nodes.noise.VCD3DGaussianNoise.execute(noise_seed=3, gamma=0.3).result[0]
    assert isinstance(noise.seed, int) and noise.seed == 3
    full = noise.generate_noise({"samples": torch.zeros((6, 4, 8, 8))})
    tail = noise.generate_noise({"samples": torch.zeros((2, 4, 8, 8)), "batch_index": [4, 5]})
    assert torch.equal(tail, full[4:])
    video = noise.generate_noise({"samples": torch.zeros((1, 16, 5, 8, 8))})
    assert video.shape == (1, 16, 5, 8, 8)


def test_latent_node_modes(inproc):
    from vcd_core import noise_prior

    node = inproc.pack.nodes.noise.VCD3DGaussianNoiseLatent
    authors = node.execute(width=64, height=48, frames=5, seed=9, gamma=0.2, mode="authors").result[0]["samples"]
    assert torch.equal(authors, noise_prior.authors_noise(5, 4, 6, 8, gamma=0.2, seed=9))
    ar1 = node.execute(width=64, height=48, frames=5, seed=9, gamma=1.0, mode="ar1").result[0]["samples"]
    assert ar1.shape == (5, 4, 6, 8) and torch.equal(ar1[0], ar1[4])
    with pytest.raises(ValueError, match="frames"):
        node.execute(width=64, height=64, frames=0, seed=0, gamma=0.1, mode="ar1")
