"""Scores per identity for a clip with several people: each face track against each identity's references.

For every track: its face similarity to each identity (mean cosine of its frames' face features with that
identity's reference features), and its identity-swap rate: the share of its frames whose face is closer
to another identity's references than to its own. Per identity: the paper's identity metrics (DINO, CLIP-I:
mean cosine of every frame with every reference) on the face crops of the tracks assigned to it.
Features are ``[N, D]``; frames ``[F, H, W, C]``; tracks as in ``vcd_core.tracks``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .metrics import ImageEncoder, cosine_matrix, identity_score
from .tracks import Track

__all__ = ["track_crops", "per_frame_similarity", "swap_rate", "score_tracks", "scores_per_identity"]

CROP_SCALE = 1.3  # the square crop around a face box, as a multiple of its longer side (as the ArcFace score)


def track_crops(images: torch.Tensor, track: Track, size: int = 224, scale: float = CROP_SCALE) -> tuple[torch.Tensor, list[int]]:
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


def swap_rate(similarity: torch.Tensor, identity: int) -> float | None:
    """Share of frames (rows of ``[n, K]``) closer to another identity than to ``identity``; None without frames."""
    if similarity.shape[0] == 0:
        return None
    others = torch.cat([similarity[:, :identity], similarity[:, identity + 1:]], dim=1)
    if others.shape[1] == 0:
        return 0.0
    return float((others.amax(dim=1) > similarity[:, identity]).double().mean())


def score_tracks(track_features: Sequence[torch.Tensor], references: Sequence[torch.Tensor],
                 assigned: Sequence[int | None], names: Sequence[str]) -> list[dict]:
    """Per track: its identity's name (None if unassigned), frames with a face, mean similarity to each identity by
    name, and the swap rate against its own identity (None if unassigned or without faces)."""
    if len(names) != len(references) or len(assigned) != len(track_features):
        raise ValueError(f"{len(names)} names for {len(references)} identities, {len(assigned)} assignments for "
                         f"{len(track_features)} tracks: give one of each.")
    scores = []
    for features, identity in zip(track_features, assigned):
        per_frame = per_frame_similarity(features, references)
        scores.append({
            "identity": None if identity is None else names[identity],
            "face_frames": int(features.shape[0]),
            "face_similarity": {name: (float(per_frame[:, k].mean()) if features.shape[0] else None)
                                for k, name in enumerate(names)},
            "swap_rate": None if identity is None else swap_rate(per_frame, identity),
        })
    return scores


def scores_per_identity(crops: Sequence[torch.Tensor], assigned: Sequence[int | None], references: Sequence[torch.Tensor],
                        names: Sequence[str], encoders: Mapping[str, ImageEncoder]) -> dict[str, dict]:
    """Per identity name: each encoder's identity score (e.g. ``{"dino": ..., "clip_i": ...}``) of the crops of the
    tracks assigned to it vs its reference images, and how many crops; None scores for an identity without crops."""
    if len(names) != len(references) or len(assigned) != len(crops):
        raise ValueError(f"{len(names)} names for {len(references)} identities, {len(assigned)} assignments for "
                         f"{len(crops)} tracks: give one of each.")
    result = {}
    for k, (name, refs) in enumerate(zip(names, references)):
        mine = [c for c, identity in zip(crops, assigned) if identity == k and c.shape[0]]
        frames = torch.cat(mine) if mine else None
        result[name] = {"crops": 0 if frames is None else int(frames.shape[0])}
        for metric, encode in encoders.items():
            result[name][metric] = None if frames is None else identity_score(encode(frames), encode(refs))
    return result
