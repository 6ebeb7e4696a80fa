"""Scoring throughput with the tiny encoders: frames per second, batched vs one frame at a time.

    bash scripts/bench.sh metrics
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vcd_core import encoders, metrics  # noqa: E402
from devtools.tiny_encoders import save_tiny_clip, save_tiny_dino  # noqa: E402

FRAMES = 64


def main() -> None:
    tokenizer = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        dino_dir, clip_dir = save_tiny_dino(Path(tmp) / "dino"), save_tiny_clip(Path(tmp) / "clip", tokenizer)
        frames = torch.rand(FRAMES, 256, 256, 3, generator=torch.Generator().manual_seed(0))
        refs = frames[:4]
        results = {}
        for label, batch in (("batched (16)", 16), ("one at a time", 1)):
            dino = encoders.load_dino(dino_dir, batch_size=batch)
            clip_image, clip_text = encoders.load_clip(clip_dir, batch_size=batch)
            start = time.perf_counter()
            metrics.score_video(frames, refs, "a photo of a person", dino, clip_image, clip_text)
            results[label] = FRAMES / (time.perf_counter() - start)
    print(f"{FRAMES} frames of 256 px, tiny ViT/CLIP encoders, CPU")
    for label, fps in results.items():
        print(f"{label:<14} {fps:8.1f} frames/s  ratio {fps / results['one at a time']:.2f}")


if __name__ == "__main__":
    main()
