"""The protocol's report: per-video scores, means per setting, and tables shaped like the paper's Tables 1-3
with the paper's numbers beside ours (markdown, csv and a bar chart drawn with PIL).

Each ablation table (gamma, stage, masked training) lists the settings that differ from one another only
in that key, holding the other two at the paper's values (gamma 0.1, stage tiled, masked) when the plan has
such settings, else at the first setting's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vcd_core import files

from ..video_io import write_table
from . import paper
from .plan import STAGES, Plan, describe
from .store import METRICS

ABLATIONS = {  # key -> (title, paper numbers by value, row label)
    "gamma": ("Table 2: 3D noise prior, gamma", paper.GAMMA, lambda v: f"gamma {v:g}"),
    "stage": ("Table 3: stages", paper.STAGES, lambda v: paper.STAGE_LABELS[v]),
    "masked": ("Identity training: masked vs unmasked loss (no paper numbers)", {},
               lambda v: "masked loss" if v else "unmasked loss"),
}


@dataclass(frozen=True)
class Row:
    table: str
    label: str
    source: str  # "ours" or "paper"
    setting: str  # our setting's name ("" for the paper's rows)
    videos: int | None
    scores: dict  # metric -> mean (None: not measured / not in the paper)


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def setting_means(plan: Plan, records: Sequence[dict | None]) -> dict[str, dict]:
    """Per setting: how many videos finished and the mean of each metric over them."""
    by_setting: dict[str, list[dict]] = {name: [] for name, _ in plan.settings}
    for spec, record in zip(plan.runs, records):
        if record is not None:
            by_setting[spec.setting].append(record["scores"])
    return {name: {"videos": len(scores), **{m: _mean([s.get(m) for s in scores]) for m in METRICS}}
            for name, scores in by_setting.items()}


def _varying_keys(plan: Plan) -> list[str]:
    """The setting keys whose value differs between the plan's settings (the columns worth showing)."""
    keys = plan.settings[0][1].keys()
    return [k for k in keys if len({repr(options[k]) for _, options in plan.settings}) > 1]


def _context_of(options: dict, key: str) -> tuple:
    return tuple(options[k] for k in paper.PAPER_SETTING if k != key)


