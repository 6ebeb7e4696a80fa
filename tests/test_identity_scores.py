"""Scores per identity (vcd_core.identity_scores) on constructed features and images."""

import pytest
import torch
import torch.nn.functional as F

from vcd_core import identity_scores, metrics
from vcd_core.geometry import Box

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

E = torch.eye(3)  # orthonormal features: cosine 1 with itself, 0 with the others


def test_each_tracks_similarity_to_each_identity_and_its_swap_rate():
    references = [E[[0, 0]], E[[1]]]  # identity "ann" ~ e0, "bob" ~ e1
    ann_track = E[[0, 0, 0, 1]]  # one frame looks like bob
    bob_track = 0.6 * E[[1, 1]] + 0.8 * E[[2, 2]]  # cosine 0.6 with bob, 0 with ann
    stranger = E[[2]]
    frames = [[0, 2, 5, 7], [1, 2], [4], []]  # the video frames of each track's feature rows
    scores = identity_scores.score_tracks([ann_track, bob_track, stranger, E[:0]], frames, references, [0, 1, None, 1],
                                          ["ann", "bob"])
    assert scores[0] == {"identity": "ann", "face_frames": 4, "face_similarity": {"ann": 0.75, "bob": 0.25},
                         "swap_rate": 0.25, "swap_frames": [7],
                         "per_frame_similarity": {"frames": [0, 2, 5, 7], "ann": [1.0, 1.0, 1.0, 0.0],
                                                  "bob": [0.0, 0.0, 0.0, 1.0]}}
    assert scores[1]["face_similarity"] == {"ann": 0.0, "bob": pytest.approx(0.6)} and scores[1]["swap_rate"] == 0.0
    assert scores[2]["identity"] is None and scores[2]["swap_rate"] is None and scores[2]["swap_frames"] == []
    assert scores[3] == {"identity": "bob", "face_frames": 0, "face_similarity": {"ann": None, "bob": None},
                         "swap_rate": None, "swap_frames": [], "per_frame_similarity": {"frames": [], "ann": [], "bob": []}}


def test_swap_rate_counts_frames_closer_to_another_identity():
    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.1], [0.4, 0.4, 0.0], [0.2, 0.1, 0.6]])
    assert identity_scores.swap_rate(similarity, 0) == 0.5  # frames 1 and 3; a tie is no swap
    assert identity_scores.swap_rate(similarity, 2) == 0.75
    assert identity_scores.swap_rate(similarity[:, :1], 0) == 0.0  # one identity: nothing to swap with
    assert identity_scores.swap_rate(similarity[:0], 0) is None
    assert identity_scores.swapped(similarity, 0).tolist() == [False, True, False, True]
    assert identity_scores.swapped(similarity, 1).tolist() == [True, False, False, True]  # frame 2: a tie


def test_scores_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one reference face"):
        identity_scores.per_frame_similarity(E, [E[:0]])
    with pytest.raises(ValueError, match="1 names for 2 identities"):
        identity_scores.score_tracks([E], [[0, 1, 2]], [E, E], [0], ["ann"])
    with pytest.raises(ValueError, match="1 assignments and 2 frame lists for 1 tracks"):
        identity_scores.score_tracks([E], [[0], [1]], [E], [0], ["ann"])


def test_track_crops_are_squares_around_each_present_box_kept_in_the_frame():
    images = torch.arange(2 * 20 * 30 * 3, dtype=torch.float32).reshape(2, 20, 30, 3) / (2 * 20 * 30 * 3)
    track = [Box(0, 6, 3, 13), None]
    crops, frames = identity_scores.track_crops(images, track, size=10, scale=1.0)
    assert frames == [0] and crops.shape == (1, 10, 10, 3)
    assert torch.equal(crops[0], images[0, 0:10, 3:13])  # the 10 px square moved down into the frame
    big, _ = identity_scores.track_crops(images, [Box(0, 20, 0, 20), Box(5, 9, 25, 29)], size=8, scale=1.3)
    assert big.shape == (2, 8, 8, 3)  # a crop larger than the frame shrinks to its shorter side
    empty, none = identity_scores.track_crops(images, [None, None], size=8)
    assert empty.shape == (0, 8, 8, 3) and none == []


