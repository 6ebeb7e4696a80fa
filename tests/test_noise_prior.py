"""The 3D Gaussian noise prior (vcd_core.noise_prior): statistics, layouts, seeds, parity."""

import pytest
import torch

from vcd_core import noise_prior

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

GAMMAS = [0.0, 0.1, 0.5, 0.9, 1.0]


def lag_correlation(noise: torch.Tensor, lag: int) -> float:
    """Pearson correlation between frame i and frame i+lag over all other entries, all i pooled."""
    a, b = noise[:-lag].reshape(-1).double(), noise[lag:].reshape(-1).double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def draw(gamma: float, seed: int = 0, frames: int = 8, shape=(4, 64, 64)) -> torch.Tensor:
    return noise_prior.correlated_noise_like(torch.zeros((frames, *shape)), gamma, seed)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_lag_correlation_matches_gamma_power(gamma):
    noise = draw(gamma)
    for lag in (1, 2, 3):
        # 16384 independent entries per frame pair: standard error < 0.01.
        assert lag_correlation(noise, lag) == pytest.approx(gamma**lag, abs=0.03), lag


@pytest.mark.parametrize("gamma", GAMMAS)
def test_unit_marginal_variance_and_zero_mean(gamma):
    noise = draw(gamma, frames=6)
    per_frame = noise.reshape(6, -1)
    assert torch.allclose(per_frame.var(dim=1), torch.ones(6), atol=0.03)
    assert per_frame.mean(dim=1).abs().max() < 0.03


def test_empirical_covariance_is_sigma():
    noise = draw(0.6, frames=5, shape=(4, 96, 96)).reshape(5, -1).double()
    empirical = noise @ noise.T / noise.shape[1]
    assert torch.allclose(empirical, noise_prior.frame_covariance(5, 0.6), atol=0.03)


def test_gamma_one_gives_identical_frames_and_zero_iid():
    assert torch.equal(draw(1.0)[0], draw(1.0)[7])
    assert torch.isfinite(draw(1.0)).all()
    assert abs(lag_correlation(draw(0.0), 1)) < 0.03


def test_deterministic_per_seed_and_different_across_seeds():
    assert torch.equal(draw(0.3, seed=7), draw(0.3, seed=7))
    assert not torch.equal(draw(0.3, seed=7), draw(0.3, seed=8))


def test_independent_across_channels_and_pixels():
    noise = draw(0.5, frames=4, shape=(4, 64, 64))
    channels = torch.corrcoef(torch.stack([noise[:, 0].reshape(-1), noise[:, 1].reshape(-1)]))[0, 1]
    pixels = torch.corrcoef(torch.stack([noise[..., :-1].reshape(-1), noise[..., 1:].reshape(-1)]))[0, 1]
    assert abs(float(channels)) < 0.03 and abs(float(pixels)) < 0.03


