"""Score generated videos the paper's way (subjects x prompts x seeds) from the command line.

    python -m vcd_core.evaluate --manifest runs.csv --references refs/ --dino models/vcd_eval/dino-vits16 \
        --clip models/vcd_eval/clip-vit-base-patch32 --out results/

``runs.csv`` has columns ``video,subject,prompt`` (+ optional ``seed``, ``setting``); video paths are
relative to the manifest (animated WEBP/GIF/PNG, or MP4 when PyAV is installed). ``refs/<subject>/``
holds that subject's reference photos. Writes ``scores.csv`` (one row per video) and ``summary.json``
(means per setting), each atomically, once every video is scored, and never over earlier results unless
``--overwrite``; shows progress.
Runs offline; a bad input is one line naming it (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from . import encoders, files, metrics

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
METRICS = ("dino", "clip_i", "clip_t", "temporal_consistency", "motion")


def read_frames(path: Path) -> torch.Tensor:
    """All frames of an animated image or video as ``[F, H, W, 3]`` floats; mixed frame sizes are an error."""
    if path.suffix.lower() in {".mp4", ".webm", ".mov", ".mkv"}:
        import av

        with av.open(str(path)) as container:
            arrays = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    else:
        from PIL import Image, ImageSequence

        with Image.open(path) as image:
            arrays = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    return stack_frames(arrays, str(path))


def stack_frames(arrays: list[np.ndarray], source: str) -> torch.Tensor:
    """``[F, H, W, 3]`` floats from uint8 frames, which must all have one size."""
    if not arrays:
        raise ValueError(f"{source}: no frames")
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"{source}: frames of mixed sizes {sorted(sizes)}; every frame of a video must have one size.")
    return torch.from_numpy(np.stack(arrays)).float() / 255


def read_references(folder: Path) -> list[torch.Tensor]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"references: no reference images in {folder} (put the subject's photos there).")
    return [read_frames(p)[:1] for p in files]


def mean(values: list) -> float | None:
    """Mean of the values that exist (a video without faces has no face similarity)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vcd_core.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--references", type=Path, required=True)
    parser.add_argument("--dino", type=Path, required=True, help="local HF folder of DINO ViT-S/16")
    parser.add_argument("--clip", type=Path, required=True, help="local HF folder of CLIP ViT-B/32")
    parser.add_argument("--arcface", type=Path, help="optional: insightface's ArcFace .onnx (e.g. w600k_r50.onnx); "
                        "adds face_similarity (needs onnxruntime)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace scores.csv and summary.json in --out")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return run(args)
    except (ValueError, OSError) as error:  # OSError: missing, existing or unreadable files (PIL's too)
        parser.error(str(error))


def run(args: argparse.Namespace) -> int:
    """Score every row of the manifest and write the tables; existing results are refused before any work."""
    outputs = {"scores": args.out / "scores.csv", "summary": args.out / "summary.json"}
    for path in outputs.values():
        if path.exists() and not args.overwrite:
            raise files.exists_error(path)
    with args.manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{args.manifest} lists no videos")
    missing = [column for column in ("video", "subject", "prompt") if column not in rows[0]]
    if missing:
        raise ValueError(f"{args.manifest} has no column {', '.join(missing)}: its header must name video,subject,prompt "
                         f"(+ seed, setting); it names {', '.join(rows[0])}.")
    dino = encoders.load_dino(args.dino)
    clip_image, clip_text = encoders.load_clip(args.clip)
    face = encoders.load_arcface(args.arcface) if args.arcface else None
    columns = METRICS + (("face_similarity", "face_frames") if face else ())
    references: dict[str, metrics.ReferenceFeatures] = {}  # encoded once per subject
    scored = []
    for i, row in enumerate(rows, 1):
        subject = row["subject"]
        if subject not in references:
            photos = read_references(args.references / subject)
            references[subject] = metrics.encode_references(photos, dino, clip_image, face)
        try:
            frames = read_frames(args.manifest.parent / row["video"])
            scores = metrics.score_video(frames, references[subject], row["prompt"], dino, clip_image, clip_text, face)
        except (ValueError, OSError) as error:
            raise ValueError(f"{args.manifest} row {i} ({row['video']}): {error}") from None
        scored.append({**row, "setting": row.get("setting") or "default", **{m: scores[m] for m in columns}})
        print(f"\r[{i}/{len(rows)}] {row['video']}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    fields = list(dict.fromkeys([*rows[0].keys(), "setting", *columns]))

    def write_scores(temp: str) -> None:
        with open(temp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(scored)

    by_setting = defaultdict(list)
    for row in scored:
        by_setting[row["setting"]].append(row)
    summary = {
        setting: {"videos": len(items), **{m: mean([r[m] for r in items]) for m in columns}}
        for setting, items in by_setting.items()
    }
    files.write_atomic(outputs["scores"], write_scores, args.overwrite)
    files.write_atomic(outputs["summary"], lambda temp: Path(temp).write_text(json.dumps(summary, indent=2) + "\n"),
                       args.overwrite)
    for setting, values in summary.items():
        print(setting, " ".join(f"{m}={values[m]:.3f}" for m in columns if values[m] is not None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
