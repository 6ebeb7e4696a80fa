"""Face tracks: every face of every frame linked across frames, and an identity for each track.

Linking is per frame: each live track predicts its box by constant velocity (its last box moved by its
last centre velocity times the frames since it was seen), the cost of a (track, face) pair is
``1 - IoU(prediction, face)``, and the Hungarian method (scipy, which ComfyUI itself requires) picks the
pairs; a pair below ``min_iou`` (or with no overlap) is no match. An unmatched face starts a track; a track unseen for more
than ``max_missed`` frames ends, so a face missed in a frame or two keeps its track, and faces that
cross keep theirs as long as they keep moving. A face that leaves the frame for longer comes back as a
new track (``assign_by_similarity`` can give both tracks the same identity). Boxes are ``Box`` per frame,
None where the track is absent; masks ``[T, F, H, W]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .geometry import Box
from .metrics import cosine_matrix

__all__ = [
    "iou", "link_tracks", "fill_gaps", "order_left_to_right", "track_masks",
    "assign_by_position", "assign_by_similarity", "track_similarity",
]

Track = list[Box | None]  # one entry per frame, None where the track is absent


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 for disjoint or empty boxes)."""
    inter = max(0, min(a.y1, b.y1) - max(a.y0, b.y0)) * max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    union = a.height * a.width + b.height * b.width - inter
    return inter / union if union > 0 else 0.0


def _centre(box: Box) -> np.ndarray:
    return np.array([(box.y0 + box.y1) / 2, (box.x0 + box.x1) / 2])


def _shifted(box: Box, shift: np.ndarray) -> Box:
    dy, dx = (int(round(v)) for v in shift)
    return Box(box.y0 + dy, box.y1 + dy, box.x0 + dx, box.x1 + dx)


@dataclass
class _Live:
    boxes: Track
    last: Box
    last_frame: int
    velocity: np.ndarray  # centre pixels per frame

    def predict(self, frame: int) -> Box:
        return _shifted(self.last, self.velocity * (frame - self.last_frame))


def _match(predicted: Sequence[Box], found: Sequence[Box], min_iou: float) -> list[tuple[int, int]]:
    """Hungarian pairs (prediction, face) with IoU >= ``min_iou``."""
    if not predicted or not found:
        return []
    overlap = np.array([[iou(p, f) for f in found] for p in predicted])
    rows, cols = linear_sum_assignment(1.0 - overlap)
    return [(r, c) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou and overlap[r, c] > 0]


def link_tracks(faces: Sequence[Sequence[Box]], min_iou: float = 0.1, max_missed: int = 2,
                min_frames: int = 1) -> list[Track]:
    """Tracks (one ``Box | None`` per frame) from the faces found in each frame, in order of first appearance.

    ``max_missed``: frames a track may go unseen and still continue; ``min_frames``: tracks seen in fewer
    frames are dropped (spurious detections)."""
    if min_iou < 0 or min_iou > 1:
        raise ValueError(f"min_iou must be between 0 and 1 (got {min_iou}).")
    if max_missed < 0 or min_frames < 1:
        raise ValueError(f"max_missed must be >= 0 and min_frames >= 1 (got {max_missed}, {min_frames}).")
    frames = len(faces)
    created: list[_Live] = []
    live: list[_Live] = []
    for t, found in enumerate(faces):
        live = [tr for tr in live if t - tr.last_frame <= max_missed + 1]
        pairs = _match([tr.predict(t) for tr in live], found, min_iou)
        for r, c in pairs:
            track, box = live[r], found[c]
            gap = t - track.last_frame
            track.velocity = (_centre(box) - _centre(track.last)) / gap
            track.boxes[t], track.last, track.last_frame = box, box, t
        matched = {c for _, c in pairs}
        for c, box in enumerate(found):
            if c not in matched:
                boxes: Track = [None] * frames
                boxes[t] = box
                created.append(_Live(boxes, box, t, np.zeros(2)))
                live.append(created[-1])
    return [tr.boxes for tr in created if sum(b is not None for b in tr.boxes) >= min_frames]


