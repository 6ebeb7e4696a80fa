"""Face VCD: detect faces per frame, and refine the face of a whole clip through one crop window.

The crop and sampling widgets and the crop denoiser (encode, sample, decode on a ComfyUI MODEL) are
shared with VCD Face Refine Tracks (nodes/face_tracks.py), which runs them once per face track; the
geometry around them is ``vcd_core.face``'s, shared with the diffusers library."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from ..vcd_core import face, face_detect
from ..vcd_core.geometry import Box
from .channels import as_rgb
from .conditioning import WHOLE_FRAME, refuse_whole_frame
from .model_folders import file_path, folder_name, register
from .progress import send_preview_image
from .ade import warn_if_prior_lost
from .sampling import SamplingSettings, denoise_clip, sampler_inputs

HAAR = "opencv_haar"
YOLO_FOLDER = "ultralytics_bbox"  # the folder key Impact Pack users already have: models/ultralytics/bbox
log = logging.getLogger("vcd")


def detector_options() -> list[str]:
    """The built-in Haar detector, then every YOLO face model in ``models/ultralytics/bbox``."""
    import folder_paths

    register(YOLO_FOLDER)
    return [HAAR] + [f"yolo/{name}" for name in folder_paths.get_filename_list(YOLO_FOLDER)]


def detect_boxes(images: torch.Tensor, detector: str) -> list[list[Box]]:
    """Every face box of every frame from the chosen detector (the Haar cascade or a YOLO face model)."""
    if detector == HAAR:
        return face_detect.haar_faces(images)
    if detector.startswith("yolo/"):
        path = file_path(YOLO_FOLDER, detector[len("yolo/"):], "detector", "put the YOLO face model there.")
        return face_detect.yolo_faces(images, path)
    raise ValueError(f"detector must be {HAAR!r} or a 'yolo/<file>' from {folder_name(YOLO_FOLDER)} "
                     f"(got {detector!r}).")


def detect_masks(images: torch.Tensor, detector: str) -> torch.Tensor:
    """``[F, H, W]`` face masks (box-shaped, largest face per frame); empty frames stay in the batch."""
    boxes = detect_boxes(images, detector)
    return face_detect.boxes_to_masks(boxes, images.shape[1], images.shape[2], largest_only=True)


def refine_inputs() -> list[io.Input]:
    """Face VCD's crop and sampling widgets, in Face Refine's order (saved workflows list widget values by position)."""
    return [
        io.Float.Input("crop_factor", default=3.0, min=1.0, max=10.0, step=0.1,
                       tooltip="Window side = face box side x crop_factor (the paper: 3)."),
        io.Int.Input("guide_size", default=512, min=64, max=2048, step=8,
                     tooltip="Small crops are upscaled to this side before denoising."),
        io.Int.Input("max_size", default=1024, min=64, max=4096, step=8,
                     tooltip="Crops are never denoised above this side."),
        *sampler_inputs(denoise=0.8, gamma=0.0),
        io.Int.Input("feather", default=5, min=0, max=100, tooltip="Soft edge of the paste mask, in pixels."),
        io.Combo.Input("crop_mode", options=face.CROP_MODES, default="union",
                       tooltip="union: one window for all frames (the paper). per_frame_smoothed: same-size "
                               "windows that follow a moving face, smoothed over time."),
    ]


def outside_warning(node: str, leaving: list[int], face_name: str = "the face") -> str:
    """The warning for a face that reaches outside its crop window in frames ``leaving``."""
    return f"{node}: {face.outside_message(leaving, face_name)}"


def crop_denoiser(model, positive, negative, vae, settings: SamplingSettings) -> face.CropDenoiser:
    """Face VCD's host part on a ComfyUI MODEL and VAE: encode the crop clip, denoise it in ONE sampling call with
    the noise mask, decode."""
    def denoise(crops: torch.Tensor, noise_mask: Callable[[int], torch.Tensor]) -> torch.Tensor:
        latent = vae.encode(crops)
        samples = denoise_clip(model, positive, negative, latent, settings, noise_mask=noise_mask(latent.shape[-1]))
        return vae.decode(samples).reshape(-1, *crops.shape[1:]).to(crops.dtype)
    return denoise


class VCDFaceDetect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDFaceDetect",
            display_name="VCD Face Detect",
            category="VCD/face",
            description="A face MASK per frame (empty where none is found) and a preview with the boxes. "
                        "opencv_haar needs no downloaded weights; YOLO face models come from models/ultralytics/bbox.",
            inputs=[io.Image.Input("image"), io.Combo.Input("detector", options=detector_options(), default=HAAR)],
            outputs=[io.Mask.Output(display_name="mask"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    @checked
    def execute(cls, image: torch.Tensor, detector: str) -> io.NodeOutput:
        image = as_rgb(image, "image")
        masks = detect_masks(image, detector)
        edge = masks - (-torch.nn.functional.max_pool2d(-masks[:, None], 5, 1, 2))[:, 0]
        preview = image.clone()
        preview[edge > 0] = torch.tensor([1.0, 0.2, 0.2])
        return io.NodeOutput(masks, preview)


class VCDFaceRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDFaceRefine",
            display_name="VCD Face Refine",
            category="VCD/face",
            description="Face VCD: crop one window around the face for all frames (union of the face masks x "
                        "crop_factor), re-denoise the crop clip in ONE sampling call with the face as noise mask "
                        "(the motion module keeps frames consistent), paste back with a feathered mask.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Vae.Input("vae"),
                io.Image.Input("image"),
                *refine_inputs(),
                io.Combo.Input("detector", options=detector_options(), default=HAAR,
                               tooltip="Used only when no mask is connected."),
                io.Mask.Input("mask", optional=True, tooltip="Face masks (one per frame, or one for all) from any segmenter."),
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                io.Mask.Output(display_name="paste_mask"),
                io.Image.Output(display_name="crop_before"),
                io.Image.Output(display_name="crop_after"),
                io.Image.Output(display_name="window_preview",
                                tooltip="The frames with each crop window (yellow) and face box (red); shown on the node "
                                        "before sampling starts."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked
    def execute(cls, model, positive, negative, vae, image: torch.Tensor, crop_factor: float, guide_size: int,
                max_size: int, denoise: float, steps: int, cfg: float, sampler_name: str, scheduler: str, seed: int,
                gamma: float, feather: int, crop_mode: str, detector: str, mask: torch.Tensor | None = None) -> io.NodeOutput:
        refuse_whole_frame({"positive": positive, "negative": negative}, "VCD Face Refine", "the face's crop window",
                           tuple(WHOLE_FRAME))
        settings = SamplingSettings(seed, steps, cfg, sampler_name, scheduler, denoise, gamma)
        image = as_rgb(image, "image")
        masks = face.masks_for_frames(mask, image) if mask is not None else detect_masks(image, detector)
        plan = face.plan_crops(masks, crop_factor, crop_mode, guide_size, max_size)
        if plan is None:
            warning = "VCD Face Refine: no face in any frame; returning the frames unchanged."
            log.warning(warning)
            return io.NodeOutput(image, torch.zeros(image.shape[:3]), image, image, image, ui=ui.PreviewText(warning))
        warning = None
        if plan.leaving:
            warning = outside_warning("VCD Face Refine", plan.leaving)
            log.warning(warning)

        preview = face.window_preview(image, plan.windows, masks)
        send_preview_image(preview[0], steps)  # where the window is, before the long part
        warn_if_prior_lost(model, gamma, getattr(cls.hidden, "unique_id", None), "VCD Face Refine")
        refined = face.refine_clip(image, plan, feather, crop_denoiser(model, positive, negative, vae, settings))
        return io.NodeOutput(*refined, preview, ui=ui.PreviewText(warning) if warning else None)
