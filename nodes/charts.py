"""Small line charts as IMAGE tensors, drawn with PIL (the evaluation and loss-curve outputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Series = tuple[Sequence[float | None], tuple[int, int, int], str]  # values (None: a gap), RGB colour, label

BLUE, ORANGE = (40, 90, 200), (230, 120, 20)


def line_chart(series: Sequence[Series], low: float | None = None, high: float | None = None,
               width: int = 512, height: int = 256) -> torch.Tensor:
    """Plot each series over its index, broken where a value is None; the y range is ``[low, high]`` or fitted to
    the data. IMAGE ``[1, H, W, 3]``."""
    from PIL import Image, ImageDraw

    values = [v for s in series for v in s[0] if v is not None]
    low = min(values, default=0.0) if low is None else low
    high = max(values, default=1.0) if high is None else high
    span = (high - low) or 1.0
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    pad = 28

    def y_of(value: float) -> float:
        return height - pad - (min(max(value, low), high) - low) / span * (height - 2 * pad)

    draw.rectangle([pad, pad, width - pad, height - pad], outline=(180, 180, 180))
    for level in (low, low + span / 2, high):
        draw.line([pad, y_of(level), width - pad, y_of(level)], fill=(230, 230, 230))
        draw.text((2, y_of(level) - 6), f"{level:.3g}", fill=(90, 90, 90))
    for row, (points, color, label) in enumerate(series):
        step = (width - 2 * pad) / max(len(points) - 1, 1)
        runs, run = [], []
        for i, v in enumerate(list(points) + [None]):
            if v is not None:
                run.append((pad + i * step, y_of(v)))
            elif run:
                runs, run = runs + [run], []
        for xy in runs:
            if len(xy) > 1:
                draw.line(xy, fill=color, width=2)
            else:
                draw.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=color)
        draw.text((pad + 4, 4 + 10 * row), label, fill=color)
    return torch.from_numpy(np.asarray(canvas).copy()).float()[None] / 255