def fill_gaps(track: Track) -> Track:
    """Frames between two sightings get the box interpolated linearly; before the first and after the last stay None."""
    seen = [i for i, b in enumerate(track) if b is not None]
    filled = list(track)
    for a, b in zip(seen, seen[1:]):
        for i in range(a + 1, b):
            w = (i - a) / (b - a)
            filled[i] = Box(*(int(round((1 - w) * u + w * v)) for u, v in
                              zip((track[a].y0, track[a].y1, track[a].x0, track[a].x1),
                                  (track[b].y0, track[b].y1, track[b].x0, track[b].x1))))
    return filled


def _mean_x(track: Track) -> float:
    return float(np.mean([(b.x0 + b.x1) / 2 for b in track if b is not None]))


def order_left_to_right(tracks: Sequence[Track]) -> list[Track]:
    """The tracks sorted by the mean horizontal centre of their boxes."""
    return sorted(tracks, key=_mean_x)


def track_masks(tracks: Sequence[Track], height: int, width: int) -> torch.Tensor:
    """``[T, F, H, W]`` masks, 1 inside each track's box in each frame where it is present."""
    frames = len(tracks[0]) if tracks else 0
    masks = torch.zeros((len(tracks), frames, height, width))
    for k, track in enumerate(tracks):
        for i, box in enumerate(track):
            if box is not None:
                masks[k, i, max(box.y0, 0):max(box.y1, 0), max(box.x0, 0):max(box.x1, 0)] = 1.0
    return masks


def assign_by_position(tracks: Sequence[Track], identities: int, picks: Sequence[int] | None = None) -> list[int | None]:
    """The identity index of each track: the k-th track from the left gets identity k, or, with ``picks``,
    identity k goes to track ``picks[k]``. Tracks left over get None."""
    if picks is None:
        order = sorted(range(len(tracks)), key=lambda i: _mean_x(tracks[i]))
        picks = order[:identities]
    if len(picks) > identities:
        raise ValueError(f"{len(picks)} track picks for {identities} identities: give at most one track per identity.")
    if len(set(picks)) != len(picks) or any(not 0 <= p < len(tracks) for p in picks):
        raise ValueError(f"track picks {list(picks)} must be distinct track indices below {len(tracks)}.")
    assigned: list[int | None] = [None] * len(tracks)
    for identity, track in enumerate(picks):
        assigned[track] = identity
    return assigned


def track_similarity(track_features: Sequence[torch.Tensor], reference_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[T, K]``: the mean cosine of each track's face features ``[n, D]`` with each identity's references ``[m, D]``
    (NaN for a track or identity with no features)."""
    scores = torch.full((len(track_features), len(reference_features)), float("nan"), dtype=torch.float64)
    for t, faces in enumerate(track_features):
        for k, refs in enumerate(reference_features):
            if faces.shape[0] and refs.shape[0]:
                scores[t, k] = cosine_matrix(faces, refs).mean()
    return scores


def assign_by_similarity(similarity: torch.Tensor, min_similarity: float = -1.0) -> list[int | None]:
    """The identity of each track from a ``[T, K]`` similarity matrix: the Hungarian assignment of largest total
    similarity, each identity to at most one track; None for tracks left over, without features (NaN), or below
    ``min_similarity``."""
    if similarity.ndim != 2:
        raise ValueError(f"similarity must be [tracks, identities], got shape {tuple(similarity.shape)}.")
    known = torch.nan_to_num(similarity.double(), nan=-1e6).numpy()
    rows, cols = linear_sum_assignment(known, maximize=True)
    assigned: list[int | None] = [None] * similarity.shape[0]
    for r, c in zip(rows, cols):
        value = float(similarity[r, c])
        if value == value and value >= min_similarity:
            assigned[r] = int(c)
    return assigned