def tables(plan: Plan, means: dict[str, dict]) -> list[Row]:
    """The rows of Tables 1-3 (and the masked-training ablation when the plan varies it), ours then the paper's."""
    rows: list[Row] = []
    main = [name for name, o in plan.settings if all(o[k] == v for k, v in paper.PAPER_SETTING.items())]
    ours = main[0] if main else plan.settings[0][0]
    title = "Table 1: VCD" + ("" if main else f" (no setting has the paper's {describe(paper.PAPER_SETTING)}; "
                                                f"ours is '{ours}')")
    rows.append(Row(title, "VCD", "ours", ours, means[ours]["videos"], {m: means[ours][m] for m in METRICS}))
    rows += [Row(title, method, "paper", "", None, dict(values)) for method, values in paper.TABLE1.items()]
    for key, (title, numbers, label) in ABLATIONS.items():
        values = {repr(o[key]) for _, o in plan.settings}
        if len(values) < 2:
            continue
        contexts = [_context_of(o, key) for _, o in plan.settings]
        wanted = _context_of(paper.PAPER_SETTING, key)
        context = wanted if wanted in contexts else contexts[0]
        chosen = [(name, o) for name, o in plan.settings if _context_of(o, key) == context]
        order = list(STAGES) if key == "stage" else sorted({o[key] for _, o in chosen})
        chosen.sort(key=lambda item: order.index(item[1][key]))
        full_title = f"{title}; {describe(dict(zip([k for k in paper.PAPER_SETTING if k != key], context)))}"
        for name, options in chosen:
            value = options[key]
            rows.append(Row(full_title, label(value), "ours", name, means[name]["videos"],
                            {m: means[name][m] for m in METRICS}))
            if value in numbers:
                rows.append(Row(full_title, label(value), "paper", "", None, dict(numbers[value])))
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def write_replacing(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, replacing the last report's copy."""
    files.write_atomic(path, lambda temp: Path(temp).write_bytes(data), overwrite=True)


def per_video(plan: Plan, records: Sequence[dict | None]) -> list[dict]:
    """One row per finished video: what it was (subject, prompt, seed, setting and the keys that vary) and its scores."""
    varying = _varying_keys(plan)
    rows = []
    for spec, record in zip(plan.runs, records):
        if record is None:
            continue
        rows.append({"id": spec.id, "subject": spec.subject.name, "prompt": spec.prompt, "seed": spec.seed,
                     "setting": spec.setting, **{k: spec.options[k] for k in varying},
                     **{m: record["scores"][m] for m in METRICS}, "seconds": record["seconds"],
                     "outputs": " ".join(record["outputs"])})
    return rows


def markdown(plan: Plan, records: Sequence[dict | None], means: dict[str, dict], rows: list[Row]) -> str:
    subjects = len({r.subject.name for r in plan.runs})
    prompts = len({r.prompt for r in plan.runs})
    seeds = len({r.seed for r in plan.runs})
    done = sum(r is not None for r in records)
    columns = [paper.LABELS[m] for m in METRICS]
    lines = [f"# vcd protocol: {Path(plan.source).name}", "",
             f"{done} of {len(plan.runs)} videos finished ({subjects} subjects x {prompts} prompts x {seeds} seeds x "
             f"{len(plan.settings)} settings). Scores are raw cosine similarities averaged over the finished "
             "videos; motion is the mean absolute frame difference (the paper has none). The paper: 24 subjects x "
             "25 prompts x 4 seeds, its encoders unnamed. A score a video lacks (no faces, one frame) is left out of "
             "its mean."]
    title = None
    for row in rows:
        if row.table != title:
            title = row.table
            lines += ["", f"## {title}", "", "| | | videos | " + " | ".join(columns) + " |",
                      "|---|---|---|" + "---|" * len(columns)]
        who = f"ours ('{row.setting}')" if row.source == "ours" else "paper"
        videos = "" if row.videos is None else str(row.videos)
        lines.append(f"| {row.label} | {who} | {videos} | " + " | ".join(_fmt(row.scores.get(m)) for m in METRICS)
                     + " |")
    varying = _varying_keys(plan)
    lines += ["", "## Every setting", "", "| setting | " + "".join(f"{k} | " for k in varying) + "videos | "
              + " | ".join(columns) + " |", "|---|" + "---|" * (len(varying) + 1 + len(columns))]
    for name, options in plan.settings:
        lines.append(f"| {name} | " + "".join(f"{options[k]} | " for k in varying) + f"{means[name]['videos']} | "
                     + " | ".join(_fmt(means[name][m]) for m in METRICS) + " |")
    return "\n".join(lines) + "\n"


OURS_COLOUR, PAPER_COLOUR = (40, 90, 200), (230, 120, 20)


def chart(rows: list[Row], cell: tuple[int, int] = (240, 170)) -> bytes:
    """PNG: one panel per table and paper metric, a pair of bars (ours blue, paper orange) per row label."""
    from PIL import Image, ImageDraw

    titles = list(dict.fromkeys(r.table for r in rows))
    width, height = cell
    canvas = Image.new("RGB", (width * len(paper.PAPER_METRICS), height * len(titles) + 20), "white")
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([6, 6, 16, 14], fill=OURS_COLOUR)
    draw.text((20, 4), "ours", fill=OURS_COLOUR)
    draw.rectangle([66, 6, 76, 14], fill=PAPER_COLOUR)
    draw.text((80, 4), "paper", fill=PAPER_COLOUR)
    for t, title in enumerate(titles):
        table_rows = [r for r in rows if r.table == title]
        labels = list(dict.fromkeys(r.label for r in table_rows))
        for c, metric in enumerate(paper.PAPER_METRICS):
            x0, y0 = c * width, 20 + t * height
            draw.text((x0 + 4, y0 + 2), f"{title.split(':')[0]} · {paper.LABELS[metric]}", fill=(0, 0, 0))
            bottom, top = y0 + height - 22, y0 + 18
            for level in (0.5, 1.0):  # the scale: bars run from 0 to 1
                y = bottom - (bottom - top) * level
                draw.line([x0 + 22, y, x0 + width - 4, y], fill=(225, 225, 225))
                draw.text((x0 + 4, y - 6), f"{level:g}", fill=(120, 120, 120))
            draw.line([x0 + 22, bottom, x0 + width - 4, bottom], fill=(150, 150, 150))
            slot = (width - 26) / max(len(labels), 1)
            for i, label in enumerate(labels):
                left = x0 + 22 + i * slot
                for j, (source, colour) in enumerate((("ours", OURS_COLOUR), ("paper", PAPER_COLOUR))):
                    value = next((r.scores.get(metric) for r in table_rows if r.label == label and r.source == source),
                                 None)
                    if value is None:
                        continue
                    bar = top + (bottom - top) * (1 - min(max(value, 0.0), 1.0))
                    bx = left + slot * (0.15 + 0.35 * j)
                    draw.rectangle([bx, bar, bx + slot * 0.33, bottom], fill=colour)
                draw.text((left + 2, bottom + 4), label[:int(slot / 6)], fill=(60, 60, 60))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def write_report(plan: Plan, records: Sequence[dict | None], out: Path) -> dict[str, Path]:
    """Write scores.csv, summary.csv, summary.md, tables.csv and summary.png into ``out`` (each atomically; they
    are derived from the run records, so each report replaces the last). Returns the paths by kind."""
    means = setting_means(plan, records)
    rows = tables(plan, means)
    videos = per_video(plan, records)
    varying = _varying_keys(plan)
    summary = [{"setting": name, **{k: o[k] for k in varying}, **means[name]} for name, o in plan.settings]
    table_rows = [{"table": r.table, "row": r.label, "source": r.source, "setting": r.setting, "videos": r.videos,
                   **{m: r.scores.get(m) for m in METRICS}} for r in rows]
    paths = {"scores": out / "scores.csv", "summary": out / "summary.csv", "markdown": out / "summary.md",
             "tables": out / "tables.csv", "chart": out / "summary.png"}
    write_table(videos, paths["scores"], overwrite=True)
    write_table(summary, paths["summary"], overwrite=True)
    write_table(table_rows, paths["tables"], overwrite=True)
    write_replacing(paths["markdown"], markdown(plan, records, means, rows).encode())
    write_replacing(paths["chart"], chart(rows))
    return paths
