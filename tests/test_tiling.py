"""Tiled VCD's plan, blend weights and tiled calls (vcd_core.tiling)."""

import pytest
import torch

from vcd_core import tiling
from vcd_core.geometry import Box

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def plain_denoiser(x, sigma, cond):
    """A per-pixel, per-frame stand-in with a spatially varying response."""
    return torch.tanh(x * sigma.view(-1, 1, 1, 1) + cond)


CLIP_FRAMES = 8


def frame_mixing_denoiser(x, sigma, cond):
    """Mixes frames like a motion module: reshapes ``(b f)`` with f = CLIP_FRAMES, each frame depends on
    all frames of its clip at that pixel."""
    clips = x.reshape(-1, CLIP_FRAMES, *x.shape[1:])
    mixed = clips.cumsum(dim=1) / torch.arange(1, CLIP_FRAMES + 1).view(1, -1, 1, 1, 1) + 0.1 * clips.flip(1)
    return mixed.reshape(x.shape)


@pytest.mark.parametrize("height,width,tile,overlap", [(64, 64, 32, 8), (50, 37, 16, 4), (10, 90, 24, 6), (20, 20, 64, 8)])
def test_plan_covers_exactly_with_uniform_tiles_and_weights_sum_to_one(height, width, tile, overlap):
    plan = tiling.tile_plan(height, width, tile, overlap)
    assert len({(t.height, t.width) for t in plan}) == 1
    assert all(0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width for t in plan)
    total = torch.zeros(height, width)
    for t, w in zip(plan, tiling.blend_weights(plan, height, width, overlap)):
        assert (w > 0).all()
        total[t.y0:t.y1, t.x0:t.x1] += w
    assert torch.allclose(total, torch.ones(height, width), atol=1e-6)


def test_blend_weights_ramp_linearly_across_the_overlap():
    """Exact weights: neither a flat 50/50 blend nor first-tile-wins (a seam) passes."""
    plan = tiling.tile_plan(24, 24, 16, 8)
    assert [(t.y0, t.x0) for t in plan] == [(0, 0), (0, 8), (8, 0), (8, 8)]
    weights = tiling.blend_weights(plan, 24, 24, 8)
    rise = (torch.arange(8) + 0.5) / 8  # across columns 8..15, from the left tile to the right one
    torch.testing.assert_close(weights[1][0, :8], rise, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights[0][0, 8:], 1 - rise, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights[0][0, :8], torch.ones(8), rtol=0, atol=0)  # frame border: no ramp
    torch.testing.assert_close(weights[3][:8, :8], rise[:, None] * rise[None, :], rtol=0, atol=1e-6)  # the corner


@pytest.mark.parametrize("tile_batch", [1, 3])
def test_overlaps_mix_the_tiles_by_their_weights(tile_batch):
    """Each tile answers with its own number: the overlaps hold the weighted mix (no first-tile-wins seam)."""
    plan = tiling.tile_plan(24, 24, 16, 8)
    weights = tiling.blend_weights(plan, 24, 24, 8)
    numbers = iter(range(1, 10))

    def tile_numbers(tiles, group):
        return torch.cat([torch.full_like(t, float(next(numbers))) for t in tiles.chunk(len(group))])

    out = tiling.tiled_apply(tile_numbers, torch.zeros(2, 3, 24, 24), plan, weights, tile_batch)
    rise = (torch.arange(8) + 0.5) / 8
    torch.testing.assert_close(out[0, 0, 0, 8:16], 1 * (1 - rise) + 2 * rise, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1, 2, 8:16, 0], 1 * (1 - rise) + 3 * rise, rtol=0, atol=1e-6)
    assert out[0, 0, 0, 0] == 1 and out[0, 0, 23, 23] == 4 and out[0, 0, 0, 23] == 2


def test_tile_larger_than_frame_is_one_tile():
    assert tiling.tile_plan(20, 30, 64, 8) == [Box(0, 20, 0, 30)]


def test_single_tile_equals_untiled_call_exactly():
    x, sigma, cond = torch.randn(6, 4, 16, 16), torch.rand(6), torch.randn(4, 16, 16)
    assert torch.equal(tiling.tiled(plain_denoiser, tile=16, overlap=4)(x, sigma, cond), plain_denoiser(x, sigma, cond))


def test_blending_a_constant_denoiser_returns_the_constant():
    x = torch.randn(3, 4, 40, 56)
    out = tiling.tiled(lambda t, s: torch.full_like(t, 0.37), tile=16, overlap=6)(x, torch.ones(3))
    assert torch.allclose(out, torch.full_like(x, 0.37), atol=1e-6)


