"""The protocol's plan: a TOML file naming subjects, prompts, seeds and settings, expanded into runs.

    prompts = ["a photo of {identity} on the beach", "{identity} reading a book in a cafe"]
    seeds = [0, 1, 2, 3]            # (top-level keys go before the first [table], as TOML wants)

    [models]                        # the files every run uses; paths are relative to the plan
    checkpoint = "models/realisticVisionV51.safetensors"
    motion_module = "models/mm_sd_v15_v2.ckpt"
    dino = "models/vcd_eval/dino-vits16"
    clip = "models/vcd_eval/clip-vit-base-patch32"

    [defaults]                      # settings every run starts from (unset: the paper's)
    steps = 20

    [[subjects]]
    name = "mona"
    class_word = "woman"
    embedding = "embeddings/mona.pt"      # or photos = "photos/mona" (trained first, once per training setting)
                                          # + masks = "masks/mona" (white = person, named like the photos)
    references = "refs/mona"              # the photos DINO and CLIP-I compare with

    [[settings]]                    # one entry per column of the ablation; name is optional
    name = "gamma 0"
    gamma = 0.0

Every subject x prompt x seed x setting is one run (one video). Runs and trained identities get ids that
depend only on what they compute (plan-relative paths, prompt text, seed, resolved settings and the bytes of
the embedding or photos), so adding seeds or settings to a plan keeps the runs it already finished.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package (the diffusers extra installs it)
    import tomli as tomllib

from vcd_core import tiling

from ..commands import mask_for

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
STAGES = ("t2v", "face", "tiled")  # T2V VCD; + Face VCD; + Face VCD and Tiled VCD


class PlanError(ValueError):
    """A plan that cannot run; the message names the file and the entry."""


@dataclass(frozen=True)
class Setting:
    """One key a plan may set: its default (the paper's), a check, and whether it changes identity training."""

    default: Any
    check: Callable[[Any], str | None]  # returns what is wrong, or None
    help: str
    training: bool = False


def _number(low: float, high: float, integer: bool = False, low_open: bool = False) -> Callable[[Any], str | None]:
    kinds = (int,) if integer else (int, float)
    what = "an integer" if integer else "a number"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, kinds):
            return f"must be {what}"
        if value < low or value > high or (low_open and value == low):
            return f"must be in {'(' if low_open else '['}{low:g}, {high:g}]"
        return None

    return check


def _multiple_of_8(value: Any) -> str | None:
    return _number(8, 4096, integer=True)(value) or (None if value % 8 == 0 else "must be a multiple of 8")


def _choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


