"""Evaluation: the paper's identity, text and temporal metrics for one video, with a per-frame chart; and the
scores per identity of a clip with several people (per face track and per identity)."""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from comfy_api.latest import io, ui

from .inputs import checked, single
from ..vcd_core import encoders, identity_scores, metrics, preview
from .charts import BLUE, ORANGE, line_chart
from .channels import as_rgb
from .model_folders import file_path, hf_folder_path, hf_folders, register

FOLDER = "vcd_eval"  # models/vcd_eval/<name>/ : Hugging Face folders (config.json + weights)
FACE_FOLDER, NO_FACE_MODEL = "insightface", "none"  # models/insightface: where ReActor / IPAdapter users keep buffalo_l


def face_model_options() -> list[str]:
    """``none`` (the default: the face score is optional), then every ArcFace ``.onnx`` under models/insightface."""
    import folder_paths

    register(FACE_FOLDER)
    return [NO_FACE_MODEL] + [n for n in folder_paths.get_filename_list(FACE_FOLDER) if n.endswith(".onnx")]


@functools.lru_cache(maxsize=4)
def cached_dino(path: str):
    return encoders.load_dino(path)


@functools.lru_cache(maxsize=4)
def cached_clip(path: str):
    return encoders.load_clip(path)


@functools.lru_cache(maxsize=2)
def cached_arcface(path: str):
    return encoders.load_arcface(path)


def load_encoders(dino_model: str, clip_model: str):
    """The DINO image encoder and CLIP's image and text encoders of the chosen models/vcd_eval folders."""
    dino = cached_dino(hf_folder_path(FOLDER, dino_model, "dino_model"))
    clip_image, clip_text = cached_clip(hf_folder_path(FOLDER, clip_model, "clip_model"))
    return dino, clip_image, clip_text


def load_face_model(face_model: str) -> encoders.ArcFace | None:
    """The chosen ArcFace model, or None for ``none``."""
    if face_model == NO_FACE_MODEL:
        return None
    path = file_path(FACE_FOLDER, face_model, "face_model", "put insightface's w600k_r50.onnx there.")
    try:
        return cached_arcface(path)
    except ImportError as error:
        raise ImportError(f"face_model: {error}") from None


def model_inputs() -> list[io.Input]:
    """The encoder choices both evaluation nodes take."""
    return [
        io.Combo.Input("dino_model", options=hf_folders(FOLDER), tooltip="models/vcd_eval/<folder>, e.g. dino-vits16"),
        io.Combo.Input("clip_model", options=hf_folders(FOLDER), tooltip="models/vcd_eval/<folder>, e.g. clip-vit-base-patch32"),
        io.Combo.Input("face_model", options=face_model_options(), default=NO_FACE_MODEL, optional=True,
                       tooltip="ArcFace face similarity (off by default): insightface's recognition model, "
                               "e.g. models/insightface/models/buffalo_l/w600k_r50.onnx."),
    ]


def shown(scores: dict) -> dict:
    """The scores the node text shows: without the per-frame lists (``per_...``; they are in scores_json)."""
    return {k: v for k, v in scores.items() if not k.startswith("per_")}


def chart(per_frame_identity: list[float], per_pair_consistency: list[float]) -> torch.Tensor:
    """Identity per frame (blue) and consistency per frame pair (orange), on a 0-1 scale."""
    return line_chart([(per_frame_identity, BLUE, "identity (DINO) per frame"),
                       (per_pair_consistency, ORANGE, "CLIP consistency per pair")], low=0.0, high=1.0)


class VCDEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDEvaluate",
            display_name="VCD Evaluate",
            category="VCD/evaluation",
            description="The paper's metrics for one video: DINO and CLIP-I (frames vs reference photos), CLIP-T "
                        "(frames vs prompt), CLIP temporal consistency, plus motion amplitude (consistency rewards "
                        "still video). Raw cosines. Models: Hugging Face folders in models/vcd_eval "
                        "(DINO ViT-S/16 and CLIP ViT-B/32 by default; the paper names none). Optional ArcFace face "
                        "similarity from an insightface .onnx in models/insightface (needs onnxruntime).",
            inputs=[
                io.Image.Input("image", tooltip="The generated frames."),
                io.Image.Input("references", tooltip="Photos of the identity."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt the video was made from."),
                *model_inputs(),
            ],
            outputs=[io.String.Output(display_name="scores_json"), io.Image.Output(display_name="chart")],
            is_output_node=True,
        )

    @classmethod
    @checked
    def execute(cls, image: torch.Tensor, references: torch.Tensor, prompt: str, dino_model: str, clip_model: str,
                face_model: str = NO_FACE_MODEL) -> io.NodeOutput:
        image, references = as_rgb(image, "image"), as_rgb(references, "references")
        dino, clip_image, clip_text = load_encoders(dino_model, clip_model)
        face = load_face_model(face_model)
        with torch.inference_mode(False):
            scores = metrics.score_video(image, references, prompt, dino, clip_image, clip_text, face)
        picture = chart(scores["per_frame_dino"], scores["per_pair_consistency"])
        text = json.dumps(shown(scores), indent=1)
        return io.NodeOutput(json.dumps(scores), picture, ui=ui.PreviewText(text))


