"""Face tracks (vcd_core.tracks) on synthetic moving boxes, identity per track, and the preview outlines."""

import pytest
import torch

from vcd_core import preview, tracks
from vcd_core.geometry import Box

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def moving(x0: int, step: int, frames: int, y0: int = 20, side: int = 24) -> list[Box]:
    """A face box of ``side`` px moving ``step`` px right per frame."""
    return [Box(y0, y0 + side, x0 + step * i, x0 + step * i + side) for i in range(frames)]


def xs(track) -> list[int | None]:
    return [None if b is None else b.x0 for b in track]


def test_crossing_faces_keep_their_tracks_whatever_the_detector_order():
    right, left = moving(40, 10, 6), moving(95, -10, 6)  # they pass each other between frames 2 and 3
    faces = [[a, b] if i % 2 else [b, a] for i, (a, b) in enumerate(zip(right, left))]
    found = tracks.link_tracks(faces)
    assert sorted(xs(t) for t in found) == sorted([xs(right), xs(left)])
    # Frame 3's other face overlaps frame 2's more than its own: only the motion prediction keeps them apart.
    assert tracks.iou(right[2], left[3]) > tracks.iou(right[2], right[3]) > 0


def test_a_face_missed_in_one_frame_keeps_its_track_and_the_gap_is_filled():
    face = moving(10, 6, 6)
    faces = [[b] for b in face]
    faces[2] = []
    [track] = tracks.link_tracks(faces)
    assert xs(track) == [10, 16, None, 28, 34, 40]
    assert tracks.fill_gaps(track)[2] == face[2] and tracks.fill_gaps(track)[0] == face[0]
    assert len(tracks.link_tracks(faces, max_missed=0)) == 2  # no frame may be missed: the face restarts


def test_a_face_gone_longer_than_max_missed_comes_back_as_a_new_track():
    face = moving(10, 0, 8)
    faces = [[b] for b in face]
    faces[2:5] = [[], [], []]
    assert len(tracks.link_tracks(faces, max_missed=2)) == 2
    assert len(tracks.link_tracks(faces, max_missed=3)) == 1


def test_new_faces_start_tracks_in_order_of_appearance_and_short_tracks_can_be_dropped():
    first, second = moving(0, 2, 5), moving(100, 0, 5)
    stray = Box(60, 70, 60, 70)
    faces = [[first[0]], [first[1]], [second[2], first[2], stray], [first[3], second[3]], [second[4], first[4]]]
    found = tracks.link_tracks(faces)
    assert [xs(t) for t in found] == [[0, 2, 4, 6, 8], [None, None, 100, 100, 100], [None, None, 60, None, None]]
    assert len(tracks.link_tracks(faces, min_frames=2)) == 2


def test_a_jump_overlapping_less_than_min_iou_starts_a_new_track():
    before, after = Box(0, 10, 0, 10), Box(0, 10, 6, 16)  # IoU 4/16
    assert tracks.iou(before, after) == 0.25
    assert len(tracks.link_tracks([[before], [after]], min_iou=0.25)) == 1
    assert len(tracks.link_tracks([[before], [after]], min_iou=0.3)) == 2


def test_link_tracks_refuses_bad_settings():
    with pytest.raises(ValueError, match="min_iou"):
        tracks.link_tracks([[]], min_iou=1.5)
    with pytest.raises(ValueError, match="max_missed"):
        tracks.link_tracks([[]], max_missed=-1)


def test_track_masks_cover_each_tracks_box_per_frame():
    track = [Box(1, 3, 2, 5), None]
    masks = tracks.track_masks([track, [None, Box(0, 1, 0, 1)]], 4, 6)
    assert masks.shape == (2, 2, 4, 6)
    assert masks[0, 0].sum() == 6 and masks[0, 0, 1:3, 2:5].all() and masks[0, 1].sum() == 0
    assert masks[1, 1, 0, 0] == 1 and masks[1].sum() == 1


def test_assignment_by_position_goes_left_to_right_or_follows_the_picks():
    middle, left, right = moving(50, 0, 3), moving(0, 1, 3), [None, Box(0, 9, 90, 99), None]
    found = [middle, left, right]
    assert tracks.assign_by_position(found, 2) == [1, 0, None]
    assert tracks.assign_by_position(found, 3) == [1, 0, 2]
    assert tracks.assign_by_position(found, 2, picks=[2, 0]) == [1, None, 0]
    assert [xs(t)[1] for t in tracks.order_left_to_right(found)] == [1, 50, 90]
    with pytest.raises(ValueError, match="distinct track indices"):
        tracks.assign_by_position(found, 2, picks=[0, 0])
    with pytest.raises(ValueError, match=r"^track picks \[3\] must be distinct track indices below 3\.$"):
        tracks.assign_by_position(found, 2, picks=[3])
    with pytest.raises(ValueError, match="at most one track per identity"):
        tracks.assign_by_position(found, 1, picks=[0, 1])