@pytest.mark.parametrize("tile_batch", [1, 3])
def test_frames_stay_contiguous_per_tile(tile_batch):
    """A denoiser that mixes frames but not pixels gives the untiled result: every tile saw the whole clip."""
    x, sigma = torch.randn(CLIP_FRAMES, 4, 30, 44), torch.rand(CLIP_FRAMES)
    untiled = frame_mixing_denoiser(x, sigma, 0.0)
    tiled = tiling.tiled(frame_mixing_denoiser, tile=12, overlap=4, tile_batch=tile_batch)(x, sigma, 0.0)
    assert torch.allclose(tiled, untiled, atol=1e-5)


def test_list_outputs_are_blended_each():
    x = torch.randn(2, 4, 24, 24)
    plan = tiling.tile_plan(24, 24, 16, 8)
    weights = tiling.blend_weights(plan, 24, 24, 8)
    cond, uncond = tiling.tiled_apply(lambda t, n: [t * 2, t - 1], x, plan, weights)
    assert torch.allclose(cond, x * 2, atol=1e-6) and torch.allclose(uncond, x - 1, atol=1e-6)


def test_model_sees_one_tile_at_four_times_the_area():
    """Peak working size follows the tile: the largest input the model sees at 4x the area is one tile."""
    seen = []

    def attention_like(x, sigma):
        tokens = x.flatten(2).transpose(1, 2)  # an O(tokens^2) intermediate, like self-attention
        scores = tokens @ tokens.transpose(1, 2)
        seen.append(scores.numel() * scores.element_size())
        return x

    small, large = torch.randn(4, 4, 32, 32), torch.randn(4, 4, 64, 64)
    tiling.tiled(attention_like, tile=32, overlap=8)(small, torch.ones(4))
    one_tile_bytes = max(seen)
    seen.clear()
    tiling.tiled(attention_like, tile=32, overlap=8)(large, torch.ones(4))
    assert max(seen) == one_tile_bytes
    seen.clear()
    attention_like(large, None)
    assert seen[0] == 16 * one_tile_bytes  # untiled: 4x the area is 16x the attention memory


@pytest.mark.parametrize("tile,overlap", [(16, 16), (16, 20), (0, 0), (16, -1)])
def test_bad_tiling_is_rejected(tile, overlap):
    with pytest.raises(ValueError, match="overlap|tile"):
        tiling.tile_plan(64, 64, tile, overlap)


