"""The paper's evaluation metrics (section 5) as pure functions over features and frames.

- DINO and CLIP-I: mean cosine of every frame's image feature with every reference image's.
- CLIP-T: mean cosine of every frame's CLIP image feature with the prompt's CLIP text feature.
- Temporal consistency ("CLIP-I Temp Consist"): mean cosine of consecutive frames' CLIP image features.
- Motion amplitude: mean absolute difference of consecutive frames (0..1 pixels, colour channels
  only), reported beside temporal consistency because a still video scores a perfect consistency.
- Both need a frame pair: for a 1-frame video they are None (undefined), which means over many
  videos skip, so a single image never counts as perfectly consistent. No frames at all is an error.
- Face similarity (optional, not in the paper): mean ArcFace cosine of frame faces vs reference faces.
Raw cosines, as in the paper. The paper names no backbones; this pack uses DINO ViT-S/16 and CLIP
ViT-B/32 by default (``vcd_core.encoders``). Features are ``[N, D]`` tensors; frames ``[F, H, W, C]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "cosine_matrix", "identity_score", "per_frame_identity", "text_score", "temporal_consistency",
    "per_pair_consistency", "motion_amplitude", "face_score", "ReferenceFeatures", "encode_references", "score_video",
]

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]
TextEncoder = Callable[[list[str]], torch.Tensor]
FaceEncoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # images -> (features, found per image)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` cosine similarities of the rows of ``a`` ``[N, D]`` and ``b`` ``[M, D]``."""
    return F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).T


def per_frame_identity(frame_features: torch.Tensor, reference_features: torch.Tensor) -> torch.Tensor:
    """Each frame's mean cosine with all reference images: ``[F]``."""
    return cosine_matrix(frame_features, reference_features).mean(dim=1)


def identity_score(frame_features: torch.Tensor, reference_features: torch.Tensor) -> float:
    """DINO / CLIP-I: mean cosine over every (frame, reference) pair."""
    return float(cosine_matrix(frame_features, reference_features).mean())


def text_score(frame_features: torch.Tensor, text_features: torch.Tensor) -> float:
    """CLIP-T: mean cosine of every frame with the prompt (``text_features`` ``[1, D]``)."""
    return float(cosine_matrix(frame_features, text_features).mean())


def _check_frames(frames: torch.Tensor) -> None:
    if frames.shape[0] == 0:
        raise ValueError("image: the video has no frames; give at least one.")


def per_pair_consistency(frame_features: torch.Tensor) -> torch.Tensor:
    """Cosine of each frame with the next: ``[F - 1]`` (empty for one frame)."""
    _check_frames(frame_features)
    return F.cosine_similarity(frame_features[:-1].double(), frame_features[1:].double(), dim=-1)


def temporal_consistency(frame_features: torch.Tensor) -> float | None:
    """CLIP-I temporal consistency: mean cosine of consecutive frames; None (undefined) for a single frame."""
    pairs = per_pair_consistency(frame_features)
    return float(pairs.mean()) if pairs.numel() else None


def motion_amplitude(frames: torch.Tensor) -> float | None:
    """Mean absolute difference of consecutive frames' colour channels (alpha ignored), in 0..1 pixel units
    (0 for a still video); None (undefined) for a single frame."""
    _check_frames(frames)
    if frames.shape[0] < 2:
        return None
    colour = frames[..., :3].double()
    return float((colour[1:] - colour[:-1]).abs().mean())


def face_score(frame_features: torch.Tensor, reference_features: torch.Tensor) -> float | None:
    """ArcFace similarity: mean cosine of every frame face vs every reference face; None without faces on either side."""
    if frame_features.shape[0] == 0 or reference_features.shape[0] == 0:
        return None
    return identity_score(frame_features, reference_features)


@dataclass(frozen=True)
class ReferenceFeatures:
    """One identity's encoded reference images (``encode_references``), to score many videos against."""

    dino: torch.Tensor
    clip: torch.Tensor
    face: torch.Tensor | None  # None: encoded without a face encoder


def encode_references(
    references: torch.Tensor | Sequence[torch.Tensor],
    dino: ImageEncoder,
    clip_image: ImageEncoder,
    face: FaceEncoder | None = None,
) -> ReferenceFeatures:
    """Encode the reference images once: one batch ``[N, H, W, C]``, or a list of batches of different sizes."""
    batches = [references] if isinstance(references, torch.Tensor) else list(references)
    if sum(batch.shape[0] for batch in batches) == 0:
        raise ValueError("references: give at least one reference image of the identity.")
    faces = torch.cat([face(batch)[0] for batch in batches]) if face is not None else None
    return ReferenceFeatures(torch.cat([dino(b) for b in batches]), torch.cat([clip_image(b) for b in batches]), faces)


def score_video(
    frames: torch.Tensor,
    references: torch.Tensor | Sequence[torch.Tensor] | ReferenceFeatures,
    prompt: str,
    dino: ImageEncoder,
    clip_image: ImageEncoder,
    clip_text: TextEncoder,
    face: FaceEncoder | None = None,
) -> dict:
    """All metrics for one video: the paper's four numbers, motion, per-frame curves for a chart, and
    with a ``face`` encoder (ArcFace, optional) the face similarity and how many frames had a face.
    ``references``: images as ``encode_references`` takes them, or its result (encoded once for many videos)."""
    _check_frames(frames)
    if not prompt.strip():
        raise ValueError("prompt: CLIP-T needs the prompt the video was generated from (it is empty).")
    refs = references if isinstance(references, ReferenceFeatures) else encode_references(references, dino, clip_image, face)
    if face is not None and refs.face is None:
        raise ValueError("references: encoded without the face encoder; pass it to encode_references too.")
    clip_frames, dino_frames = clip_image(frames), dino(frames)
    faces = {}
    if face is not None:
        face_frames, found = face(frames)
        faces = {"face_similarity": face_score(face_frames, refs.face), "face_frames": int(found.sum())}
    return {
        "dino": identity_score(dino_frames, refs.dino),
        "clip_i": identity_score(clip_frames, refs.clip),
        "clip_t": text_score(clip_frames, clip_text([prompt])),
        "temporal_consistency": temporal_consistency(clip_frames),
        "motion": motion_amplitude(frames),
        "frames": int(frames.shape[0]),
        "per_frame_dino": per_frame_identity(dino_frames, refs.dino).tolist(),
        "per_pair_consistency": per_pair_consistency(clip_frames).tolist(),
        **faces,
    }