def test_assignment_by_similarity_matches_tracks_to_their_identities():
    generator = torch.Generator().manual_seed(0)
    identities = torch.randn(3, 64, generator=generator)
    references = [identities[k] + 0.3 * torch.randn(4, 64, generator=generator) for k in range(3)]
    truth = [2, 0, None, 1]  # track 2 is a stranger
    faces = [identities[k] + 0.5 * torch.randn(6, 64, generator=generator) if k is not None
             else torch.randn(5, 64, generator=generator) for k in truth]
    similarity = tracks.track_similarity(faces, references)
    assert similarity.shape == (4, 3)
    assert tracks.assign_by_similarity(similarity) == truth


def test_similarity_assignment_is_the_best_total_not_greedy():
    similarity = torch.tensor([[0.9, 0.8], [0.85, 0.1]])  # greedy takes 0.9 first and is left with 0.1
    assert tracks.assign_by_similarity(similarity) == [1, 0]
    assert tracks.assign_by_similarity(similarity, min_similarity=0.82) == [None, 0]


def test_tracks_without_faces_get_no_identity():
    similarity = tracks.track_similarity([torch.zeros(0, 8), torch.ones(2, 8)], [torch.ones(1, 8)])
    assert torch.isnan(similarity[0, 0]) and similarity[1, 0] == pytest.approx(1.0)
    assert tracks.assign_by_similarity(similarity) == [None, 0]
    assert tracks.assign_by_similarity(torch.tensor([[float("nan")]])) == [None]


def test_iou_of_boxes_that_touch_share_one_side_or_are_empty():
    assert tracks.iou(Box(0, 10, 0, 10), Box(10, 20, 5, 15)) == 0.0  # below it, overlapping in x only
    assert tracks.iou(Box(0, 10, 0, 10), Box(5, 15, 10, 20)) == 0.0  # beside it, overlapping in y only
    assert tracks.iou(Box(0, 1, 0, 1), Box(0, 1, 0, 1)) == 1.0  # a one-pixel box on itself
    assert tracks.iou(Box(3, 3, 0, 5), Box(3, 3, 0, 5)) == 0.0  # empty boxes overlap nothing


def test_faces_crossing_vertically_keep_their_tracks():
    """The crossing test turned 90 degrees: the prediction moves boxes along y too."""
    def falling(y0, step):
        return [Box(y0 + step * i, y0 + step * i + 24, 20, 44) for i in range(6)]
    down, up = falling(40, 10), falling(95, -10)
    faces = [[a, b] if i % 2 else [b, a] for i, (a, b) in enumerate(zip(down, up))]
    found = tracks.link_tracks(faces)
    assert sorted([b.y0 for b in t] for t in found) == sorted([[b.y0 for b in down], [b.y0 for b in up]])


def test_a_fast_face_missed_in_a_frame_is_predicted_across_the_gap():
    """14 px per frame with a 24 px box: after a missed frame only velocity x gap (28 px) still overlaps it."""
    face = moving(0, 14, 7)
    faces = [[b] for b in face]
    faces[2] = []
    assert tracks.iou(face[1], face[3]) == 0  # without the prediction the face would start a new track
    [track] = tracks.link_tracks(faces)
    assert xs(track) == [0, 14, None, 42, 56, 70, 84]


def test_default_max_missed_is_two_frames():
    faces = [[b] for b in moving(10, 0, 8)]
    assert len(tracks.link_tracks(faces[:2] + [[], []] + faces[4:])) == 1
    assert len(tracks.link_tracks(faces[:2] + [[], [], []] + faces[5:])) == 2


def test_min_iou_zero_or_one_is_allowed_and_disjoint_faces_never_link():
    far = [[Box(0, 10, 0, 10)], [Box(0, 10, 50, 60)]]
    assert len(tracks.link_tracks(far, min_iou=0.0)) == 2
    still = [[Box(0, 10, 0, 10)], [Box(0, 10, 0, 10)]]
    assert len(tracks.link_tracks(still, min_iou=1.0)) == 1
    with pytest.raises(ValueError, match=r"^min_iou must be between 0 and 1 \(got -0.1\)\.$"):
        tracks.link_tracks([[]], min_iou=-0.1)


def test_fill_gaps_interpolates_every_gap_and_keeps_the_sightings():
    track = [Box(0, 10, 0, 10), None, Box(4, 14, 20, 30), None, None, Box(4, 14, 50, 60), None]
    filled = tracks.fill_gaps(track)
    assert [b.x0 if b else None for b in filled] == [0, 10, 20, 30, 40, 50, None]
    assert filled[1] == Box(2, 12, 10, 20) and all(filled[i] == track[i] for i in (0, 2, 5))


