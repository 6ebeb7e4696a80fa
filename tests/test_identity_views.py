"""vcd_core.identity's training views on their own: the centre crop, the authors' augmentation (its distribution as
drawn, and where a point of the photo lands), the latent masks, the captions, and SD1.5's noise schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcd_core import identity
from vcd_core.identity import Augmentation, apply_augmentation, draw_augmentation

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

S = 64


def pixel_coords(size: int = S) -> torch.Tensor:
    """Pixel centres in normalised coordinates (-1..1, align_corners=False), as the warp samples them."""
    return (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1


def blob(x: float, y: float, sigma: float = 2.5) -> torch.Tensor:
    """A ``[1, S, S]`` Gaussian spot centred at normalised ``(x, y)`` (x right, y down)."""
    c = pixel_coords()
    d2 = (c[None, :] - x) ** 2 + (c[:, None] - y) ** 2
    return torch.exp(-d2 / (2 * (2 * sigma / S) ** 2))[None].float()


def centroid(mask: torch.Tensor) -> tuple[float, float]:
    c = pixel_coords()
    m = mask[0].double()
    return float((m * c[None, :]).sum() / m.sum()), float((m * c[:, None]).sum() / m.sum())


def lands_at(x: float, y: float, a: Augmentation) -> tuple[float, float]:
    """Where the docstring says photo point (x, y) lands: flipped, turned counter-clockwise on screen by the
    angle, scaled, shifted."""
    x = -x if a.flip else x
    c, s = math.cos(math.radians(a.angle)), math.sin(math.radians(a.angle))
    return a.scale * (c * x + s * y) + a.shift[0], a.scale * (-s * x + c * y) + a.shift[1]


@pytest.mark.parametrize("augmentation", [
    Augmentation(False, 0.0),
    Augmentation(True, 0.0),
    Augmentation(False, 90.0),
    Augmentation(True, -25.0, 0.6, (0.3, -0.2), "very small "),
    Augmentation(False, 12.0, 1.4, (0.1, 0.2), "close up "),
])
def test_a_point_of_the_photo_lands_where_the_augmentation_says(augmentation):
    spot = (0.35, -0.15)
    image = torch.cat([blob(*spot) + 0.5, torch.full((2, S, S), 0.25)]).clamp(max=1)
    view, mask = apply_augmentation(image, blob(*spot), augmentation)
    expected = lands_at(*spot, augmentation)
    assert centroid(mask) == pytest.approx(expected, abs=0.02)  # 0.64 px
    assert centroid(view[:1] - 0.5) == pytest.approx(expected, abs=0.02)  # the image moved with its mask


def test_at_90_degrees_the_right_of_the_photo_goes_up():
    view, mask = apply_augmentation(torch.full((3, S, S), 0.5), blob(0.5, 0.0), Augmentation(False, 90.0))
    assert centroid(mask) == pytest.approx((0.0, -0.5), abs=0.02)


def test_no_augmentation_gives_the_photo_back_exactly():
    generator = torch.Generator().manual_seed(0)
    image, mask = torch.rand(3, S, S, generator=generator), torch.rand(1, S, S, generator=generator)
    view, view_mask = apply_augmentation(image, mask, Augmentation(False, 0.0))
    torch.testing.assert_close(view, image, rtol=0, atol=1e-5)  # float rounding of the grid only
    torch.testing.assert_close(view_mask, mask, rtol=0, atol=1e-5)
    flipped, flipped_mask = apply_augmentation(image, mask, Augmentation(True, 0.0))
    torch.testing.assert_close(flipped, image.flip(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(flipped_mask, mask.flip(-1), rtol=0, atol=1e-5)


def test_zoomed_out_the_frame_is_mid_grey_and_the_mask_empty_where_no_photo_is():
    view, mask = apply_augmentation(torch.ones(3, S, S), torch.ones(1, S, S), Augmentation(False, 0.0, 0.5))
    outside = torch.ones(S, S, dtype=torch.bool)
    outside[S // 4 - 1:3 * S // 4 + 1, S // 4 - 1:3 * S // 4 + 1] = False  # the photo's half-size square and its edge
    torch.testing.assert_close(view[:, outside], torch.full((3, int(outside.sum())), 0.5), rtol=0, atol=1e-6)
    torch.testing.assert_close(mask[:, outside], torch.zeros(1, int(outside.sum())), rtol=0, atol=1e-6)
    inside = slice(S // 4 + 1, 3 * S // 4 - 1)
    torch.testing.assert_close(view[:, inside, inside], torch.ones(3, S // 2 - 2, S // 2 - 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(mask[:, inside, inside], torch.ones(1, S // 2 - 2, S // 2 - 2), rtol=0, atol=1e-6)


def test_views_stay_in_range_whatever_the_photo_holds():
    """A photo or mask with values outside [0, 1] (an HDR image, a soft mask summed twice) gives views in [0, 1]."""
    image = torch.linspace(-1, 2, S * S).reshape(1, S, S).expand(3, S, S)
    for augmentation in (Augmentation(False, 0.0), Augmentation(True, 20.0, 0.7, (0.1, 0.0))):
        view, mask = apply_augmentation(image, image[:1] * 2, augmentation)
        assert float(view.min()) == 0.0 and float(view.max()) == 1.0
        assert float(mask.min()) == 0.0 and float(mask.max()) == 1.0


def test_image_and_mask_move_together_in_every_drawn_view():
    """Channel 0 is the mask and channel 1 is white: the warp is linear, so for any view
    image[0] = mask - image[1] + 1 exactly where the mask and image went through the same flip and warp."""
    generator = torch.Generator().manual_seed(1)
    mask = torch.rand(1, S, S, generator=generator) * torch.linspace(0, 1, S)  # no symmetry to hide a wrong flip
    image = torch.cat([mask, torch.ones(1, S, S), torch.zeros(1, S, S)])
    for _ in range(24):
        view, view_mask = apply_augmentation(image, mask, draw_augmentation(generator))
        torch.testing.assert_close(view[0], view_mask[0] - view[1] + 1, rtol=0, atol=1e-5)


def many_draws() -> list[Augmentation]:
    """6000 draws (a fraction of a second), made inside each test that uses them: mutation testing counts only the
    calls a test makes itself, never a shared fixture's."""
    generator = torch.Generator().manual_seed(7)
    return [draw_augmentation(generator) for _ in range(6000)]


