"""Regions for regional conditioning (vcd_core.regions): boxes as masks, mask batches checked against the video."""

import pytest
import torch

from vcd_core import regions

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def test_box_mask_covers_the_fractions_of_the_frame():
    mask = regions.box_mask(0.5, 0.25, 0.5, 0.5, 8, 16)
    assert mask.shape == (1, 8, 16)
    assert mask[0, 2:6, 8:16].all() and mask.sum() == 4 * 8


def test_box_mask_is_cut_to_the_frame_and_refuses_an_empty_box():
    assert regions.box_mask(0.75, 0.0, 0.5, 1.0, 4, 4).sum() == 4  # the right column only
    with pytest.raises(ValueError, match="above 0"):
        regions.box_mask(0.0, 0.0, 0.0, 0.5, 4, 4)
    with pytest.raises(ValueError, match="outside the frame"):
        regions.box_mask(1.0, 0.0, 0.5, 0.5, 4, 4)


def test_a_mask_batch_must_have_one_mask_or_one_per_frame():
    assert regions.check_region_mask(torch.ones(4, 4), frames=6).shape == (1, 4, 4)
    assert regions.check_region_mask(torch.ones(6, 4, 4), frames=6).shape == (6, 4, 4)
    with pytest.raises(ValueError, match="mask has 4 frames but the latent has 6"):
        regions.check_region_mask(torch.ones(4, 4, 4), frames=6)
    assert regions.check_region_mask(torch.ones(4, 4, 4)).shape == (4, 4, 4)  # no latent: nothing to compare


def test_a_mask_must_have_the_frames_aspect_ratio():
    assert regions.check_region_mask(torch.ones(1, 32, 48), frame_size=(64, 96)).shape == (1, 32, 48)
    with pytest.raises(ValueError, match="mask is 48x48 but the frames are 96x64"):
        regions.check_region_mask(torch.ones(1, 48, 48), frame_size=(64, 96))
    with pytest.raises(ValueError, match=r"expected a MASK \[frames, height, width\]"):
        regions.check_region_mask(torch.ones(1, 1, 4, 4))


@pytest.mark.parametrize("box", [(0.0, 0.0, 0.5, 0.0), (0.0, 0.0, -0.5, 0.5)])
def test_box_mask_needs_a_width_and_a_height(box):
    with pytest.raises(ValueError, match=r"^the box needs a width and height above 0 \(got .*\)\.$"):
        regions.box_mask(*box, 4, 4)


def test_box_mask_cuts_boxes_that_start_before_the_frame():
    assert torch.equal(regions.box_mask(-0.5, -0.25, 0.75, 0.5, 4, 4)[0, :, :],
                       torch.tensor([[1.0, 0, 0, 0]] + [[0.0] * 4] * 3))  # the top-left pixel only
    for box in [(-1.0, 0.0, 0.5, 1.0), (0.0, -1.0, 1.0, 0.5)]:  # ends before the frame: left of it, above it
        with pytest.raises(ValueError, match=r"^the box \(x .*\) lies outside the frame: give fractions 0\.\.1\.$"):
            regions.box_mask(*box, 4, 4)


def test_region_mask_messages_say_what_to_change():
    with pytest.raises(ValueError, match=r"^mask has 3 frames but the latent has 6: give one mask per frame or one for "
                                         r"all frames \(it would be applied to the wrong frames otherwise\)\.$"):
        regions.check_region_mask(torch.ones(3, 4, 5), frames=6)
    with pytest.raises(ValueError, match=r"^mask is 48x40 but the frames are 96x64: the mask is stretched to the "
                                         r"frames, so give it their aspect ratio \(resize or crop it\)\.$"):
        regions.check_region_mask(torch.ones(1, 40, 48), frame_size=(64, 96))


def test_an_aspect_ratio_within_one_percent_is_accepted():
    assert regions.check_region_mask(torch.ones(1, 512, 515), frame_size=(512, 512)).shape == (1, 512, 515)
    with pytest.raises(ValueError, match="aspect ratio"):
        regions.check_region_mask(torch.ones(1, 512, 518), frame_size=(512, 512))