IDENTITIES = 4  # references_1 .. references_4
EVALUATE_IDENTITIES = "VCD Evaluate Identities"


def reference_name(k: int) -> str:
    return f"references_{k + 1}"


def wired_references(slots: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """The reference batches of references_1 .. in order; a gap (references_3 without references_2) is an error."""
    count = max((k + 1 for k, r in enumerate(slots) if r is not None), default=0)
    missing = [reference_name(k) for k in range(count) if slots[k] is None]
    if missing or count == 0:
        raise ValueError(f"{EVALUATE_IDENTITIES}: connect {', '.join(missing) or reference_name(0)}: identity k's "
                         "photos go into references_k, in order from references_1.")
    return [as_rgb(slots[k], reference_name(k)) for k in range(count)]


def identity_names(names: str, count: int) -> list[str]:
    """``names`` split at commas, one per identity; empty gives ``identity 1``, ``identity 2``, ..."""
    if not names.strip():
        return [f"identity {k + 1}" for k in range(count)]
    parts = [n.strip() for n in names.split(",")]
    if len(parts) != count or not all(parts) or len(set(parts)) != count:
        raise ValueError(f"{EVALUATE_IDENTITIES}: names {names!r} gives {len(parts)} name(s) for the {count} connected "
                         "references: write one distinct name per identity, comma-separated, in references order "
                         "(or leave it empty).")
    return parts


def identity_prompts(prompts: str, count: int) -> list[str]:
    """One prompt per identity: one line each, or a single line for all."""
    lines = [line.strip() for line in prompts.splitlines() if line.strip()]
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(f"{EVALUATE_IDENTITIES}: prompts has {len(lines)} line(s) for {count} identities: write one "
                         "line per identity (its prompt, for CLIP-T) or one line for all.")
    return lines


def track_picks(picks: str) -> list[int] | None:
    """``picks`` as track indices (``"1, 0"``: identity 1 is track 1, identity 2 is track 0); None when empty."""
    if not picks.strip():
        return None
    try:
        return [int(p) for p in picks.split(",")]
    except ValueError:
        raise ValueError(f"{EVALUATE_IDENTITIES}: picks {picks!r} must be track numbers separated by commas, "
                         "e.g. '1, 0' (identity 1 is track 1, identity 2 is track 0).") from None


def face_space(face: encoders.ArcFace | None, face_model: str, dino, dino_model: str) -> identity_scores.FaceModel:
    """ArcFace when chosen, else the DINO encoder VCD Evaluate uses, named in the scores."""
    if face is not None:
        return identity_scores.FaceModel(f"ArcFace ({face_model}): face crops vs the largest face in each reference "
                                         "photo", face.faces, lambda photos: face(photos)[0])
    return identity_scores.FaceModel(f"DINO ({dino_model}, no face_model chosen): face crops vs the whole reference "
                                     "photos", dino, dino)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def identity_table(scores: dict) -> str:
    """The node text: per track the similarity to each identity and swaps; per identity the paper's metrics."""
    names = scores["identities"]
    lines = [f"face similarity in {scores['face_model']}", f"assignment: {scores['assignment']}",
             "track | identity | face frames | " + " | ".join(names) + " | swaps"]
    for t, track in enumerate(scores["tracks"]):
        swaps = "-" if track["swap_rate"] is None else f"{len(track['swap_frames'])} ({track['swap_rate']:.0%})"
        lines.append(f"{t} | {track['identity'] or '-'} | {track['face_frames']} | "
                     + " | ".join(_number(track["face_similarity"][n]) for n in names) + f" | {swaps}")
    lines += ["", "per identity, on its track's face crops vs its references:",
              "identity | crops | DINO | CLIP-I | CLIP-T | temporal | motion"]
    for name, part in scores["per_identity"].items():
        if part is None:
            lines.append(f"{name} | 0 | no track with a face assigned")
        else:
            lines.append(f"{name} | {part['frames']} | " + " | ".join(
                _number(part[m]) for m in ("dino", "clip_i", "clip_t", "temporal_consistency", "motion")))
    return "\n".join(lines)


def identity_chart(scores: dict, frames: int) -> torch.Tensor:
    """One panel per track: its face similarity to each identity per frame (identity k in PALETTE[k]), gaps where
    the track is absent; a swap is where another identity's line is above the assigned one's."""
    names, panels = scores["identities"], []
    for t, track in enumerate(scores["tracks"]):
        per_frame = track["per_frame_similarity"]
        series = []
        for k, name in enumerate(names):
            values: list[float | None] = [None] * frames
            for f, v in zip(per_frame["frames"], per_frame[name]):
                values[f] = v
            colour = tuple(int(c * 255) for c in preview.PALETTE[k % len(preview.PALETTE)])
            series.append((values, colour, f"track {t} ({track['identity'] or 'unassigned'}) vs {name}"))
        panels.append(line_chart(series, height=128 + 10 * len(names)))
    return torch.cat(panels, dim=1) if panels else line_chart([])


class VCDEvaluateIdentities(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDEvaluateIdentities",
            display_name=EVALUATE_IDENTITIES,
            category="VCD/evaluation",
            description="Scores per identity for a clip with several people. Per face track (VCD Face Tracks' "
                        "track_masks list): the face similarity of its face crops to each identity's references "
                        "(ArcFace with face_model, else DINO; the scores say which) and its identity-swap rate (face "
                        "frames closer to another identity than to its own). Per identity: the paper's metrics "
                        "(VCD Evaluate's) on the face crops of its track vs its references. Identities come from "
                        "references_1 .. references_4 in order; tracks get them by face similarity (Hungarian) or "
                        "by position (left to right, or the track picked per identity).",
            is_input_list=True,  # track_masks is a list (one MASK per track); every other input arrives as a list of one
            inputs=[
                io.Image.Input("image", tooltip="The generated frames."),
                io.Mask.Input("track_masks", tooltip="One MASK per track (per frame, or one for all frames): VCD Face "
                                                     "Tracks' track_masks list, in its track order."),
                *[io.Image.Input(reference_name(k), optional=k > 0,
                                 tooltip=f"Photos of identity {k + 1} (connect references_1 .. in order).")
                  for k in range(IDENTITIES)],
                io.String.Input("names", default="", tooltip="The identities' names, comma-separated in references "
                                                             "order, e.g. 'ironman, mona' (empty: identity 1, ...)."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="For CLIP-T: one line per identity (its prompt), or one line for all."),
                io.Combo.Input("assignment", options=list(identity_scores.ASSIGNMENTS), default="by_similarity",
                               tooltip="by_similarity: Hungarian over tracks x identities on the face similarity; "
                                       "by_position: left to right, or the tracks in picks."),
                io.String.Input("picks", default="", tooltip="by_position: the track of each identity, e.g. '1, 0' "
                                                             "(identity 1 is track 1, identity 2 track 0); empty: "
                                                             "left to right."),
                *model_inputs(),
            ],
            outputs=[io.String.Output(display_name="scores_json"), io.Image.Output(display_name="chart")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, track_masks: list[torch.Tensor], **inputs: Any) -> io.NodeOutput:
        values = {name: single(EVALUATE_IDENTITIES, name, value) for name, value in inputs.items()}
        references = [values.pop(reference_name(k), None) for k in range(IDENTITIES)]
        return cls.evaluate(track_masks=track_masks, references=references, **values)

    @classmethod
    @checked
    def evaluate(cls, image: torch.Tensor, track_masks: list[torch.Tensor], references: list[torch.Tensor | None],
                 names: str, prompts: str, assignment: str, picks: str, dino_model: str, clip_model: str,
                 face_model: str = NO_FACE_MODEL) -> io.NodeOutput:
        image, photos = as_rgb(image, "image"), wired_references(references)
        names_, prompts_ = identity_names(names, len(photos)), identity_prompts(prompts, len(photos))
        found = identity_scores.tracks_from_masks(track_masks, *image.shape[:3])
        dino, clip_image, clip_text = load_encoders(dino_model, clip_model)
        face = face_space(load_face_model(face_model), face_model, dino, dino_model)
        with torch.inference_mode(False):
            scores = identity_scores.evaluate_identities(image, found, photos, names_, prompts_, dino, clip_image,
                                                         clip_text, face, assignment, track_picks(picks))
        summary = {**scores, "tracks": [shown(t) for t in scores["tracks"]],
                   "per_identity": {name: part and shown(part) for name, part in scores["per_identity"].items()}}
        text = f"{identity_table(scores)}\n\n{json.dumps(summary, indent=1)}"
        return io.NodeOutput(json.dumps(scores), identity_chart(scores, image.shape[0]), ui=ui.PreviewText(text))
