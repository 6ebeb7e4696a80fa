"""Scores per identity (vcd_core.identity_scores) on constructed features and images."""

import pytest
import torch

from vcd_core import identity_scores
from vcd_core.geometry import Box

E = torch.eye(3)  # orthonormal features: cosine 1 with itself, 0 with the others


def test_each_tracks_similarity_to_each_identity_and_its_swap_rate():
    references = [E[[0, 0]], E[[1]]]  # identity "ann" ~ e0, "bob" ~ e1
    ann_track = E[[0, 0, 0, 1]]  # one frame looks like bob
    bob_track = 0.6 * E[[1, 1]] + 0.8 * E[[2, 2]]  # cosine 0.6 with bob, 0 with ann
    stranger = E[[2]]
    scores = identity_scores.score_tracks([ann_track, bob_track, stranger, E[:0]], references, [0, 1, None, 1],
                                          ["ann", "bob"])
    assert scores[0] == {"identity": "ann", "face_frames": 4, "face_similarity": {"ann": 0.75, "bob": 0.25},
                         "swap_rate": 0.25}
    assert scores[1]["face_similarity"] == {"ann": 0.0, "bob": pytest.approx(0.6)} and scores[1]["swap_rate"] == 0.0
    assert scores[2]["identity"] is None and scores[2]["swap_rate"] is None
    assert scores[3] == {"identity": "bob", "face_frames": 0, "face_similarity": {"ann": None, "bob": None},
                         "swap_rate": None}


def test_swap_rate_counts_frames_closer_to_another_identity():
    similarity = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.5, 0.1], [0.4, 0.4, 0.0], [0.2, 0.1, 0.6]])
    assert identity_scores.swap_rate(similarity, 0) == 0.5  # frames 1 and 3; a tie is no swap
    assert identity_scores.swap_rate(similarity, 2) == 0.75
    assert identity_scores.swap_rate(similarity[:, :1], 0) == 0.0  # one identity: nothing to swap with
    assert identity_scores.swap_rate(similarity[:0], 0) is None


def test_scores_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one reference face"):
        identity_scores.per_frame_similarity(E, [E[:0]])
    with pytest.raises(ValueError, match="1 names for 2 identities"):
        identity_scores.score_tracks([E], [E, E], [0], ["ann"])


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


def test_paper_metrics_per_identity_on_the_crops_of_its_tracks():
    def mean_colour(images):  # an "encoder" whose feature is the mean colour
        return images.mean(dim=(1, 2))

    red, blue = torch.zeros(2, 4, 4, 3), torch.zeros(3, 4, 4, 3)
    red[..., 0], blue[..., 2] = 1.0, 1.0
    references = [red[:1], blue[:1]]
    scores = identity_scores.scores_per_identity([red, blue, red[:1]], [0, 1, None], references, ["ann", "bob"],
                                                 {"dino": mean_colour})
    assert scores == {"ann": {"crops": 2, "dino": pytest.approx(1.0)}, "bob": {"crops": 3, "dino": pytest.approx(1.0)}}
    swapped = identity_scores.scores_per_identity([red, blue], [1, None], references, ["ann", "bob"], {"dino": mean_colour})
    assert swapped == {"ann": {"crops": 0, "dino": None}, "bob": {"crops": 2, "dino": pytest.approx(0.0)}}
