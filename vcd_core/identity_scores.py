"""Scores per identity for a clip with several people: each face track against each identity's references.

What each number is computed on (``evaluate_identities``):

- A track's *face crops*: in every frame where the track has a box, the square ``CROP_SCALE`` x the box's longer
  side around it (kept inside the frame), resized to ``CROP_SIZE``. Frames where the track is absent have none.
- Per track, *face similarity* to each identity: the mean cosine of its crops' face features with that identity's
  reference features, in the space of a ``FaceModel``: ArcFace (crops as they are vs the largest face found in each
  reference photo), or without it DINO (crops vs the whole reference photos).
- Per track, the *swap rate*: the share of its face frames whose per-frame similarity (mean over the references) to
  some other identity is higher than to its assigned one (a tie is no swap); ``swap_frames`` lists those frames.
- Per identity, the paper's metrics: ``metrics.score_video`` on the identity's *part* (the face crops of the
  track(s) assigned to it, in frame order) vs its reference photos as given, with its prompt. Temporal consistency
  and motion therefore pair consecutive frames in which that face is seen, inside a crop that follows the face.

Assignment of identities to tracks: by position (``tracks.assign_by_position``: left to right, or the track the
artist picks for each identity) or by face similarity (Hungarian, ``tracks.assign_by_similarity``).
Features are ``[N, D]``; frames ``[F, H, W, C]``; tracks as in ``vcd_core.tracks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from . import tracks as tracking
from .face import mask_box
from .metrics import ImageEncoder, TextEncoder, cosine_matrix, score_video
from .tracks import Track

__all__ = [
    "CROP_SCALE", "CROP_SIZE", "ASSIGNMENTS", "FaceModel", "tracks_from_masks", "track_crops", "per_frame_similarity",
    "swapped", "swap_rate", "score_tracks", "identity_part", "scores_per_identity", "assign", "evaluate_identities",
]

CROP_SCALE = 1.3  # the square crop around a face box, as a multiple of its longer side (as the ArcFace score)
CROP_SIZE = 224  # crops are resized to this side before the encoders' own preprocessing
ASSIGNMENTS = ("by_similarity", "by_position")


@dataclass(frozen=True)
class FaceModel:
    """The space face similarity is measured in: ``crops`` encodes face crops as they are, ``photos`` encodes
    reference photos (``[m, D]``; a face model may drop photos where it finds no face). ``name`` is shown."""

    name: str
    crops: ImageEncoder
    photos: ImageEncoder


def tracks_from_masks(masks: Sequence[torch.Tensor], frames: int, height: int, width: int) -> list[Track]:
    """One track per ``[F, H, W]`` mask (or ``[1, H, W]`` / ``[H, W]`` for every frame): its bounding box per frame,
    None where the mask is empty. A mask of another frame count or size than the ``frames`` x ``height`` x ``width``
    video is an error naming it."""
    result = []
    for k, mask in enumerate(masks):
        mask = mask[None] if mask.ndim == 2 else mask
        if mask.ndim != 3 or tuple(mask.shape[1:]) != (height, width):
            raise ValueError(f"track_masks: mask {k} is {tuple(mask.shape)} but the frames are {height}x{width}; "
                             "give the masks of this video's faces (VCD Face Tracks on the same frames).")
        if mask.shape[0] not in (1, frames):
            raise ValueError(f"track_masks: mask {k} has {mask.shape[0]} frames but the video has {frames}; give "
                             "one mask per frame (VCD Face Tracks on the same frames) or one for all frames.")
        result.append([mask_box(mask[min(i, mask.shape[0] - 1)]) for i in range(frames)])
    return result


def track_crops(images: torch.Tensor, track: Track, size: int = CROP_SIZE, scale: float = CROP_SCALE
                ) -> tuple[torch.Tensor, list[int]]:
    """Square crops ``[n, size, size, C]`` around the track's box in each frame where it is present, and those frames.

    A crop is ``scale`` x the box's longer side, moved (not shrunk) to stay inside the frame where it fits."""
    height, width = images.shape[1:3]
    crops, frames = [], []
    for i, box in enumerate(track):
        if box is None:
            continue
        side = min(max(1, round(max(box.height, box.width) * scale)), height, width)
        cy, cx = (box.y0 + box.y1) // 2, (box.x0 + box.x1) // 2
        y0 = min(max(cy - side // 2, 0), height - side)
        x0 = min(max(cx - side // 2, 0), width - side)
        crop = images[i, y0:y0 + side, x0:x0 + side].movedim(-1, 0)[None].float()
        if side != size:
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crops.append(crop[0].movedim(0, -1).clamp(0, 1))
        frames.append(i)
    empty = torch.zeros((0, size, size, images.shape[-1]))
    return (torch.stack(crops) if crops else empty), frames


def per_frame_similarity(frame_features: torch.Tensor, references: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[n, K]``: each frame's mean cosine with each identity's reference features."""
    if not references or any(r.shape[0] == 0 for r in references):
        raise ValueError("references: every identity needs at least one reference face.")
    return torch.stack([cosine_matrix(frame_features, refs).mean(dim=1) for refs in references], dim=1)


def swapped(similarity: torch.Tensor, identity: int) -> torch.Tensor:
    """``[n]`` bool: the rows of ``[n, K]`` closer to another identity than to ``identity`` (a tie is no swap)."""
    others = torch.cat([similarity[:, :identity], similarity[:, identity + 1:]], dim=1)
    if others.shape[1] == 0:
        return torch.zeros(similarity.shape[0], dtype=torch.bool)
    return others.amax(dim=1) > similarity[:, identity]


def swap_rate(similarity: torch.Tensor, identity: int) -> float | None:
    """Share of frames (rows of ``[n, K]``) closer to another identity than to ``identity``; None without frames."""
    if similarity.shape[0] == 0:
        return None
    return float(swapped(similarity, identity).double().mean())


def score_tracks(track_features: Sequence[torch.Tensor], frames: Sequence[Sequence[int]],
                 references: Sequence[torch.Tensor], assigned: Sequence[int | None], names: Sequence[str]) -> list[dict]:
    """Per track: its identity's name (None if unassigned), frames with a face, mean similarity to each identity by
    name, the swap rate against its own identity and the video frames (``frames``: each feature row's) that swap
    (None and [] if unassigned or without faces), and each face frame's similarity to each identity."""
    if len(names) != len(references) or not len(assigned) == len(track_features) == len(frames):
        raise ValueError(f"{len(names)} names for {len(references)} identities, {len(assigned)} assignments and "
                         f"{len(frames)} frame lists for {len(track_features)} tracks: give one of each.")
    scores = []
    for features, seen, identity in zip(track_features, frames, assigned):
        per_frame = per_frame_similarity(features, references)
        swaps = [] if identity is None else [f for f, s in zip(seen, swapped(per_frame, identity).tolist()) if s]
        scores.append({
            "identity": None if identity is None else names[identity],
            "face_frames": int(features.shape[0]),
            "face_similarity": {name: (float(per_frame[:, k].mean()) if features.shape[0] else None)
                                for k, name in enumerate(names)},
            "swap_rate": None if identity is None else swap_rate(per_frame, identity),
            "swap_frames": swaps,
            "per_frame_similarity": {"frames": list(seen),
                                     **{name: per_frame[:, k].tolist() for k, name in enumerate(names)}},
        })
    return scores


def identity_part(crops: Sequence[torch.Tensor], frames: Sequence[Sequence[int]], assigned: Sequence[int | None],
                  identity: int) -> torch.Tensor | None:
    """The face crops of the tracks assigned to ``identity``, in frame order (``[n, S, S, C]``); None without any."""
    mine = [(f, c) for track, seen, k in zip(crops, frames, assigned) if k == identity for f, c in zip(seen, track)]
    if not mine:
        return None
    mine.sort(key=lambda pair: pair[0])
    return torch.stack([c for _, c in mine])


def scores_per_identity(crops: Sequence[torch.Tensor], frames: Sequence[Sequence[int]], assigned: Sequence[int | None],
                        references: Sequence[torch.Tensor], names: Sequence[str], prompts: Sequence[str],
                        dino: ImageEncoder, clip_image: ImageEncoder, clip_text: TextEncoder) -> dict[str, dict | None]:
    """Per identity name: ``score_video`` of its part (``identity_part``) vs its reference photos with its prompt;
    None for an identity that no track with a face is assigned to."""
    if not len(names) == len(references) == len(prompts) or not len(assigned) == len(crops) == len(frames):
        raise ValueError(f"{len(names)} names, {len(references)} reference batches and {len(prompts)} prompts; "
                         f"{len(assigned)} assignments and {len(frames)} frame lists for {len(crops)} tracks: "
                         "give one of each.")
    result = {}
    for k, (name, refs, prompt) in enumerate(zip(names, references, prompts)):
        part = identity_part(crops, frames, assigned, k)
        result[name] = None if part is None else score_video(part, refs, prompt, dino, clip_image, clip_text)
    return result


def assign(found: Sequence[Track], similarity: torch.Tensor, assignment: str,
           picks: Sequence[int] | None = None) -> list[int | None]:
    """The identity index of each track: ``by_similarity`` (Hungarian over the ``[T, K]`` similarity) or
    ``by_position`` (identity k is the k-th track from the left among those with a face, or track ``picks[k]``)."""
    identities = similarity.shape[1]
    if assignment == "by_similarity":
        if picks:
            raise ValueError("picks: track picks are for assignment 'by_position'; clear them or switch the assignment.")
        return tracking.assign_by_similarity(similarity)
    if assignment != "by_position":
        raise ValueError(f"assignment must be one of {ASSIGNMENTS} (got {assignment!r}).")
    if picks:
        if len(picks) > identities:
            raise ValueError(f"picks: {len(picks)} track picks but only {identities} identities have reference "
                             f"photos: connect references_{identities + 1} or pick fewer tracks.")
        return tracking.assign_by_position(found, identities, picks)
    present = [t for t, track in enumerate(found) if any(b is not None for b in track)]
    order = tracking.assign_by_position([found[t] for t in present], identities)
    assigned: list[int | None] = [None] * len(found)
    for t, identity in zip(present, order):
        assigned[t] = identity
    return assigned


def evaluate_identities(image: torch.Tensor, found: Sequence[Track], references: Sequence[torch.Tensor],
                        names: Sequence[str], prompts: Sequence[str], dino: ImageEncoder, clip_image: ImageEncoder,
                        clip_text: TextEncoder, face: FaceModel, assignment: str = "by_similarity",
                        picks: Sequence[int] | None = None) -> dict:
    """Scores per track and per identity of one video (see the module docstring for what each is computed on):
    ``{"face_model", "assignment", "identities", "tracks": [...], "per_identity": {name: ...}}``."""
    if not references:
        raise ValueError("references: give at least one identity's reference photos.")
    if len(names) != len(references) or len(prompts) != len(references) or len(set(names)) != len(names):
        raise ValueError(f"names: {list(names)} and {len(prompts)} prompt(s) for {len(references)} identities; "
                         "give one distinct name and one prompt per identity.")
    reference_features = []
    for name, photos in zip(names, references):
        features = face.photos(photos)
        if features.shape[0] == 0:
            raise ValueError(f"references of {name}: {face.name} finds no face in its {photos.shape[0]} photo(s); "
                             "give photos where the face is seen from the front.")
        reference_features.append(features)
    crops, frames = zip(*(track_crops(image, track) for track in found)) if found else ((), ())
    track_features = [face.crops(c) if c.shape[0] else torch.zeros(0, reference_features[0].shape[1]) for c in crops]
    similarity = tracking.track_similarity(track_features, reference_features)
    assigned = assign(found, similarity, assignment, picks)
    return {
        "face_model": face.name,
        "assignment": assignment,
        "identities": list(names),
        "tracks": score_tracks(track_features, frames, reference_features, assigned, names),
        "per_identity": scores_per_identity(crops, frames, assigned, references, names, prompts,
                                            dino, clip_image, clip_text),
    }
