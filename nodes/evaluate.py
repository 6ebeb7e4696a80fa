"""Evaluation: the paper's identity, text and temporal metrics for one video, with a per-frame chart."""

from __future__ import annotations

import functools
import json

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from ..vcd_core import encoders, metrics
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
                io.Combo.Input("dino_model", options=hf_folders(FOLDER), tooltip="models/vcd_eval/<folder>, e.g. dino-vits16"),
                io.Combo.Input("clip_model", options=hf_folders(FOLDER), tooltip="models/vcd_eval/<folder>, e.g. clip-vit-base-patch32"),
                io.Combo.Input("face_model", options=face_model_options(), default=NO_FACE_MODEL, optional=True,
                               tooltip="ArcFace face similarity (off by default): insightface's recognition model, "
                                       "e.g. models/insightface/models/buffalo_l/w600k_r50.onnx."),
            ],
            outputs=[io.String.Output(display_name="scores_json"), io.Image.Output(display_name="chart")],
            is_output_node=True,
        )

    @classmethod
    @checked
    def execute(cls, image: torch.Tensor, references: torch.Tensor, prompt: str, dino_model: str, clip_model: str,
                face_model: str = NO_FACE_MODEL) -> io.NodeOutput:
        image, references = as_rgb(image, "image"), as_rgb(references, "references")
        dino = cached_dino(hf_folder_path(FOLDER, dino_model, "dino_model"))
        clip_image, clip_text = cached_clip(hf_folder_path(FOLDER, clip_model, "clip_model"))
        face = None
        if face_model != NO_FACE_MODEL:
            path = file_path(FACE_FOLDER, face_model, "face_model", "put insightface's w600k_r50.onnx there.")
            try:
                face = cached_arcface(path)
            except ImportError as error:
                raise ImportError(f"face_model: {error}") from None
        with torch.inference_mode(False):
            scores = metrics.score_video(image, references, prompt, dino, clip_image, clip_text, face)
        picture = chart(scores["per_frame_dino"], scores["per_pair_consistency"])
        text = json.dumps({k: v for k, v in scores.items() if not k.startswith("per_")}, indent=1)
        return io.NodeOutput(json.dumps(scores), picture, ui=ui.PreviewText(text))