def resized(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[H, W, C]`` to ``size`` x ``size`` as track_crops resizes (bilinear, antialiased)."""
    return F.interpolate(image.movedim(-1, 0)[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].movedim(0, -1)


def test_track_crops_are_the_scaled_box_around_its_centre_moved_inside_the_frame():
    images = torch.rand(3, 20, 30, 3, generator=torch.Generator().manual_seed(0))
    track = [Box(0, 20, 0, 20), Box(5, 9, 25, 29), Box(8, 12, 26, 30)]
    crops, frames = identity_scores.track_crops(images, track, size=8, scale=1.3)
    assert frames == [0, 1, 2]
    assert torch.equal(crops[0], resized(images[0, :, 0:20], 8))  # 26 px: cut to the frame's 20 px
    assert torch.equal(crops[1], resized(images[1, 5:10, 25:30], 8))  # round(4 x 1.3) = 5 px about (7, 27)
    wide, _ = identity_scores.track_crops(images, track[2:], size=8, scale=2.0)  # as frame 0
    assert torch.equal(wide[0], images[0, 6:14, 22:30])  # 8 px about (10, 28), moved left into the frame
    bright, _ = identity_scores.track_crops(images * 3, track[2:], size=8, scale=2.0)  # as frame 0
    assert torch.equal(bright[0], (images[0, 6:14, 22:30] * 3).clamp(0, 1))



def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """A hand-checkable image encoder: each image's mean colour ``[N, 3]`` (on black, a crop's is its face's)."""
    return images[..., :3].mean(dim=(1, 2))


COLOUR = identity_scores.FaceModel("mean colour", mean_colour, mean_colour)
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
LEFT, RIGHT = Box(10, 20, 10, 20), Box(10, 20, 60, 70)


def photo(colour) -> torch.Tensor:
    return torch.tensor(colour).expand(1, 8, 8, 3).clone()


def two_people(left: list, right: list) -> torch.Tensor:
    """Black 40x90 frames with a 10 px face at LEFT and at RIGHT in each frame's colour (None: no face)."""
    video = torch.zeros(len(left), 40, 90, 3)
    for i, (a, b) in enumerate(zip(left, right)):
        for box, colour in ((LEFT, a), (RIGHT, b)):
            if colour is not None:
                video[i, box.y0:box.y1, box.x0:box.x1] = torch.tensor(colour)
    return video


def text_feature(prompts: list[str]) -> torch.Tensor:
    """CLIP-T stand-in: 'red ...' prompts point at red, others at blue."""
    return torch.tensor([RED if p.startswith("red") else BLUE for p in prompts])


def evaluate(video, found, **kw):
    return identity_scores.evaluate_identities(video, found, [photo(RED), photo(BLUE)], ["ann", "bob"],
                                               ["red ann", "blue bob"], mean_colour, mean_colour, text_feature,
                                               COLOUR, **kw)


def test_swap_frames_are_exactly_the_frames_closer_to_the_other_identity():
    """Bob (blue) on the left, ann (red) on the right; ann's face turns bluish in frames 1 and 3 (cosine 0.29 with
    ann, 0.96 with bob) and is nearly a tie in frame 2 (0.74 with ann, 0.67 with bob: no swap)."""
    ann = [RED, (0.3, 0.0, 1.0), (1.0, 0.0, 0.9), (0.3, 0.0, 1.0), RED]
    video = two_people([BLUE] * 5, ann)
    scores = evaluate(video, [[LEFT] * 5, [RIGHT] * 5])
    bob_track, ann_track = scores["tracks"]
    assert (bob_track["identity"], ann_track["identity"]) == ("bob", "ann")
    assert ann_track["swap_frames"] == [1, 3] and ann_track["swap_rate"] == pytest.approx(2 / 5)
    assert bob_track["swap_frames"] == [] and bob_track["swap_rate"] == 0.0
    cos = ann_track["per_frame_similarity"]
    assert cos["frames"] == [0, 1, 2, 3, 4]
    assert cos["ann"] == pytest.approx([1.0, 0.3 / 1.09 ** 0.5, 1 / 1.81 ** 0.5, 0.3 / 1.09 ** 0.5, 1.0])
    assert cos["bob"] == pytest.approx([0.0, 1 / 1.09 ** 0.5, 0.9 / 1.81 ** 0.5, 1 / 1.09 ** 0.5, 0.0])
    assert ann_track["face_similarity"]["ann"] == pytest.approx(sum(cos["ann"]) / 5)
    assert scores["face_model"] == "mean colour" and scores["identities"] == ["ann", "bob"]
    gone = evaluate(video, [[LEFT] * 5, [RIGHT, None, RIGHT, None, RIGHT]])  # absent where it swapped: no swap
    assert gone["tracks"][1]["swap_frames"] == [] and gone["tracks"][1]["face_frames"] == 3


def test_per_identity_metrics_are_score_video_on_that_identitys_crops_alone():
    ann = [RED, (0.3, 0.0, 1.0), (1.0, 0.2, 0.0)]
    video = two_people([BLUE, (0.0, 0.5, 1.0), BLUE], ann)
    found = [[LEFT] * 3, [RIGHT, None, RIGHT]]  # ann's face is not tracked in frame 1
    scores = evaluate(video, found)
    for track, refs, prompt, name in ((found[0], photo(BLUE), "blue bob", "bob"), (found[1], photo(RED), "red ann", "ann")):
        crops, frames = identity_scores.track_crops(video, track)
        assert scores["per_identity"][name] == metrics.score_video(crops, refs, prompt, mean_colour, mean_colour,
                                                                   text_feature)
    assert scores["per_identity"]["ann"]["frames"] == 2 and scores["per_identity"]["ann"]["clip_t"] == pytest.approx(
        (1.0 + 1 / 1.04 ** 0.5) / 2)  # its own prompt, on its two crops
    alone = video.clone()
    alone[:, LEFT.y0:LEFT.y1, LEFT.x0:LEFT.x1] = torch.tensor((0.0, 1.0, 0.0))  # bob's face changes: ann's scores do not
    assert evaluate(alone, found, assignment="by_position", picks=[1, 0])["per_identity"]["ann"] == scores["per_identity"]["ann"]
    nobody = evaluate(video, [found[0], [None] * 3])  # ann's track has no face: no scores, not an error
    assert nobody["per_identity"]["ann"] is None and nobody["tracks"][1]["identity"] is None


def test_an_identitys_part_is_its_tracks_crops_in_frame_order():
    crops = [torch.full((2, 1, 1, 3), 0.0), torch.full((2, 1, 1, 3), 1.0), torch.full((1, 1, 1, 3), 0.5)]
    frames = [[0, 4], [2, 3], [1]]
    part = identity_scores.identity_part(crops, frames, [0, None, 0], 0)
    assert part[:, 0, 0, 0].tolist() == [0.0, 0.5, 0.0]  # frames 0, 1, 4
    assert identity_scores.identity_part(crops, frames, [0, None, 0], 1) is None


def test_assignment_by_similarity_picks_the_right_identity_and_by_position_goes_left_to_right():
    video = two_people([BLUE] * 2, [RED] * 2)  # bob on the left, ann on the right
    right_first = [[RIGHT] * 2, [LEFT] * 2]
    by_face = evaluate(video, right_first)
    assert [t["identity"] for t in by_face["tracks"]] == ["ann", "bob"] and by_face["assignment"] == "by_similarity"
    by_place = evaluate(video, right_first, assignment="by_position")
    assert [t["identity"] for t in by_place["tracks"]] == ["bob", "ann"]  # left to right, whatever the faces
    assert by_place["tracks"][0]["swap_frames"] == [0, 1]  # the left face is ann's by position but looks like bob
    picked = evaluate(video, right_first, assignment="by_position", picks=[1, 0])  # ann is track 1, bob track 0
    assert [t["identity"] for t in picked["tracks"]] == ["bob", "ann"]
    empty_first = evaluate(video, [[None] * 2] + right_first, assignment="by_position")  # a track without a face
    assert [t["identity"] for t in empty_first["tracks"]] == [None, "bob", "ann"]


def test_bad_inputs_are_named():
    video = two_people([BLUE] * 2, [RED] * 2)
    found = [[LEFT] * 2, [RIGHT] * 2]
    with pytest.raises(ValueError, match=r"^picks: 3 track picks but only 2 identities have reference photos: "
                                         r"connect references_3"):
        evaluate(video, found, assignment="by_position", picks=[0, 1, 2])
    with pytest.raises(ValueError, match=r"^picks: track picks are for assignment 'by_position'"):
        evaluate(video, found, picks=[0, 1])
    with pytest.raises(ValueError, match="assignment must be one of"):
        evaluate(video, found, assignment="by_age")
    with pytest.raises(ValueError, match=r"distinct track indices below 2"):
        evaluate(video, found, assignment="by_position", picks=[2])
    blind = identity_scores.FaceModel("blind", mean_colour, lambda photos: torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"^references of ann: blind finds no face in its 1 photo\(s\)"):
        identity_scores.evaluate_identities(video, found, [photo(RED)], ["ann"], ["a"], mean_colour, mean_colour,
                                            text_feature, blind)
    with pytest.raises(ValueError, match=r"^names: \['ann', 'ann'\] and 2 prompt\(s\) for 2 identities"):
        identity_scores.evaluate_identities(video, found, [photo(RED), photo(BLUE)], ["ann", "ann"], ["a", "b"],
                                            mean_colour, mean_colour, text_feature, COLOUR)
    with pytest.raises(ValueError, match=r"^references: give at least one identity"):
        identity_scores.evaluate_identities(video, found, [], [], [], mean_colour, mean_colour, text_feature, COLOUR)


def test_tracks_from_masks_are_each_frames_mask_box_and_refuse_other_frame_counts_or_sizes():
    masks = torch.zeros(3, 40, 90)
    masks[0, 10:20, 10:20] = 1.0
    masks[2, 12:22, 30:45] = 1.0
    still = torch.zeros(1, 40, 90)
    still[0, 5:9, 6:8] = 1.0
    assert identity_scores.tracks_from_masks([masks, still, still[0]], 3, 40, 90) == [
        [Box(10, 20, 10, 20), None, Box(12, 22, 30, 45)], [Box(5, 9, 6, 8)] * 3, [Box(5, 9, 6, 8)] * 3]
    with pytest.raises(ValueError, match=r"^track_masks: mask 1 has 2 frames but the video has 3; give one mask per "
                                         r"frame \(VCD Face Tracks on the same frames\) or one for all frames\.$"):
        identity_scores.tracks_from_masks([masks, masks[:2]], 3, 40, 90)
    with pytest.raises(ValueError, match=r"^track_masks: mask 0 is \(3, 40, 80\) but the frames are 40x90; give the "
                                         r"masks of this video's faces \(VCD Face Tracks on the same frames\)\.$"):
        identity_scores.tracks_from_masks([masks[..., :80]], 3, 40, 90)


def test_track_crops_fit_narrow_frames_tiny_boxes_and_the_bottom_edge():
    images = torch.rand(1, 30, 20, 3, generator=torch.Generator().manual_seed(1))  # taller than wide
    crops, _ = identity_scores.track_crops(images, [Box(0, 30, 0, 20)], size=20, scale=1.3)
    assert torch.equal(crops[0], images[0, 5:25])  # 39 px cut to the frame's 20 px width, about the centre row 15
    pixel, _ = identity_scores.track_crops(images, [Box(5, 6, 7, 8)], size=4, scale=1.0)
    assert torch.equal(pixel[0], resized(images[0, 5:6, 7:8], 4))  # one pixel stays one pixel
    bottom, _ = identity_scores.track_crops(images, [Box(26, 30, 5, 9)], size=8, scale=2.0)
    assert torch.equal(bottom[0], images[0, 22:30, 3:11])  # moved up into the frame


def test_one_identity_has_no_swaps():
    assert identity_scores.swapped(torch.rand(3, 1), 0).tolist() == [False] * 3
    assert identity_scores.swapped(torch.rand(3, 1), 0).dtype == torch.bool


def test_mismatched_inputs_are_named_in_full():
    with pytest.raises(ValueError, match=r"^references: every identity needs at least one reference face\.$"):
        identity_scores.per_frame_similarity(E, [E[:0]])
    crops = [torch.zeros(1, 8, 8, 3)]
    with pytest.raises(ValueError, match=r"^1 names, 1 reference batches and 1 prompts; 2 assignments and 1 frame "
                                         r"lists for 1 tracks: give one of each\.$"):
        identity_scores.scores_per_identity(crops, [[0]], [0, None], [photo(RED)], ["ann"], ["red ann"], mean_colour,
                                            mean_colour, text_feature)
    for names, prompts in ((["ann", "ann"], ["a", "b"]), (["ann", "bob"], ["a"])):
        with pytest.raises(ValueError, match=r"^names: \[.*\] and \d prompt\(s\) for 2 identities; give one distinct "
                                             r"name and one prompt per identity\.$"):
            identity_scores.evaluate_identities(two_people([RED], [BLUE]), [], [photo(RED), photo(BLUE)], names,
                                                prompts, mean_colour, mean_colour, text_feature, COLOUR)
    faceless = identity_scores.FaceModel("blind", mean_colour, lambda photos: torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"^references of ann: blind finds no face in its 1 photo\(s\); give photos "
                                         r"where the face is seen from the front\.$"):
        identity_scores.evaluate_identities(two_people([RED], [BLUE]), [], [photo(RED)], ["ann"], ["red ann"],
                                            mean_colour, mean_colour, text_feature, faceless)


def test_no_tracks_or_a_track_without_faces_give_empty_scores():
    def crops_of_faces(crops):
        assert crops.shape[0] > 0, "a face model is never asked to encode no crops"
        return mean_colour(crops)

    model = identity_scores.FaceModel("strict", crops_of_faces, mean_colour)
    video = two_people([RED, RED], [None, None])
    for found in ([], [[None, None]]):
        scores = identity_scores.evaluate_identities(video, found, [photo(RED)], ["ann"], ["red ann"], mean_colour,
                                                     mean_colour, text_feature, model)
        assert scores["per_identity"] == {"ann": None} and len(scores["tracks"]) == len(found)