def test_global_rng_untouched():
    state = torch.random.get_rng_state()
    draw(0.2)
    noise_prior.authors_noise(4, 4, 8, 8, gamma=0.2, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


def test_video_latent_layout_correlates_along_time_only():
    latent = torch.zeros((3, 4, 8, 32, 32))  # [B, C, T, h, w]
    noise = noise_prior.correlated_noise_like(latent, 0.7, seed=3)
    assert noise.shape == latent.shape
    per_item_frames_first = noise.permute(0, 2, 1, 3, 4)  # [B, T, C, h, w]
    lag1 = [lag_correlation(per_item_frames_first[b], 1) for b in range(3)]
    assert lag1 == pytest.approx([0.7] * 3, abs=0.04)
    across_batch = torch.corrcoef(torch.stack([noise[0].reshape(-1), noise[1].reshape(-1)]))[0, 1]
    assert abs(float(across_batch)) < 0.03


def test_batch_index_continues_the_chain():
    full = noise_prior.correlated_noise_like(torch.zeros((8, 4, 8, 8)), 0.4, seed=5)
    part = noise_prior.correlated_noise_like(torch.zeros((3, 4, 8, 8)), 0.4, seed=5, batch_index=[5, 6, 7])
    assert torch.equal(part, full[5:8])
    video = noise_prior.correlated_noise_like(torch.zeros((2, 4, 6, 8, 8)), 0.4, seed=5)
    picked = noise_prior.correlated_noise_like(torch.zeros((1, 4, 6, 8, 8)), 0.4, seed=5, batch_index=[1])
    assert torch.equal(picked[0], video[1])


@pytest.mark.parametrize("shape", [(4, 3, 5), (4, 1, 1), (1, 2, 3)])  # 60, 4 and 6 values a frame: not multiples of 16
def test_batch_index_continues_the_chain_for_any_frame_size(shape):
    """CPU randn fills a tensor in blocks of 16 and redraws a ragged tail: frames must not share one draw."""
    full = noise_prior.correlated_noise_like(torch.zeros((8, *shape)), 0.4, seed=5)
    part = noise_prior.correlated_noise_like(torch.zeros((3, *shape)), 0.4, seed=5, batch_index=[3, 4, 5])
    assert torch.equal(part, full[3:6])
    video = noise_prior.correlated_noise_like(torch.zeros((3, shape[0], 5, *shape[1:])), 0.4, seed=5)
    picked = noise_prior.correlated_noise_like(torch.zeros((1, shape[0], 5, *shape[1:])), 0.4, seed=5, batch_index=[2])
    assert torch.equal(picked[0], video[2])


@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.5, 0.95])
def test_chain_is_cholesky_of_sigma_times_the_same_innovations(gamma):
    """AR(1) is exactly L @ e with L = cholesky(Sigma): gamma 0 returns the innovations e themselves."""
    def chain(g):
        return noise_prior.correlated_noise(6, (4, 5, 7), g, generator=torch.Generator().manual_seed(3))

    innovations = chain(0.0).double().reshape(6, -1)
    factor = torch.linalg.cholesky(noise_prior.frame_covariance(6, gamma))
    expected = (factor @ innovations).reshape(6, 4, 5, 7)
    torch.testing.assert_close(chain(gamma).double(), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("latent, batch_index", [
    (torch.zeros((3, 4, 8, 8)), [0, 1]),
    (torch.zeros((2, 4, 3, 8, 8)), [0]),
    (torch.zeros((2, 4, 3, 8, 8)), [0, 1, 2]),
    (torch.zeros((2, 4, 8, 8)), [0, -1]),
    (torch.zeros((2, 4, 3, 8, 8)), [-2, 0]),
])
def test_batch_index_length_and_values_must_fit(latent, batch_index):
    with pytest.raises(ValueError, match="batch_index"):
        noise_prior.correlated_noise_like(latent, 0.4, seed=5, batch_index=batch_index)


@pytest.mark.parametrize("shape", [(0, 4, 8, 8), (0, 4, 3, 8, 8), (2, 4, 0, 8, 8)])
def test_empty_latent_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="latent: .*empty"):
        noise_prior.correlated_noise_like(torch.zeros(shape), 0.4, seed=5)


def test_dtype_and_device_follow_request():
    gen = torch.Generator().manual_seed(0)
    out = noise_prior.correlated_noise(4, (2, 3), 0.5, generator=gen, dtype=torch.float16, device="cpu")
    assert out.dtype == torch.float16 and out.shape == (4, 2, 3)
    assert noise_prior.correlated_noise_like(torch.zeros((2, 4, 4, 4), dtype=torch.bfloat16), 0.1, 0).dtype == torch.bfloat16


