"""vcd_core.geometry.Box: size, crop and containment at its edges."""

import pytest
import torch

from vcd_core.geometry import Box

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
