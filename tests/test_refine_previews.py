"""What Face and Tiled Refine show before and while they sample (in-process, tiny SD1.5 model): the crop window or
tile plan as the node's first live preview and as an output, then latent previews only if the preview method allows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcd_core import face, tiling
from vcd_core.geometry import Box


@pytest.fixture()
def live_previews(monkeypatch):
    """``set(method)`` picks the latent preview method (as ``--preview-method`` does); ``updates`` lists every progress
    update the node sends as (value, preview) in order."""
    import comfy.utils
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod

    updates = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: updates.append((value, preview)))

    def set_method(name: str) -> None:
        monkeypatch.setattr(latent_preview.args, "preview_method", LatentPreviewMethod(name))

    return set_method, updates


def check_first_preview(updates: list, expected: torch.Tensor, method: str) -> None:
    """Our PNG at progress 0 before any sampler step; then the sampler's JPEG latent previews, or none when the method
    is 'none' (the tiled VAE's progress updates carry no preview)."""
    (value, first), later = updates[0], updates[1:]
    assert value == 0 and first[0] == "PNG"
    assert np.array_equal(np.asarray(first[1]), (expected.clamp(0, 1) * 255).round().byte().numpy())
    assert later and all(v >= 1 for v, _ in later)
    kinds = {preview[0] if preview else None for _, preview in later}
    assert kinds == {None} if method == "none" else "JPEG" in kinds and kinds <= {"JPEG", None}


@pytest.mark.parametrize("method", ["none", "latent2rgb"])
def test_face_refine_shows_its_windows_before_sampling(face_refine, live_previews, method):
    set_method, updates = live_previews
    set_method(method)
    frames = torch.rand(6, 64, 96, 3, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(6, 64, 96)
    for i in range(6):
        mask[i, 20:36, 10 + 8 * i:26 + 8 * i] = 1  # a face moving right
    *_, preview = face_refine(frames, mask=mask, crop_mode="per_frame_smoothed", crop_factor=2.0)
    windows = face.per_frame_windows(mask, 2.0)
    assert len(set(windows)) > 1  # the windows follow the face: each frame shows its own
    torch.testing.assert_close(preview, face.window_preview(frames, windows, mask), rtol=0, atol=0)
    check_first_preview(updates, preview[0], method)


def test_face_refine_without_a_face_previews_the_frames_unchanged(face_refine, live_previews):
    noise = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(face_refine(noise)[-1], noise)
    assert live_previews[1] == []  # nothing is sampled, nothing is shown


def test_pixel_plan_is_the_wrappers_latent_plan_in_pixels(inproc):
    """128 x 192 px = 16 x 24 latents, tiles of 8 latents overlapping by 2: rows at 0, 4, 8 and columns at 0, 5, 11, 16."""
    plan = [(b.y0, b.y1, b.x0, b.x1) for b in inproc.pack.nodes.tiled.pixel_plan(128, 192, 64, 16)]  # the pack's Box class
    assert plan == [(8 * y, 8 * y + 64, 8 * x, 8 * x + 64) for y in (0, 4, 8) for x in (0, 5, 11, 16)]


@pytest.mark.parametrize("method", ["none", "latent2rgb"])
def test_tiled_refine_shows_its_tile_plan_before_sampling(parts, live_previews, method):
    """60 x 100 frames are padded to 64 x 104 for the VAE: the plan is drawn there and cropped back with the frames."""
    set_method, updates = live_previews
    set_method(method)
    frames = torch.rand(2, 60, 100, 3, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out, plan = parts["nodes"].tiled.VCDTiledRefine.execute(
            parts["model"], parts["positive"], parts["negative"], parts["vae"], frames, tile_size=64, overlap=16,
            tile_batch=1, denoise=0.5, gamma=0.1, **parts["sampling"]).result
    tiles = [Box(0, 64, 0, 64), Box(0, 64, 40, 104)]  # 13 latents wide: tiles at 0 and 5
    expected = tiling.plan_preview(tiling.pad_to_multiple(frames, 8)[0], tiles)[:, :60, :100]
    assert out.shape == frames.shape and plan.shape == (1, 60, 100, 3)
    torch.testing.assert_close(plan, expected, rtol=0, atol=0)
    check_first_preview(updates, plan[0], method)
