"""The paper's metrics for generated videos (``vcd_core.metrics``), with the encoders loaded once for many videos
(``vcd_core.encoders``: local Hugging Face folders, offline)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from vcd_core import encoders, metrics

__all__ = ["METRICS", "Evaluators", "load_evaluators", "evaluate"]

METRICS = ("dino", "clip_i", "clip_t", "temporal_consistency", "motion")


@dataclass
class Evaluators:
    """DINO and CLIP encoders (+ ArcFace, optional), and each subject's reference features once encoded."""

    dino: Callable[[torch.Tensor], torch.Tensor]
    clip_image: Callable[[torch.Tensor], torch.Tensor]
    clip_text: Callable[[list[str]], torch.Tensor]
    face: Callable | None = None
    references: dict[str, metrics.ReferenceFeatures] = field(default_factory=dict)

    def reference_features(self, subject: str, photos: list[torch.Tensor]) -> metrics.ReferenceFeatures:
        """``photos`` (``[1, H, W, C]`` batches) encoded once per ``subject``."""
        if subject not in self.references:
            self.references[subject] = metrics.encode_references(photos, self.dino, self.clip_image, self.face)
        return self.references[subject]


def load_evaluators(dino: str | os.PathLike, clip: str | os.PathLike,
                    arcface: str | os.PathLike | None = None) -> Evaluators:
    """DINO (e.g. dino-vits16) and CLIP (e.g. clip-vit-base-patch32) from local Hugging Face folders; ArcFace
    (insightface's .onnx, needs onnxruntime) for the optional face similarity."""
    clip_image, clip_text = encoders.load_clip(clip)
    return Evaluators(encoders.load_dino(dino), clip_image, clip_text,
                      encoders.load_arcface(arcface) if arcface is not None else None)


def evaluate(frames: torch.Tensor, references: list[torch.Tensor], prompt: str, evaluators: Evaluators,
             subject: str | None = None) -> dict:
    """The scores of one video ``[F, H, W, C]`` against a subject's reference photos: DINO, CLIP-I, CLIP-T,
    temporal consistency, motion (+ face similarity), and the per-frame curves. ``subject`` caches the photos'
    features for the next video of the same subject."""
    refs = evaluators.reference_features(subject, references) if subject is not None else references
    return metrics.score_video(frames, refs, prompt, evaluators.dino, evaluators.clip_image, evaluators.clip_text,
                               evaluators.face)