def test_track_masks_of_no_tracks_and_of_boxes_off_the_frame():
    assert tracks.track_masks([], 4, 6).shape == (0, 0, 4, 6)
    off = tracks.track_masks([[Box(-5, -1, 0, 3), Box(0, 3, -5, -1), Box(-2, 2, -2, 2)]], 4, 6)
    assert off[0, :2].sum() == 0 and off[0, 2].sum() == 4 and off[0, 2, :2, :2].all()


def test_similarity_is_float64_and_unknown_rows_do_not_take_an_identity():
    similarity = tracks.track_similarity([torch.ones(2, 8)], [torch.ones(1, 8)])
    assert similarity.dtype == torch.float64
    unknown_first = torch.tensor([[float("nan")], [-0.5]])  # NaN counts as worse than any similarity
    assert tracks.assign_by_similarity(unknown_first) == [None, 0]
    assert tracks.assign_by_similarity(torch.tensor([[0.5]]), min_similarity=0.5) == [0]  # at the threshold
    with pytest.raises(ValueError, match=r"^similarity must be \[tracks, identities\], got shape \(3,\)\.$"):
        tracks.assign_by_similarity(torch.ones(3))


def test_outlines_draw_each_masks_inner_border_in_its_colour():
    images = torch.zeros(1, 12, 12, 3)
    masks = torch.zeros(2, 1, 12, 12)
    masks[0, 0, 2:9, 2:9] = 1
    masks[1, 0, 6:12, 6:12] = 1  # touches the frame's edge: no border drawn there
    drawn = preview.outline_all(images, masks, width=2)
    first, second = (torch.tensor(c) for c in preview.PALETTE[:2])
    assert torch.equal(drawn[0, 2, 5], first) and torch.equal(drawn[0, 3, 5], first)
    assert drawn[0, 4, 4].abs().sum() == 0  # inside, beyond the border
    assert torch.equal(drawn[0, 7, 10], second) and torch.equal(drawn[0, 7, 7], second)  # (7, 7): over mask 0's border
    assert drawn[0, 11, 11].abs().sum() == 0 and drawn[0, 9, 9].abs().sum() == 0
    assert images.abs().sum() == 0  # drawn on a copy


def test_track_windows_draw_faces_thin_and_windows_twice_as_thick_in_the_tracks_colour():
    images = torch.zeros(2, 384, 384, 3)  # line width 3 px (1 per 128 px)
    masks = torch.zeros(2, 2, 384, 384)
    masks[0, :, 100:140, 100:140] = 1
    masks[1, 1, 20:60, 180:220] = 1
    windows = [[Box(60, 180, 60, 180)] * 2, [None, Box(0, 100, 150, 250)]]
    drawn = preview.track_windows(images, windows, masks)
    red, blue = (torch.tensor(c) for c in preview.PALETTE[:2])
    for i in range(2):  # track 0: face outline 3 px, window outline 6 px
        assert torch.equal(drawn[i, 102, 120], red) and drawn[i, 103, 120].abs().sum() == 0
        assert torch.equal(drawn[i, 65, 120], red) and drawn[i, 66, 120].abs().sum() == 0
    assert drawn[0, 50, 150:156].abs().sum() == 0 and drawn[0, 21, 200].abs().sum() == 0  # track 1 absent in frame 0
    assert torch.equal(drawn[1, 50, 155], blue) and drawn[1, 50, 156].abs().sum() == 0
    assert torch.equal(drawn[1, 22, 200], blue) and drawn[1, 23, 200].abs().sum() == 0
    assert images.abs().sum() == 0


def test_the_palette_cycles_for_many_tracks():
    masks = torch.zeros(len(preview.PALETTE) + 1, 1, 8, 8)
    masks[-1, 0, 2:6, 2:6] = 1
    drawn = preview.outline_all(torch.zeros(1, 8, 8, 3), masks, width=1)
    assert torch.equal(drawn[0, 2, 3], torch.tensor(preview.PALETTE[0])) and drawn[0, 3, 3].abs().sum() == 0


def test_outlines_are_two_pixels_by_default_and_half_masks_are_not_faces():
    mask = torch.zeros(1, 12, 12)
    mask[0, 2:10, 2:10] = 1
    colour = torch.tensor((1.0, 0.0, 0.0))
    for drawn in (preview.outline(torch.zeros(1, 12, 12, 3), mask, colour.tolist()),
                  preview.outline_all(torch.zeros(1, 12, 12, 3), mask[None])):
        assert drawn[0, 3, 5].abs().sum() > 0 and drawn[0, 4, 5].abs().sum() == 0
    assert preview.outline(torch.zeros(1, 12, 12, 3), mask * 0.5, colour.tolist()).abs().sum() == 0
