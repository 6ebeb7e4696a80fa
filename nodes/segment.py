"""Prompt-to-segmentation: subject masks for identity training from a text prompt (GroundingDINO + SAM)."""

from __future__ import annotations

import functools
import logging
import os

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from ..vcd_core import segment
from .channels import as_rgb
from .managed_models import managed, use
from .model_folders import file_path, hf_folder_path, hf_folders, register

DINO_FOLDER, SAM_FOLDER = "grounding-dino", "sams"  # the folder keys segment-anything packs already use
BERT_FOLDER = "bert-base-uncased"  # models/bert-base-uncased, where those packs look for BERT
log = logging.getLogger("vcd")


def sam_options() -> list[str]:
    import folder_paths

    register(SAM_FOLDER)
    return folder_paths.get_filename_list(SAM_FOLDER)


def grounding_dino_options() -> list[str]:
    """Hugging Face GroundingDINO folders, then original ``.pth`` checkpoints, in models/grounding-dino."""
    import folder_paths

    register(DINO_FOLDER)
    originals = [name for name in folder_paths.get_filename_list(DINO_FOLDER) if name.lower().endswith(".pth")]
    return hf_folders(DINO_FOLDER) + sorted(originals)


def bert_folder() -> str:
    """The first existing models/bert-base-uncased folder (the default one when none exists, for the message)."""
    import folder_paths

    register(BERT_FOLDER)
    roots = folder_paths.get_folder_paths(BERT_FOLDER)
    return next((root for root in roots if os.path.isdir(root)), roots[0])


@functools.lru_cache(maxsize=2)
def cached_grounding_dino(path: str, bert: str | None):
    """``(model, processor, patcher)``: the model under ComfyUI's model management (on the offload device until used)."""
    model, processor = segment.load_grounding_dino(path, "cpu", bert)
    return model, processor, managed(model)


@functools.lru_cache(maxsize=2)
def cached_sam(path: str):
    """``(predictor, patcher)``: SAM under ComfyUI's model management (on the offload device until used)."""
    predictor = segment.load_sam(path, "cpu")
    return predictor, managed(predictor.model)


def overlay(images: torch.Tensor, masks: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    """The RGB images with the masked area tinted red, for a quick check."""
    red = torch.tensor([1.0, 0.0, 0.0])
    alpha = masks[..., None] * strength
    return images * (1 - alpha) + red * alpha


class VCDPromptSegment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDPromptSegment",
            display_name="VCD Prompt Segment",
            category="VCD/identity",
            description="Masks the subject named by a text prompt: GroundingDINO finds boxes, SAM turns them into masks. "
                        "One mask per image, always; an image with no detection gets an empty or a full mask.",
            inputs=[
                io.Image.Input("image"),
                io.String.Input("prompt", default="person", tooltip="What to segment."),
                io.Combo.Input("grounding_dino_model", options=grounding_dino_options(),
                               tooltip="models/grounding-dino: a Hugging Face GroundingDINO folder (e.g. "
                                       "IDEA-Research/grounding-dino-tiny), or an original .pth with its .cfg.py beside "
                                       "it (groundingdino_swint_ogc.pth + GroundingDINO_SwinT_OGC.cfg.py; SwinB), which "
                                       "also needs models/bert-base-uncased (config.json, vocab.txt)."),
                io.Combo.Input("sam_model", options=sam_options(), tooltip="models/sams: an original SAM .pth checkpoint."),
                io.Float.Input("box_threshold", default=segment.BOX_THRESHOLD, min=0.0, max=1.0, step=0.01),
                io.Float.Input("text_threshold", default=segment.TEXT_THRESHOLD, min=0.0, max=1.0, step=0.01),
                io.Combo.Input("box_mode", options=["first", "union"], default="first",
                               tooltip="first: the best box only (the paper's code); union: every box found."),
                io.Combo.Input("if_none", options=["empty", "full"], default="empty",
                               tooltip="Mask for an image with no detection: empty (Train Identity then leaves that photo out) "
                                       "or the full image."),
            ],
            outputs=[io.Mask.Output(display_name="mask"), io.Image.Output(display_name="preview")],
            is_output_node=True,
        )

    @classmethod
    @checked
    def execute(cls, image: torch.Tensor, prompt: str, grounding_dino_model: str, sam_model: str, box_threshold: float,
                text_threshold: float, box_mode: str, if_none: str) -> io.NodeOutput:
        import comfy.model_management

        image = as_rgb(image, "image")
        if not prompt.strip():
            raise ValueError("prompt: say what to segment, e.g. 'person'.")
        if grounding_dino_model.lower().endswith(".pth"):
            dino_path = file_path(DINO_FOLDER, grounding_dino_model, "grounding_dino_model",
                                  "put an original GroundingDINO checkpoint and its .cfg.py there.")
            bert = bert_folder()
        else:
            dino_path, bert = hf_folder_path(DINO_FOLDER, grounding_dino_model, "grounding_dino_model"), None
        sam_path = file_path(SAM_FOLDER, sam_model, "sam_model", "put an original SAM checkpoint (e.g. sam_vit_b_01ec64.pth) there.")
        model, processor, dino_patcher = cached_grounding_dino(dino_path, bert)
        predictor, sam_patcher = cached_sam(sam_path)
        use(dino_patcher, sam_patcher)

        def find_boxes(pixels):
            comfy.model_management.throw_exception_if_processing_interrupted()
            return segment.detect(model, processor, pixels, prompt, box_threshold, text_threshold)

        def segment_boxes(pixels, boxes):
            return segment.segment_boxes(predictor, pixels, boxes)

        masks, missed = segment.prompt_masks(image, find_boxes, segment_boxes, box_mode, if_none)
        text = f"{image.shape[0] - len(missed)}/{image.shape[0]} images with '{prompt}' found"
        if missed:
            log.warning("VCD Prompt Segment: no '%s' in image(s) %s; they get %s masks.", prompt, missed, if_none)
            text += f"; none in {missed} ({if_none} mask)"
        return io.NodeOutput(masks, overlay(image, masks), ui=ui.PreviewText(text))
