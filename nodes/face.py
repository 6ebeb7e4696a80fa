"""Face VCD: detect faces per frame, and refine the face of a whole clip through one crop window.

The crop and sampling widgets, the mask check and the crop-denoise-decode step are shared with
VCD Face Refine Tracks (nodes/face_tracks.py), which runs them once per face track."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from ..vcd_core import face, face_detect
from ..vcd_core.geometry import Box
from .channels import as_rgb
from .model_folders import file_path, register
from .progress import send_preview_image
from .ade import warn_if_prior_lost
from .sampling import SamplingSettings, denoise_clip, sampler_inputs

HAAR = "opencv_haar"
YOLO_FOLDER = "ultralytics_bbox"  # the folder key Impact Pack users already have: models/ultralytics/bbox
log = logging.getLogger("vcd")


def detector_options() -> list[str]:
    """The built-in Haar detector, then every YOLO face model in ``models/ultralytics/bbox``."""
    import folder_paths

    register(YOLO_FOLDER, "ultralytics", "bbox")
    return [HAAR] + [f"yolo/{name}" for name in folder_paths.get_filename_list(YOLO_FOLDER)]


def detect_masks(images: torch.Tensor, detector: str) -> torch.Tensor:
    """``[F, H, W]`` face masks (box-shaped, largest face per frame); empty frames stay in the batch."""
    if detector == HAAR:
        boxes = face_detect.haar_faces(images)
    elif detector.startswith("yolo/"):
        path = file_path(YOLO_FOLDER, detector[len("yolo/"):], "detector", "put the YOLO face model in models/ultralytics/bbox.")
        boxes = face_detect.yolo_faces(images, path)
    else:
        raise ValueError(f"detector must be {HAAR!r} or a 'yolo/<file>' from models/ultralytics/bbox (got {detector!r}).")
    return face_detect.boxes_to_masks(boxes, images.shape[1], images.shape[2], largest_only=True)


def check_masks(mask: torch.Tensor, image: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """A MASK batch that matches the frames one to one (a single mask is used for every frame); ``name`` is the
    input the errors name."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape[-2:] != image.shape[1:3]:
        raise ValueError(f"{name} is {mask.shape[-1]}x{mask.shape[-2]} but the frames are {image.shape[2]}x{image.shape[1]}: "
                         "resize the mask to the frames.")
    if mask.shape[0] == 1:
        mask = mask.expand(image.shape[0], -1, -1)
    if mask.shape[0] != image.shape[0]:
        raise ValueError(f"{name} has {mask.shape[0]} frames but image has {image.shape[0]}: give one mask per frame (or one for all).")
    return mask.float()


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
    return (f"{node}: {face_name} reaches outside its crop window in frame(s) {leaving}; only the part "
            "inside is refined, blended softly at the window's edge. Raise crop_factor, or use crop_mode "
            "'union' for a moving face (a window never exceeds the frame's shorter side).")


def refine_crops(model, positive, negative, vae, image: torch.Tensor, masks: torch.Tensor, windows: list[Box],
                 size: int, settings: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop frame i to ``windows[i]`` at ``size`` px, re-denoise the crop clip in ONE sampling call with ``masks``
    (in the windows) as latent noise mask, decode: the crop clip before and after, ``[F, size, size, C]``."""
    before = face.crop_clip(image, windows, size)
    latent = vae.encode(before)
    noise_mask = face.latent_noise_mask(masks, windows, latent.shape[-1])
    samples = denoise_clip(model, positive, negative, latent, settings, noise_mask=noise_mask)
    after = vae.decode(samples).reshape(-1, *before.shape[1:]).to(image.dtype)
    return before, after


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
        settings = SamplingSettings(seed, steps, cfg, sampler_name, scheduler, denoise, gamma)
        image = as_rgb(image, "image")
        masks = check_masks(mask, image) if mask is not None else detect_masks(image, detector)
        windows = face.clip_windows(masks, crop_factor, crop_mode)
        if windows is None:
            warning = "VCD Face Refine: no face in any frame; returning the frames unchanged."
            log.warning(warning)
            return io.NodeOutput(image, torch.zeros(image.shape[:3]), image, image, image, ui=ui.PreviewText(warning))
        inside, leaving = face.cut_to_windows(masks, windows)
        warning = None
        if leaving:
            warning = outside_warning("VCD Face Refine", leaving)
            log.warning(warning)

        preview = face.window_preview(image, windows, masks)
        send_preview_image(preview[0], steps)  # where the window is, before the long part
        size = face.crop_size(windows[0].height, guide_size, max_size)
        warn_if_prior_lost(model, gamma, getattr(cls.hidden, "unique_id", None), "VCD Face Refine")
        before, after = refine_crops(model, positive, negative, vae, image, masks, windows, size, settings)
        paste_mask = face.feather_mask(inside, feather)
        refined = face.paste_clip(image, after, windows, paste_mask)
        return io.NodeOutput(refined, paste_mask, before, after, preview, ui=ui.PreviewText(warning) if warning else None)