@pytest.mark.parametrize("gamma", [-0.1, 1.5])
def test_gamma_outside_unit_interval_is_rejected(gamma):
    with pytest.raises(ValueError, match="gamma"):
        draw(gamma)


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.2, 0.95])
def test_authors_mode_equals_fresh_multivariate_normal_draw(gamma):
    frames, channels, h, w, seed = 16, 4, 8, 8, 1234
    idx = torch.arange(frames, dtype=torch.float32)
    sigma = gamma ** (idx[:, None] - idx[None, :]).abs()
    sigma.fill_diagonal_(1.0)
    torch.manual_seed(seed)
    expected = torch.distributions.MultivariateNormal(torch.zeros(frames), sigma).sample((channels, h, w))
    expected = expected.permute(3, 0, 1, 2)
    assert torch.equal(noise_prior.authors_noise(frames, channels, h, w, gamma=gamma, seed=seed), expected)


def test_authors_mode_survives_gamma_one():
    noise = noise_prior.authors_noise(6, 4, 8, 8, gamma=1.0, seed=0)
    assert torch.equal(noise[0], noise[5]) and noise.shape == (6, 4, 8, 8)


def test_covariance_is_exactly_gamma_to_the_lag_in_the_requested_dtype():
    expected = torch.tensor([[0.1 ** abs(m - n) for n in range(4)] for m in range(4)], dtype=torch.float64)
    assert torch.equal(noise_prior.frame_covariance(4, 0.1), expected)
    assert noise_prior.frame_covariance(4, 0.1, dtype=torch.float32).dtype == torch.float32


def test_chain_starts_from_the_generators_own_draws_one_per_frame():
    """Frame 0 is the first randn draw, frame 1 is gamma * frame 0 + sqrt(1 - gamma^2) * the second."""
    gen = torch.Generator().manual_seed(9)
    e0, e1 = torch.randn((2, 3), generator=gen), torch.randn((2, 3), generator=gen)
    noise = noise_prior.correlated_noise(2, (2, 3), 0.6, generator=torch.Generator().manual_seed(9))
    assert torch.equal(noise[0], e0)
    torch.testing.assert_close(noise[1], 0.6 * e0 + 0.8 * e1)
    one = noise_prior.correlated_noise(1, (2, 3), 0.6, generator=torch.Generator().manual_seed(9))
    assert torch.equal(one, e0[None])


def test_zero_frames_are_refused_by_name():
    with pytest.raises(ValueError, match="num_frames must be at least 1"):
        noise_prior.correlated_noise(0, (2, 3), 0.5, generator=torch.Generator())


def test_device_request_is_honoured():
    out = noise_prior.correlated_noise(2, (2, 3), 0.5, generator=torch.Generator(), device="meta")
    assert out.device.type == "meta"


def test_a_latent_without_a_frame_axis_is_refused_naming_its_shape():
    with pytest.raises(ValueError, match=r"batch/frame dimension \(got shape \(4,\)\)"):
        noise_prior.correlated_noise_like(torch.zeros(4), 0.5, seed=0)
    assert noise_prior.correlated_noise_like(torch.zeros((3, 4)), 0.5, seed=0).shape == (3, 4)


@pytest.mark.parametrize("shape, what", [((2, 4, 8, 8), "2 latent frames"), ((2, 4, 3, 8, 8), "2 video latents")])
def test_batch_index_length_error_names_the_layout(shape, what):
    with pytest.raises(ValueError, match=f"batch_index has 1 entries for {what}:"):
        noise_prior.correlated_noise_like(torch.zeros(shape), 0.4, seed=5, batch_index=[0])


def test_batch_index_may_start_at_zero_and_skip_rows():
    full = noise_prior.correlated_noise_like(torch.zeros((3, 2, 4, 4)), 0.4, seed=5)
    assert torch.equal(noise_prior.correlated_noise_like(torch.zeros((2, 2, 4, 4)), 0.4, 5, [0, 2]), full[[0, 2]])


def test_video_noise_takes_the_latents_dtype():
    assert noise_prior.correlated_noise_like(torch.zeros((1, 2, 3, 4, 4), dtype=torch.float16), 0.4, 5).dtype == torch.float16