def test_flip_and_rotation_follow_the_paper():
    draws = many_draws()
    assert sum(a.flip for a in draws) / len(draws) == pytest.approx(0.5, abs=0.03)
    angles = np.array([a.angle for a in draws])
    assert abs(angles.mean()) < 0.5 and angles.std() == pytest.approx(10.0, abs=0.35)  # N(0, 10 deg)


def test_a_third_each_of_no_zoom_zoom_out_and_zoom_in():
    draws = many_draws()
    none = [a for a in draws if a.prefix == ""]
    out = [a for a in draws if a.prefix in identity.ZOOM_OUT_PREFIXES]
    zoom_in = [a for a in draws if a.prefix in identity.ZOOM_IN_PREFIXES]
    assert len(none) + len(out) + len(zoom_in) == len(draws)
    for group in (none, out, zoom_in):
        assert len(group) / len(draws) == pytest.approx(1 / 3, abs=0.03)
    assert all(a.scale == 1.0 and a.shift == (0.0, 0.0) for a in none)
    for group, prefixes in ((out, identity.ZOOM_OUT_PREFIXES), (zoom_in, identity.ZOOM_IN_PREFIXES)):
        for prefix in prefixes:  # both captions, about half each
            assert sum(a.prefix == prefix for a in group) / len(group) == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("kind, low, high", [("out", 0.5, 0.9), ("in", 1 / 0.9, 1 / 0.6)])
def test_zoom_scales_and_shifts_cover_their_range_and_stay_in_frame(kind, low, high):
    draws = many_draws()
    prefixes = identity.ZOOM_OUT_PREFIXES if kind == "out" else identity.ZOOM_IN_PREFIXES
    group = [a for a in draws if a.prefix in prefixes]
    scales = np.array([a.scale for a in group])
    assert low <= scales.min() < low + 0.02 and high - 0.03 < scales.max() <= high
    # zoomed out, the shrunk photo stays inside the frame; zoomed in, the crop stays inside the photo
    room = np.array([1 - a.scale if kind == "out" else 1 - 1 / a.scale for a in group])
    for axis in (0, 1):
        relative = np.array([a.shift[axis] for a in group]) / room
        assert -1 <= relative.min() < -0.95 and 0.95 < relative.max() <= 1
        assert abs(relative.mean()) < 0.05


