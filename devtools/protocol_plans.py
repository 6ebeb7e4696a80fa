"""Plans for ``vcd protocol`` tests: TOML written from a dict, and subjects' photo folders made from real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _tables(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_text(plan: dict) -> str:
    """TOML for a plan dict: plain keys first, then tables, then arrays of tables (the order TOML needs)."""
    lines = [f"{k} = {_value(v)}" for k, v in plan.items() if not isinstance(v, dict) and not _tables(v)]
    for key, table in plan.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    for key, tables in plan.items():
        for table in tables if _tables(tables) else ():
            lines += ["", f"[[{key}]]", *(f"{k} = {_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def write_plan(folder: Path, plan: dict, name: str = "plan.toml") -> Path:
    path = folder / name
    path.write_text(toml_text(plan))
    return path


def photos(folder: Path, count: int, size: int = 64, offset: int = 0) -> Path:
    """``count`` PNG crops of scikit-image's astronaut (a real face), ``size`` px, shifted by ``offset``."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    image = data.astronaut()
    for i in range(count):
        shift = 8 * (i + offset)
        crop = image[shift:shift + 320, 100 + shift:420 + shift]
        Image.fromarray(np.ascontiguousarray(crop)).resize((size, size)).save(folder / f"{i}.png")
    return folder


def stand_in_plan(folder: Path, settings: list[dict], seeds: tuple[int, ...] = (0, 1)) -> Path:
    """A 2 subjects (an embedding file, photos) x 2 prompts plan whose model files are empty stand-ins: for
    tests of planning, resuming and reporting with a stand-in runner."""
    photos(folder / "refs", 1, size=16)
    photos(folder / "photos", 2, size=16, offset=2)
    photos(folder / "masks", 2, size=16, offset=2)
    (folder / "m").mkdir(exist_ok=True)
    (folder / "a.safetensors").write_bytes(b"identity")
    models = {k: "m" for k in ("checkpoint", "motion_module", "dino", "clip")}
    subjects = [{"name": "a", "class_word": "woman", "embedding": "a.safetensors", "references": "refs"},
                {"name": "b", "class_word": "man", "photos": "photos", "masks": "masks", "references": "refs"}]
    return write_plan(folder, {"prompts": ["{identity} on a beach", "{identity} in a cafe"], "seeds": list(seeds),
                               "models": models, "subjects": subjects, "settings": settings})


def stand_in_scores(spec, folder: Path) -> dict:
    """A runner without models (importable by Ray workers): writes one file, scores from the run's settings."""
    (folder / "video.webp").write_bytes(spec.id.encode())
    if spec.prompt.startswith("fail"):
        raise RuntimeError(f"stand-in failure in {spec.id}")
    return {"dino": spec.options["gamma"] + spec.seed / 10, "clip_i": 0.5 if spec.options["stage"] == "t2v" else 0.6,
            "clip_t": 0.3, "temporal_consistency": 0.9 if spec.subject.name == "a" else None, "motion": 0.02}


def stand_in_training(spec, folder: Path) -> None:
    (folder / "identity.safetensors").write_text(spec.id)
