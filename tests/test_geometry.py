"""vcd_core.geometry: Box size, crop, containment and scaling at its edges; outlines drawn on frames."""

import pytest
import torch

from vcd_core.geometry import Box, draw_outlines, line_width

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

OUTER = Box(2, 6, 3, 9)


def test_size_and_crop_are_the_end_exclusive_window():
    x = torch.arange(10 * 12).reshape(1, 10, 12)
    assert (OUTER.height, OUTER.width) == (4, 6)
    assert torch.equal(OUTER.crop(x), x[:, 2:6, 3:9])


def test_a_box_contains_itself_and_boxes_inside_it():
    assert OUTER.contains(OUTER)
    assert OUTER.contains(Box(3, 5, 4, 8))


@pytest.mark.parametrize("other", [Box(1, 6, 3, 9), Box(2, 7, 3, 9), Box(2, 6, 2, 9), Box(2, 6, 3, 10)])
def test_one_pixel_past_any_edge_is_not_contained(other):
    assert not OUTER.contains(other)


def test_scaled_multiplies_every_edge():
    assert OUTER.scaled(8) == Box(16, 48, 24, 72)


@pytest.mark.parametrize("width", [1, 2])
def test_outline_paints_exactly_the_box_edges_and_leaves_the_input(width):
    frames = torch.zeros(2, 10, 12, 3)
    out = draw_outlines(frames, [[OUTER], []], (1.0, 0.5, 0.25), width)
    expected = torch.zeros(10, 12, 3)
    expected[2:6, 3:9] = torch.tensor([1.0, 0.5, 0.25])
    expected[2 + width:6 - width, 3 + width:9 - width] = 0  # the inside stays
    assert torch.equal(out[0], expected) and out[1].sum() == 0 and frames.sum() == 0


def test_outline_of_a_box_thinner_than_the_line_fills_it():
    out = draw_outlines(torch.zeros(1, 8, 8, 3), [[Box(2, 3, 1, 7)]], (1.0, 1.0, 1.0), 3)
    assert out[0, 2, 1:7].min() == 1 and out.sum() == 6 * 3


@pytest.mark.parametrize("height, width, expected", [(64, 500, 1), (255, 300, 1), (256, 300, 2), (1024, 2048, 8)])
def test_line_width_follows_the_shorter_side(height, width, expected):
    assert line_width(height, width) == expected
    assert draw_outlines(torch.zeros(1, height, width, 3), [[Box(0, height, 0, width)]], (1, 1, 1))[0, :, width // 2, 0].sum() == 2 * expected