def test_draws_come_from_the_given_generator_only():
    def draw(global_seed: int) -> list[Augmentation]:
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(3)
        return [draw_augmentation(generator) for _ in range(40)]

    assert draw(1) == draw(2)
    assert draw(1) != [draw_augmentation(torch.Generator().manual_seed(4)) for _ in range(40)]


def test_center_square_crops_the_middle():
    tall = torch.arange(10 * 4, dtype=torch.float32).reshape(1, 10, 4)
    assert torch.equal(identity.center_square(tall, 4), tall[:, 3:7])
    wide = torch.arange(4 * 11, dtype=torch.float32).reshape(1, 4, 11)
    assert torch.equal(identity.center_square(wide, 4), wide[:, :, 3:7])
    square = identity.center_square(wide, 4)
    square += 1
    assert float(wide[0, 0, 3]) == 3.0  # a copy, never a view of the photo


def test_center_square_shrinks_with_antialiasing_as_pil_does():
    from PIL import Image

    photo = torch.rand(1, 96, 64, generator=torch.Generator().manual_seed(0))
    small = identity.center_square(photo, 16)[0]
    pil = Image.fromarray(photo[0, 16:80].numpy(), mode="F").resize((16, 16), Image.Resampling.BILINEAR)
    torch.testing.assert_close(small, torch.from_numpy(np.array(pil)), rtol=0, atol=2e-3)
    grown = identity.center_square(photo, 128)
    assert grown.shape == (1, 128, 128)


def test_latent_masks_average_areas():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0, 0] = 1.0
    mask[0, 0, 4:, 4:] = 1.0
    latent = identity.latent_masks(mask, (4, 4))
    assert latent[0, 0, 0, 0] == 0.25 and torch.equal(latent[0, 0, 2:, 2:], torch.ones(2, 2))
    assert float(latent.sum()) == 4.25


def test_views_caption_each_view_with_its_prefix():
    views = identity.Views(torch.zeros(3, 3, 8, 8), torch.zeros(3, 1, 8, 8), ["", "close up ", "a far away "])
    assert views.prompts("woman") == ["photo of a {identity} woman", "close up photo of a {identity} woman",
                                      "a far away photo of a {identity} woman"]


def test_make_views_draws_each_photo_with_its_mask():
    generator = torch.Generator().manual_seed(2)
    photos = [torch.rand(3, 40, 30, generator=generator), torch.rand(3, 32, 32, generator=generator)]
    mask = (torch.rand(40, 30, generator=generator) > 0.5).float()
    views = identity.make_views(photos, [mask, None], 16, 3, True, seed=9)
    assert views.pixels.shape == (6, 3, 16, 16) and views.masks.shape == (6, 1, 16, 16) and len(views.prefixes) == 6
    replay = torch.Generator().manual_seed(9)
    first = [draw_augmentation(replay) for _ in range(3)]
    square = identity.center_square(photos[0], 16)
    view, view_mask = apply_augmentation(square, identity.center_square(mask[None], 16), first[0])
    assert torch.equal(views.pixels[0], view) and torch.equal(views.masks[0], view_mask)
    assert views.prefixes[:3] == [a.prefix for a in first]
    plain = identity.make_views(photos, [mask, None], 16, 3, False, seed=9)
    assert plain.prefixes == ["", ""] and torch.equal(plain.masks[1], torch.ones(1, 16, 16))
    assert torch.equal(plain.pixels[1], identity.center_square(photos[1], 16))


def test_sd15_noise_schedule():
    """Betas linear in sqrt space from 0.00085 to 0.012 over 1000 steps, in float64 as ComfyUI computes them;
    diffusers' float32 "scaled_linear" schedule agrees to float32 rounding."""
    from diffusers import DDPMScheduler

    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    expected = torch.from_numpy(np.cumprod(1 - betas)).float()
    alphas = identity.sd_alphas_cumprod()
    assert alphas.dtype == torch.float32 and torch.equal(alphas, expected)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear")
    torch.testing.assert_close(alphas, scheduler.alphas_cumprod, rtol=1e-5, atol=0)
    assert alphas[0] == pytest.approx(1 - 0.00085) and alphas[-1] == pytest.approx(0.0047, abs=1e-4)
