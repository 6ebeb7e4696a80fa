"""The protocol's runner on vcd_diffusers: one video generated (T2V VCD), refined up to its stage (Face VCD, then
Tiled VCD), written as artists open it and scored against the subject's reference photos; and the identities
trained from photos. Models and encoders load once per process (a Ray worker keeps them between its tasks).

A run's folder gets ``t2v``, ``face`` and ``tiled`` videos (mp4, or animated WEBP without PyAV) for the stages it
ran, ``scores.json`` (the scores and per-frame curves) and ``warnings.txt`` when a stage had something to say
(e.g. Face VCD found no face and left the frames as they were).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import torch

from vcd_core import embedding_io, identity as identity_core
from vcd_core.evaluate import read_references
from vcd_core.text_encoder import MARKER

from ..evaluate import Evaluators, evaluate, load_evaluators
from ..face import FACE, refine_face
from ..loading import Models, load_identity, load_models
from ..pipeline import T2V, generate
from ..tiled import TILED, upscale
from ..train import train_identity as train_on_photos
from ..upscaler import load_upscale_model
from ..commands import mask_for, photo_files
from ..video_io import default_video_suffix, read_frames, read_masks, write_json, write_video
from .plan import IdentitySpec, RunSpec
from .store import IDENTITY_FILE, METRICS


@functools.lru_cache(maxsize=1)
def models_for(checkpoint: str, motion_module: str, config_dir: str | None) -> Models:
    """The plan's models, on the GPU Ray gave this task (or this process's first GPU), else the CPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_models(checkpoint, motion_module, config_dir, device=device)


@functools.lru_cache(maxsize=1)
def upscaler_for(path: str):
    """The plan's upscale model, on the device ``models_for`` uses."""
    return load_upscale_model(path, "cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=1)
def evaluators_for(dino: str, clip: str) -> Evaluators:
    return load_evaluators(dino, clip)


def _models(models: dict) -> Models:
    return models_for(models["checkpoint"], models["motion_module"], models.get("config_dir"))


def run_video(spec: RunSpec, folder: Path) -> dict:
    """One run: T2V VCD, + Face VCD (stage face, tiled), + Tiled VCD (stage tiled); scores of the last stage."""
    options = spec.options
    models = _models(spec.models)
    person = load_identity(spec.embedding, models.text.width)
    prompt = spec.prompt.replace(MARKER, f"{MARKER} {spec.subject.class_word}")
    scored_text = spec.prompt.replace(MARKER, spec.subject.class_word)  # what CLIP-T compares the frames with
    negative = options["negative_prompt"]
    suffix = default_video_suffix()
    warnings = []
    t2v = replace(T2V, steps=options["steps"], cfg=options["cfg"], gamma=options["gamma"], seed=spec.seed)
    frames = generate(models, prompt, negative=negative, identity=person, frames=options["frames"],
                      height=options["height"], width=options["width"], settings=t2v)
    write_video(frames, folder / f"t2v{suffix}")
    if options["stage"] in ("face", "tiled"):
        face = replace(FACE, steps=options["face_steps"], denoise=options["face_denoise"], cfg=options["cfg"],
                       seed=spec.seed)
        result = refine_face(models, frames, prompt, negative=negative, identity=person, settings=face)
        frames = result.frames
        if result.warning:
            warnings.append(f"Face VCD: {result.warning}")
        write_video(frames, folder / f"face{suffix}")
    if options["stage"] == "tiled":
        tiled = replace(TILED, steps=options["tiled_steps"], denoise=options["tiled_denoise"], cfg=options["cfg"],
                        seed=spec.seed)
        upscaler = upscaler_for(spec.models["upscale_model"]) if "upscale_model" in spec.models else None
        frames = upscale(models, frames, prompt, scale=options["upscale"], negative=negative, identity=person,
                         tile_size=options["tile_size"], overlap=options["tile_overlap"], settings=tiled,
                         upscale_model=upscaler)
        write_video(frames, folder / f"tiled{suffix}")
    evaluators = evaluators_for(spec.models["dino"], spec.models["clip"])
    references = read_references(Path(spec.subject.references))
    scores = evaluate(frames, references, scored_text, evaluators, subject=spec.subject.references)
    write_json({**scores, "prompt": scored_text}, folder / "scores.json")
    if warnings:
        (folder / "warnings.txt").write_text("\n".join(warnings) + "\n")
    return {**{m: scores[m] for m in METRICS}, "frames": scores["frames"]}


def train_identity(spec: IdentitySpec, folder: Path) -> None:
    """One identity from the subject's photos, with the loss masked to the person (``masked``, the subject's
    masks) or over the whole photo; photos whose mask is empty are left out, noted in ``warnings.txt``."""
    models = _models(spec.models)
    files = photo_files([Path(spec.subject.photos)])
    photos = [read_frames(path, "photos")[0] for path in files]
    masks = None
    if spec.options["masked"]:
        masks = [read_masks(mask_for(path, Path(spec.subject.masks)), "masks")[0] for path in files]
    config = replace(identity_core.TrainConfig(), steps=spec.options["train_steps"])
    name = Path(IDENTITY_FILE).stem
    trained = train_on_photos(models, photos, masks, name=name, class_word=spec.subject.class_word, config=config,
                              resolution=spec.options["train_resolution"])
    embedding_io.write_embedding(folder, name, trained.embedding)
    if trained.left_out:
        (folder / "warnings.txt").write_text(f"empty masks, left out: {[files[i].name for i in trained.left_out]}\n")
