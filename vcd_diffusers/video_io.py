"""Frames in and out as artists open them: mp4 (h264, through PyAV when installed) or animated WEBP/GIF, PNG
frames, images and folders of images in; every file written atomically and never over an existing one unless
``overwrite`` (``vcd_core.files``)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vcd_core.evaluate import IMAGE_SUFFIXES, read_frames as read_video_file
from vcd_core.files import write_atomic

__all__ = ["VIDEO_SUFFIXES", "default_video_suffix", "read_frames", "read_masks", "check_video", "write_video",
           "write_frames",
           "write_table", "write_json"]

VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")  # what write_video writes
READ_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif"} | IMAGE_SUFFIXES


def has_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def default_video_suffix() -> str:
    """``.mp4`` when PyAV can write it, else animated ``.webp``."""
    return ".mp4" if has_pyav() else ".webp"


def read_frames(path: str | os.PathLike, what: str = "video") -> torch.Tensor:
    """``[F, H, W, 3]`` frames in [0, 1] from a video (mp4/webm/mov/mkv need PyAV), an animated or still image,
    or a folder of images (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{what}: {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        frames = [read_frames(p, what) for p in files]
        sizes = sorted({tuple(f.shape[1:3]) for f in frames})
        if len(sizes) > 1:
            raise ValueError(f"{what}: the images in {path} have mixed sizes {sizes}; every frame needs one size.")
        return torch.cat(frames)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file or folder at {path}.")
    if path.suffix.lower() not in READ_SUFFIXES:
        raise ValueError(f"{what}: {path.name} is not a video or image ({', '.join(sorted(READ_SUFFIXES))}).")
    if path.suffix.lower() in {".mp4", ".webm", ".mov", ".mkv"} and not has_pyav():
        raise ImportError(f"{what}: reading {path.suffix} needs PyAV (pip install av); or give animated WEBP/GIF or "
                          "a folder of PNG frames.")
    try:
        return read_video_file(path)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    except OSError as error:
        raise ValueError(f"{what}: {path.name} cannot be read ({error}).") from None


def read_masks(path: str | os.PathLike, what: str = "mask") -> torch.Tensor:
    """``[F, H, W]`` masks (white = 1) from one image, an animated image, a video or a folder of images."""
    frames = read_frames(path, what)
    return frames.mean(dim=-1)


def _uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _mp4(frames: np.ndarray, fps: float):
    import av

    def write(temp: str) -> None:
        with av.open(temp, mode="w", format="mp4") as container:
            stream = container.add_stream("h264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"crf": "16"}
            for array in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode())

    return write


def _animated(frames: np.ndarray, fps: float, kind: str):
    from PIL import Image

    def write(temp: str) -> None:
        images = [Image.fromarray(array) for array in frames]
        options = {"lossless": True} if kind == "WEBP" else {}
        images[0].save(temp, format=kind, save_all=True, append_images=images[1:], duration=round(1000 / fps),
                       loop=0, **options)

    return write


def check_video(path: str | os.PathLike, height: int | None = None, width: int | None = None,
                fps: float = 8.0) -> None:
    """What ``write_video`` would refuse, checked before any work: the suffix, PyAV for mp4, h264's even width
    and height (when known), the frame rate."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"out: {path.name} must end in {', '.join(VIDEO_SUFFIXES)}.")
    if not fps > 0:
        raise ValueError(f"fps must be positive (got {fps}).")
    if suffix == ".mp4":
        if not has_pyav():
            raise ImportError("out: writing .mp4 needs PyAV (pip install av); or name the output .webp.")
        if (height is not None and height % 2) or (width is not None and width % 2):
            raise ValueError(f"out: h264 mp4 needs an even width and height (the frames are {width}x{height}); name "
                             "the output .webp instead.")


def write_video(frames: torch.Tensor, path: str | os.PathLike, fps: float = 8.0, overwrite: bool = False) -> Path:
    """Write ``[F, H, W, C]`` frames as ``.mp4`` (h264, needs PyAV and an even width and height), lossless
    animated ``.webp`` or ``.gif``, by the path's suffix."""
    path = Path(path)
    check_video(path, frames.shape[1], frames.shape[2], fps)
    arrays = _uint8(frames)
    if path.suffix.lower() == ".mp4":
        return write_atomic(path, _mp4(arrays, fps), overwrite)
    return write_atomic(path, _animated(arrays, fps, "WEBP" if path.suffix.lower() == ".webp" else "GIF"), overwrite)


def write_frames(frames: torch.Tensor, folder: str | os.PathLike, overwrite: bool = False,
                 names: Sequence[str] | None = None) -> list[Path]:
    """Each frame as ``folder/frame_00000.png``, or ``folder/NAME.png`` by ``names`` (8-bit RGB)."""
    from PIL import Image

    folder = Path(folder)
    names = names or [f"frame_{index:05d}" for index in range(len(frames))]
    paths = []
    for name, array in zip(names, _uint8(frames), strict=True):
        def write(temp: str, array=array) -> None:
            Image.fromarray(array).save(temp, format="PNG")

        paths.append(write_atomic(folder / f"{name}.png", write, overwrite))
    return paths


def write_table(rows: Sequence[dict], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``rows`` as a CSV file (columns in first-seen order)."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, lambda temp: Path(temp).write_text(text.getvalue(), newline=""), overwrite)


def write_json(value, path: str | os.PathLike, overwrite: bool = False) -> Path:
    return write_atomic(path, lambda temp: Path(temp).write_text(json.dumps(value, indent=1) + "\n"), overwrite)