@pytest.mark.parametrize("height, width", [(7, 7), (60, 100), (64, 64), (1, 9), (64, 60), (60, 64)])
def test_frames_pad_by_replication_to_a_multiple_of_8(height, width):
    frames = torch.rand(2, height, width, 3, generator=torch.Generator().manual_seed(0))
    padded = tiling.pad_to_multiple(frames, 8)
    assert padded.shape == (2, -(-height // 8) * 8, -(-width // 8) * 8, 3)
    assert torch.equal(padded[:, :height, :width], frames)
    assert torch.equal(padded[:, height:, :width], frames[:, -1:].expand(-1, padded.shape[1] - height, -1, -1))
    assert torch.equal(padded[:, :, width:], padded[:, :, width - 1:width].expand(-1, -1, padded.shape[2] - width, -1))


def test_one_pixel_tiles_and_abutting_tiles_are_valid_plans():
    assert tiling.tile_plan(2, 3, 1, 0) == [Box(y, y + 1, x, x + 1) for y in range(2) for x in range(3)]
    plan = tiling.tile_plan(32, 32, 16, 0)
    assert plan == [Box(0, 16, 0, 16), Box(0, 16, 16, 32), Box(16, 32, 0, 16), Box(16, 32, 16, 32)]
    assert all(torch.equal(w, torch.ones(16, 16)) for w in tiling.blend_weights(plan, 32, 32, 0))


def test_ramps_span_overlap_pixels_from_each_inner_edge_only():
    """Tiles at rows 0 and 4 of 20 (tile 16, overlap 8) overlap by 12 rows: hand-computed weights."""
    plan = tiling.tile_plan(20, 16, 16, 8)
    assert [t.y0 for t in plan] == [0, 4]
    top, bottom = (w[:, 0].double() for w in tiling.blend_weights(plan, 20, 16, 8))
    # bottom's rise (k + 0.5) / 8 from row 4, top's fall from row 8; neither ramps at the frame border.
    expected = {0: 1 / 17, 4: 9 / 24, 7: 15 / 24, 11: 16 / 17, 12: 1.0, 15: 1.0}
    torch.testing.assert_close(bottom[list(expected)], torch.tensor(list(expected.values()), dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(top[:5], torch.tensor([1.0, 1, 1, 1, 16 / 17]).double(), rtol=0, atol=1e-6)


def test_ramp_is_overlap_pixels_wide_even_when_tiles_overlap_more():
    """Overlap 1 ramps one pixel (weight 1/2) although the tiles share 12 rows; a tile starting at row 1 ramps too."""
    plan = tiling.tile_plan(20, 16, 16, 1)
    assert [t.y0 for t in plan] == [0, 4]
    assert float(tiling.blend_weights(plan, 20, 16, 1)[1][0, 0]) == pytest.approx(1 / 3)
    plan = tiling.tile_plan(17, 16, 16, 4)
    assert [t.y0 for t in plan] == [0, 1]
    assert float(tiling.blend_weights(plan, 17, 16, 4)[1][0, 0]) == pytest.approx(1 / 9)


def test_a_plan_with_a_gap_is_refused():
    with pytest.raises(ValueError, match="^tile plan does not cover the frame$"):
        tiling.blend_weights([Box(0, 4, 0, 4)], 8, 8, 0)


def test_one_full_frame_tile_returns_the_functions_own_output():
    x, answer = torch.zeros(1, 2, 3, 8, 10), torch.ones(5)
    assert tiling.tiled_apply(lambda t, n: answer, x, [Box(0, 8, 0, 10)], [torch.ones(8, 10)]) is answer


def test_a_single_partial_tile_writes_only_its_window():
    x = torch.ones(1, 1, 4, 6)
    out = tiling.tiled_apply(lambda t, n: t * 3, x, [Box(1, 3, 2, 5)], [torch.full((2, 3), 0.5)])
    expected = torch.zeros(1, 1, 4, 6)
    expected[..., 1:3, 2:5] = 1.5
    assert torch.equal(out, expected)


def test_video_latents_tile_over_their_last_two_dims():
    """``[B, C, T, H, W]``: a per-pixel denoiser tiled over a 5-D latent gives the untiled result."""
    x = torch.randn(1, 2, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    out = tiling.tiled(lambda t, s: torch.tanh(t) * s, tile=12, overlap=4)(x, 2.0)
    torch.testing.assert_close(out, torch.tanh(x) * 2.0, rtol=0, atol=1e-6)


def test_weights_follow_the_tiles_device():
    x = torch.empty(1, 1, 24, 24, device="meta")
    plan = tiling.tile_plan(24, 24, 16, 8)
    assert tiling.tiled_apply(lambda t, n: t, x, plan, tiling.blend_weights(plan, 24, 24, 8)).device.type == "meta"


def test_per_frame_tensors_repeat_for_stacked_tiles_and_others_pass_through():
    sigma, cond = torch.arange(3.0), torch.arange(12.0).view(3, 2, 2)
    assert torch.equal(tiling.repeat_per_frame(sigma, 3, 2), torch.tensor([0.0, 1, 2, 0, 1, 2]))
    assert torch.equal(tiling.repeat_per_frame(cond, 3, 2), torch.cat([cond, cond]))
    assert tiling.repeat_per_frame(sigma, 3, 1) is sigma
    assert tiling.repeat_per_frame(cond[:1], 3, 2).shape == (1, 2, 2)  # one cond for every frame
    scalar = torch.tensor(0.5)
    assert tiling.repeat_per_frame(scalar, 3, 2) is scalar


def test_tile_batch_stacks_tiles_per_call_with_per_frame_args_and_keywords():
    x, sigma, cond = torch.randn(4, 2, 20, 28), torch.rand(4), torch.randn(2, 20, 28)
    calls = []

    def denoiser(t, s, c, scale=1.0):
        calls.append(t.shape[0])
        return plain_denoiser(t, s, 0.0) * scale

    out = tiling.tiled(denoiser, tile=12, overlap=4, tile_batch=3)(x, sigma, cond, scale=2.0)
    plan = tiling.tile_plan(20, 28, 12, 4)
    assert calls == [12] * (len(plan) // 3) + [4 * (len(plan) % 3)] * bool(len(plan) % 3)
    torch.testing.assert_close(out, plain_denoiser(x, sigma, 0.0) * 2.0, rtol=0, atol=1e-6)


def test_plan_preview_outlines_tiles_like_a_chessboard_and_tints_the_overlaps():
    """24 x 24 frame, tiles of 16 overlapping by 8: the middle band (rows or columns 8-15) is tinted, nothing else."""
    frame = torch.full((24, 24, 3), 0.2)
    plan = tiling.tile_plan(24, 24, 16, 8)
    preview = tiling.plan_preview(frame, plan)
    assert preview.shape == (1, 24, 24, 3) and frame.unique().tolist() == [pytest.approx(0.2)]
    tinted = (frame[0, 0] + torch.tensor(tiling.OVERLAP_COLOUR)) / 2
    blue, orange = (torch.tensor(c) for c in tiling.TILE_COLOURS)
    torch.testing.assert_close(preview[0, 4, 12], tinted)  # inside tiles 0 and 1 only, off every edge
    torch.testing.assert_close(preview[0, 12, 12], tinted)  # all four tiles
    torch.testing.assert_close(preview[0, 4, 4], frame[0, 0])  # tile 0 alone
    torch.testing.assert_close(preview[0, 20, 20], frame[0, 0])  # tile 3 alone
    # Outlines over the tint: tiles (0, 0) and (8, 8) blue, (0, 8) and (8, 0) orange (drawn last where edges cross).
    torch.testing.assert_close(preview[0, 0, 4], blue)  # top edge of tile (0, 0)
    torch.testing.assert_close(preview[0, 4, 15], blue)  # its right edge, in the tinted band
    torch.testing.assert_close(preview[0, 23, 20], blue)  # bottom edge of tile (8, 8)
    torch.testing.assert_close(preview[0, 0, 20], orange)  # top edge of tile (0, 8)
    torch.testing.assert_close(preview[0, 20, 0], orange)  # left edge of tile (8, 0)
    torch.testing.assert_close(preview[0, 23, 12], orange)  # tile (8, 0)'s bottom edge crosses tile (8, 8)'s


@pytest.mark.parametrize("mask_frames", [1, 2, 4])
def test_cut_mask_gives_each_stacked_tile_its_own_window_of_the_mask(mask_frames):
    """A mask over the whole frame, cut to two tiles, stacked tile by tile with every frame (as ``tiled`` stacks x)."""
    mask = torch.arange(mask_frames * 6 * 8, dtype=torch.float32).reshape(mask_frames, 6, 8)
    tiles = [Box(0, 4, 0, 4), Box(2, 6, 4, 8)]
    cut = tiling.cut_mask(mask, tiles, frames=4)
    full = mask.repeat(4 // mask_frames, 1, 1)
    assert torch.equal(cut, torch.cat([full[:, 0:4, 0:4], full[:, 2:6, 4:8]]))
    assert torch.equal(tiling.cut_mask(mask, tiles[1:], frames=4), mask[:, 2:6, 4:8])


def test_tile_kwargs_are_made_for_the_tiles_of_each_call():
    """``tile_kwargs`` sees the boxes of each call: a per-pixel scale map cut to each tile scales it in place."""
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    scale = torch.rand(24, 24, generator=torch.Generator().manual_seed(5))

    def scaled(t, sigma, *, scale):
        return t * scale

    def cut(kwargs, tiles, frames):
        return {"scale": torch.cat([tile.crop(kwargs["scale"]).expand(frames, 3, -1, -1) for tile in tiles])}

    for tile_batch in (1, 3):
        out = tiling.tiled(scaled, tile=12, overlap=4, tile_batch=tile_batch, tile_kwargs=cut)(x, torch.ones(2), scale=scale)
        torch.testing.assert_close(out, x * scale, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tile_size, overlap, tile_batch, message", [
    (56, 8, 1, r"^tile_size must be a multiple of 8 and at least 64 px \(got 56\)\.$"),
    (68, 8, 1, r"^tile_size must be a multiple of 8 and at least 64 px \(got 68\)\.$"),
    (64, 64, 1, r"^overlap must be at least 0 and smaller than tile_size \(got overlap 64, tile_size 64\)\.$"),
    (64, -8, 1, r"^overlap must be at least 0 and smaller than tile_size \(got overlap -8, tile_size 64\)\.$"),
    (64, 8, 0, r"^tile_batch must be at least 1 \(got 0\)\.$"),
])
def test_tiled_vcd_settings_are_checked(tile_size, overlap, tile_batch, message):
    with pytest.raises(ValueError, match=message):
        tiling.check_tiling(tile_size, overlap, tile_batch)


def test_the_smallest_settings_pass_the_check():
    tiling.check_tiling(64, 0, 1)
    tiling.check_tiling(64, 56, 1)


def test_the_pixel_plan_is_the_latent_plan_times_eight():
    plan = tiling.pixel_plan(256, 192, 128, 32)
    assert plan == [box.scaled(8) for box in tiling.tile_plan(32, 24, 16, 4)]
    assert plan[0] == Box(0, 128, 0, 128) and plan[-1].y1 == 256 and plan[-1].x1 == 192
