"""The 3D Gaussian noise prior of T2V VCD: initial noise correlated across frames.

Every channel and latent pixel gets an independent zero-mean, unit-variance sequence over the
F frames with covariance ``Sigma[m, n] = gamma ** |m - n|``. That covariance is the one of a
stationary AR(1) chain,

    z_0 = e_0,    z_i = gamma * z_{i-1} + sqrt(1 - gamma**2) * e_i,    e_i ~ N(0, I) i.i.d.,

so it is sampled in O(F) with no Cholesky factor. ``gamma = 0`` gives i.i.d. frames,
``gamma = 1`` identical frames (the authors' MultivariateNormal construction fails there:
Sigma is singular). The paper uses gamma = 0.1; higher is steadier with smaller motion.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["frame_covariance", "correlated_noise", "correlated_noise_like", "authors_noise"]


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1] (got {gamma}): 0 is i.i.d. noise, 1 identical frames")
    return gamma


def frame_covariance(num_frames: int, gamma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The prior's frame covariance ``Sigma[m, n] = gamma ** |m - n|`` as an ``[F, F]`` tensor."""
    gamma = _check_gamma(gamma)
    idx = torch.arange(num_frames, dtype=dtype)
    lag = (idx[:, None] - idx[None, :]).abs()
    return torch.where(lag == 0, torch.ones_like(lag), torch.as_tensor(gamma, dtype=dtype) ** lag)


def correlated_noise(
    num_frames: int,
    frame_shape: Sequence[int],
    gamma: float,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    frame_dim: int = 0,
) -> torch.Tensor:
    """Draw ``[F, *frame_shape]`` noise from the prior with the AR(1) recursion.

    The i.i.d. innovations come from ``generator`` (never the global RNG) on the generator's
    device, in float32, one ``randn`` per frame, so frame ``i`` is the same whatever ``num_frames``
    (CPU ``randn`` redraws a ragged tail of one big draw). The chain runs in float32 and is cast to
    ``dtype`` on ``device``. ``frame_dim`` moves the frame axis to that position of the result
    (e.g. 2 for ``[C, T, h, w]``).
    """
    gamma = _check_gamma(gamma)
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1 (got {num_frames})")
    innovations = torch.stack([
        torch.randn(tuple(frame_shape), generator=generator, dtype=torch.float32, device=generator.device)
        for _ in range(num_frames)
    ])
    keep = (1.0 - gamma * gamma) ** 0.5
    noise = torch.empty_like(innovations)
    noise[0] = innovations[0]
    for i in range(1, num_frames):
        noise[i] = gamma * noise[i - 1] + keep * innovations[i]
    return noise.movedim(0, frame_dim).to(device=device if device is not None else noise.device, dtype=dtype)


def correlated_noise_like(
    latent: torch.Tensor,
    gamma: float,
    seed: int,
    batch_index: Sequence[int] | None = None,
) -> torch.Tensor:
    """Noise shaped like a latent, correlated along its frame axis, drawn on the CPU from ``seed``.

    - ``[F, C, h, w]`` (SD1.5 / AnimateDiff): frames are the batch dimension. ``batch_index``
      gives each row's frame position in the whole clip, so a clip split into pieces gets the
      same chain as the whole (row ``i`` is frame ``batch_index[i]`` of one chain).
    - ``[B, C, T, h, w]`` (native video models): frames are dim 2; each batch item gets its own
      chain and ``batch_index`` picks which of the seed's chains each row receives.
    Returned on the CPU in the latent's dtype, as ComfyUI's own noise is.
    """
    if latent.ndim < 2:
        raise ValueError(f"latent must have a batch/frame dimension (got shape {tuple(latent.shape)})")
    if latent.numel() == 0:
        raise ValueError(f"latent: the batch is empty (shape {tuple(latent.shape)}); give at least one frame.")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    rows = _rows(batch_index, latent.shape[0], "video latents" if latent.ndim == 5 else "latent frames")
    if latent.ndim == 5:
        _, channels, frames, height, width = latent.shape
        chains = [
            correlated_noise(frames, (channels, height, width), gamma, generator=generator, frame_dim=1)
            for _ in range(max(rows) + 1)
        ]
        return torch.stack([chains[r] for r in rows]).to(latent.dtype)
    chain = correlated_noise(max(rows) + 1, tuple(latent.shape[1:]), gamma, generator=generator)
    return chain[torch.as_tensor(rows, dtype=torch.long)].to(latent.dtype)


def _rows(batch_index: Sequence[int] | None, batch: int, what: str) -> list[int]:
    """Each row's position in the seed's chain (``batch_index``, ComfyUI's LATENT key), checked."""
    if batch_index is None:
        return list(range(batch))
    rows = [int(r) for r in batch_index]
    if len(rows) != batch:
        raise ValueError(f"batch_index has {len(rows)} entries for {batch} {what}: give one per row of the latent.")
    if min(rows) < 0:
        raise ValueError(f"batch_index holds a negative position ({min(rows)}): positions start at 0.")
    return rows


def authors_noise(num_frames: int, channels: int, height: int, width: int, gamma: float, seed: int) -> torch.Tensor:
    """The authors' construction, draw for draw: ``[F, C, h, w]`` from ``MultivariateNormal``.

    ``torch.manual_seed(seed)`` then ``MultivariateNormal(0, Sigma).sample((C, h, w))`` on the CPU
    in float32, permuted frames-first, so their published seeds regenerate their noise. It runs
    inside ``torch.random.fork_rng`` so the caller's global RNG state is left as it was. Sigma is
    singular at gamma = 1, where this falls back to the exact limit (frame 0 repeated).
    """
    gamma = _check_gamma(gamma)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if gamma >= 1.0:
            first = torch.randn((channels, height, width, 1), dtype=torch.float32)
            samples = first.expand(channels, height, width, num_frames).contiguous()
        else:
            sigma = frame_covariance(num_frames, gamma, dtype=torch.float32)
            dist = torch.distributions.MultivariateNormal(torch.zeros(num_frames), covariance_matrix=sigma)
            samples = dist.sample((channels, height, width))
    return samples.permute(3, 0, 1, 2).contiguous()