SETTINGS: dict[str, Setting] = {
    "gamma": Setting(0.1, _number(0, 1), "T2V's 3D noise prior: correlation between frames (0 = i.i.d.)"),
    "stage": Setting("tiled", _choice(STAGES), "how far the pipeline goes: t2v, face (+Face VCD), tiled (+Tiled VCD)"),
    "frames": Setting(16, _number(1, 32, integer=True), "video length (up to 32: SD1.5 motion modules' reach)"),
    "width": Setting(512, _multiple_of_8, "T2V width in pixels"),
    "height": Setting(512, _multiple_of_8, "T2V height in pixels"),
    "steps": Setting(20, _number(1, 1000, integer=True), "T2V sampling steps"),
    "cfg": Setting(8.0, _number(0, 100), "classifier-free guidance scale"),
    "negative_prompt": Setting("", _text, "negative prompt of every stage"),
    "face_denoise": Setting(0.8, _number(0, 1, low_open=True), "Face VCD denoise"),
    "face_steps": Setting(20, _number(1, 1000, integer=True), "Face VCD steps"),
    "upscale": Setting(2.0, _number(1, 8, low_open=True), "Tiled VCD upscale factor"),
    "tiled_denoise": Setting(0.2, _number(0, 1, low_open=True), "Tiled VCD denoise"),
    "tiled_steps": Setting(20, _number(1, 1000, integer=True), "Tiled VCD steps"),
    "tile_size": Setting(512, _multiple_of_8, "Tiled VCD tile size in pixels"),
    "tile_overlap": Setting(64, _number(0, 4096, integer=True), "Tiled VCD tile overlap in pixels"),
    "masked": Setting(True, _boolean, "identity training loss masked to the subject (false: whole photo)", training=True),
    "train_steps": Setting(200, _number(1, 100000, integer=True), "identity training steps", training=True),
    "train_resolution": Setting(512, _multiple_of_8, "identity training resolution", training=True),
}
MODEL_KEYS = {
    "checkpoint": "original single-file SD1.5 checkpoint (.safetensors or .ckpt)",
    "motion_module": "AnimateDiff motion module (mm_sd_v15_v2.ckpt)",
    "dino": "Hugging Face folder of the DINO encoder (DINO and its per-video score)",
    "clip": "Hugging Face folder of the CLIP encoder (CLIP-I, CLIP-T, temporal consistency)",
    "config_dir": "folder of component configs for models of another size (default: SD1.5's, shipped)",
    "upscale_model": "ESRGAN-type upscaler run before Tiled VCD (e.g. 4x-UltraSharp.pth; default: a bicubic resize)",
}
REQUIRED_MODELS = ("checkpoint", "motion_module", "dino", "clip")
SUBJECT_KEYS = {"name", "class_word", "embedding", "photos", "masks", "references"}
TOP_KEYS = {"prompts", "seeds", "models", "defaults", "subjects", "settings"}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _file_digest(paths: list[Path]) -> str:
    """SHA-256 over the names and bytes of small input files (embeddings, photos), so edited inputs re-run."""
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def slug(text: str) -> str:
    """A file-name-safe, readable piece of an id."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "x"


@dataclass(frozen=True)
class Subject:
    name: str
    class_word: str
    references: str  # absolute folder of reference photos
    embedding: str | None = None  # absolute embedding file, or None when trained from photos
    photos: str | None = None  # absolute folder of training photos
    masks: str | None = None  # absolute folder of their subject masks (white = person), named like the photos
    inputs_digest: str = ""  # of the embedding or the photos: part of every id that uses them


@dataclass(frozen=True)
class IdentitySpec:
    """One identity to train: a photos subject under one set of training settings."""

    id: str
    subject: Subject
    options: dict  # the training settings (SETTINGS with training=True)
    models: dict  # absolute model paths


@dataclass(frozen=True)
class RunSpec:
    """One video: generate it, refine it up to its stage, score it."""

    id: str
    subject: Subject
    prompt: str  # with {identity} where the person goes
    prompt_index: int
    seed: int
    setting: str  # the setting's name
    options: dict  # every SETTINGS key, resolved
    models: dict  # absolute model paths
    identity_id: str | None = None  # the IdentitySpec this run's embedding comes from, if trained
    embedding: str | None = None  # the identity file: the subject's, or (when running) the trained one

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    source: str  # the plan file
    runs: list[RunSpec]
    identities: list[IdentitySpec]
    settings: list[tuple[str, dict]]  # (name, resolved settings) in plan order


def _fail(source: Path, entry: str, problem: str) -> PlanError:
    return PlanError(f"{source}: {entry}: {problem}")


def _unknown(source: Path, entry: str, key: str, known) -> PlanError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    if key in TOP_KEYS and entry != "top level":
        hint += "; top-level keys such as prompts and seeds must come before the first [table]"
    return _fail(source, entry, f"unknown key '{key}' (known: {', '.join(sorted(known))}){hint}")


def _check_settings(source: Path, entry: str, values: dict) -> None:
    for key, value in values.items():
        if key not in SETTINGS:
            raise _unknown(source, entry, key, SETTINGS)
        problem = SETTINGS[key].check(value)
        if problem:
            raise _fail(source, entry, f"{key} = {value!r} {problem} ({SETTINGS[key].help})")


def _nonempty_list(source: Path, data: dict, key: str, kind: type, what: str) -> list:
    values = data.get(key)
    if values is None:
        raise _fail(source, key, f"missing: list {what}")
    if not isinstance(values, list) or not values:
        raise _fail(source, key, f"must be a non-empty list of {what} (got {values!r})")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, kind):
            raise _fail(source, f"{key}[{i}]", f"must be {what.split(' ', 1)[0]} ({value!r})")
    if len(set(values)) != len(values):
        raise _fail(source, key, f"lists {sorted({v for v in values if values.count(v) > 1})!r} more than once")
    return values


def _path(source: Path, entry: str, key: str, value: Any, kind: str) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(source, entry, f"{key} must be a path (got {value!r})")
    path = (source.parent / value).resolve()
    exists = path.is_dir() if kind == "folder" else path.exists()
    if not exists:
        raise _fail(source, entry, f"{key} = {value!r}: no {kind} at {path}")
    return path


def _images(source: Path, entry: str, key: str, folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise _fail(source, entry, f"{key}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def _subject(source: Path, index: int, data: Any) -> Subject:
    entry = f"subjects[{index}]"
    if not isinstance(data, dict):
        raise _fail(source, entry, "must be a table ([[subjects]])")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(source, entry, "needs a name")
    entry = f"subjects[{index}] ('{name}')"
    for key in data:
        if key not in SUBJECT_KEYS:
            raise _unknown(source, entry, key, SUBJECT_KEYS)
    class_word = data.get("class_word")
    if not isinstance(class_word, str) or not class_word.strip():
        raise _fail(source, entry, "needs a class_word (e.g. 'woman'): prompts say '{identity}' and get the "
                                   "identity's tokens plus this word; CLIP-T scores the prompt with the word alone")
    if ("embedding" in data) == ("photos" in data):
        raise _fail(source, entry, "give exactly one of embedding (a trained identity file) or photos (a folder "
                                   "to train one from)")
    references = _path(source, entry, "references", data.get("references"), "folder")
    _images(source, entry, "references", references)
    if "embedding" in data:
        if "masks" in data:
            raise _fail(source, entry, "masks are for training from photos; this subject has an embedding file")
        embedding = _path(source, entry, "embedding", data["embedding"], "file")
        return Subject(name, class_word, str(references), embedding=str(embedding),
                       inputs_digest=_file_digest([embedding]))
    photos = _path(source, entry, "photos", data["photos"], "folder")
    inputs = _images(source, entry, "photos", photos)
    masks = None
    if "masks" in data:
        masks = _path(source, entry, "masks", data["masks"], "folder")
        try:
            inputs += [mask_for(photo, masks) for photo in list(inputs)]
        except FileNotFoundError as error:
            raise _fail(source, entry, f"masks: {str(error).split(': ', 1)[1]}") from None
    return Subject(name, class_word, str(references), photos=str(photos), masks=masks and str(masks),
                   inputs_digest=_file_digest(inputs))


def describe(options: dict) -> str:
    """``gamma 0.1, stage t2v, masked false``: settings in words (a setting's default name, report headings)."""
    return ", ".join(f"{k} {json.dumps(v) if isinstance(v, bool) else v}" for k, v in options.items())


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file and expand it into runs (subjects x prompts x seeds x settings, in that
    order) and the identities they need trained; any problem is a PlanError naming the entry."""
    source = Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise PlanError(f"{source}: no such plan file") from None
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"{source}: not valid TOML ({error})") from None
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(source, "top level", key, TOP_KEYS)
    models_data = data.get("models", {})
    if not isinstance(models_data, dict):
        raise _fail(source, "models", "must be a table ([models])")
    for key in models_data:
        if key not in MODEL_KEYS:
            raise _unknown(source, "models", key, MODEL_KEYS)
    missing = [key for key in REQUIRED_MODELS if key not in models_data]
    if missing:
        raise _fail(source, "models", f"missing {', '.join(missing)} ({'; '.join(MODEL_KEYS[k] for k in missing)})")
    models = {key: str(_path(source, "models", key, value, "file or folder")) for key, value in models_data.items()}
    model_names = dict(models_data)  # as written: ids survive moving the project

    prompts = _nonempty_list(source, data, "prompts", str, "strings (prompts with {identity})")
    for i, prompt in enumerate(prompts):
        if prompt.count("{identity}") != 1:
            raise _fail(source, f"prompts[{i}]", f"must say {{identity}} once, where the person goes ({prompt!r})")
    seeds = _nonempty_list(source, data, "seeds", int, "integers (seeds)")

    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise _fail(source, "defaults", "must be a table ([defaults])")
    _check_settings(source, "defaults", defaults)

    subjects_data = data.get("subjects")
    if not isinstance(subjects_data, list) or not subjects_data:
        raise _fail(source, "subjects", "list at least one subject ([[subjects]] with name, class_word, references "
                                        "and embedding or photos)")
    subjects = [_subject(source, i, s) for i, s in enumerate(subjects_data)]
    names = [s.name for s in subjects]
    for i, name in enumerate(names):
        if names.index(name) != i or slug(name) in [slug(n) for n in names[:i]]:
            raise _fail(source, f"subjects[{i}] ('{name}')", "has the name of an earlier subject; names must differ")

    settings_data = data.get("settings", [{}])
    if not isinstance(settings_data, list) or not settings_data:
        raise _fail(source, "settings", "must be a non-empty list of tables ([[settings]]); leave it out for one "
                                        "run per subject x prompt x seed at the defaults")
    settings: list[tuple[str, dict]] = []
    for i, entry_data in enumerate(settings_data):
        if not isinstance(entry_data, dict):
            raise _fail(source, f"settings[{i}]", "must be a table ([[settings]])")
        overrides = {k: v for k, v in entry_data.items() if k != "name"}
        name = entry_data.get("name", describe(overrides) or "default")
        entry = f"settings[{i}] ('{name}')"
        if not isinstance(name, str) or not name.strip():
            raise _fail(source, f"settings[{i}]", f"name must be a non-empty string (got {name!r})")
        _check_settings(source, entry, overrides)
        resolved = {key: s.default for key, s in SETTINGS.items()} | defaults | overrides
        for j, (other, other_resolved) in enumerate(settings):
            if slug(other) == slug(name):
                raise _fail(source, entry, f"has the name of settings[{j}]; names must differ")
            if other_resolved == resolved:
                raise _fail(source, entry, f"resolves to the same settings as settings[{j}] ('{other}')")
        training = {k: v for k, v in overrides.items() if SETTINGS[k].training}
        if training and not any(s.photos for s in subjects):
            raise _fail(source, entry, f"sets {', '.join(training)}, which only changes identities trained from "
                                       "photos, and every subject has an embedding file")
        try:  # Tiled VCD's own check, here rather than after hours of runs
            tiling.check_tiling(resolved["tile_size"], resolved["tile_overlap"], 1)
        except ValueError as error:
            raise _fail(source, entry, str(error).replace("overlap", "tile_overlap", 1)) from None
        unmasked = [s.name for s in subjects if s.photos and not s.masks]
        if resolved["masked"] and unmasked:
            raise _fail(source, entry, f"trains with masked = true, which needs masks (a folder of subject masks, "
                                       f"white = person, named like the photos) for subject '{unmasked[0]}'; or "
                                       "set masked = false")
        settings.append((name, resolved))
    if "upscale_model" in models and all(resolved["stage"] != "tiled" for _, resolved in settings):
        raise _fail(source, "models", "upscale_model is run only before Tiled VCD, and no settings reach stage = "
                                      "'tiled'; set stage = \"tiled\" in [defaults] or a [[settings]] entry, or "
                                      "remove upscale_model")

    identities: dict[str, IdentitySpec] = {}
    runs = []
    for subject in subjects:
        for index, prompt in enumerate(prompts):
            for seed in seeds:
                for name, resolved in settings:
                    identity_id = None
                    if subject.photos:
                        training = {k: v for k, v in resolved.items() if SETTINGS[k].training}
                        key = dict(subject=subject.name, photos=subject.inputs_digest, options=training,
                                   models={k: model_names.get(k) for k in ("checkpoint", "config_dir")})
                        identity_id = f"{slug(subject.name)}.{_digest(key)[:10]}"
                        identities.setdefault(identity_id, IdentitySpec(identity_id, subject, training, models))
                    used = {k: v for k, v in model_names.items()  # the upscaler is part of a tiled run only
                            if k != "upscale_model" or resolved["stage"] == "tiled"}
                    key = dict(subject=subject.name, class_word=subject.class_word, inputs=subject.inputs_digest,
                               prompt=prompt, seed=seed, options=resolved, models=used)
                    run_id = f"{slug(subject.name)}.{slug(name)}.s{seed}.{_digest(key)[:10]}"
                    runs.append(RunSpec(run_id, subject, prompt, index, seed, name, resolved, models, identity_id,
                                        subject.embedding))
    return Plan(str(source), runs, list(identities.values()), settings)
