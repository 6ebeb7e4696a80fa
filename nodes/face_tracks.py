"""Face VCD per face track: each track's face re-denoised with its own identity prompt, pasted without
touching the other faces.

Each track (one MASK per track, e.g. VCD Face Tracks' ``track_masks`` list) gets its own crop window(s)
over the frames it is seen in and ONE sampling call for all those frames (the motion module sees the
track's clip). Pastes never overlap: every track's mask is cleared where any other track's mask is set
(``vcd_core.face.exclusive_masks``; an overlap of two faces keeps its input pixels), then cut to the
track's window and feathered inward, as Face Refine does. Every track is cropped from the input frames.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, NamedTuple

import torch
from comfy_api.latest import io, ui

from ..vcd_core import face, preview
from .ade import warn_if_prior_lost
from .channels import as_rgb
from .conditioning import WHOLE_FRAME, refuse_whole_frame
from .face import crop_denoiser, outside_warning, refine_inputs
from .inputs import checked, single
from .noise import SEED_MAX
from .progress import send_preview_image, send_progress_text
from .sampling import SamplingSettings

NAME = "VCD Face Refine Tracks"
MAX_TRACKS = 4  # positive_1 .. positive_4
log = logging.getLogger("vcd")


class TrackCrops(NamedTuple):
    """One track's part of the work: its index, the frames it is seen in, its crop plan over those frames."""

    track: int
    frames: list[int]
    plan: face.FacePlan


def positive_name(k: int) -> str:
    """The input holding track ``k``'s (0-based, as VCD Face Tracks numbers them) identity conditioning."""
    return f"positive_{k + 1}"


def track_positives(masks: list[torch.Tensor], wired: list[Any]) -> list[Any]:
    """Each track's conditioning from ``positive_1 ..`` (None for a track that is empty in every frame: it is
    skipped and needs none)."""
    seen = [k for k, m in enumerate(masks) if bool((m > 0.5).any())]
    if seen and seen[-1] >= len(wired):
        raise ValueError(f"{NAME}: track_masks holds {len(masks)} tracks with faces up to track {seen[-1]}, but at most "
                         f"{len(wired)} identities can be wired (positive_1 .. positive_{len(wired)}); drop tracks in "
                         "VCD Face Tracks (raise min_frames) or refine in two passes.")
    missing = [k for k in seen if wired[k] is None]
    if missing:
        names = ", ".join(positive_name(k) for k in missing)
        raise ValueError(f"{NAME}: track(s) {missing} have no identity conditioning: wire {names} (track k's prompt "
                         f"goes into positive_<k+1>; {len(masks)} track(s) came in on track_masks).")
    return [wired[k] if k in seen else None for k in range(len(masks))]


class VCDFaceRefineTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDFaceRefineTracks",
            display_name=NAME,
            category="VCD/face",
            description="Face VCD per face track: each track's face gets its own crop window(s), its own identity "
                        "prompt (positive_1 for track 0, positive_2 for track 1, ...) and ONE sampling call over the "
                        "frames it is seen in (track k samples with seed + k). A track never pastes over another "
                        "track's face: where two faces' masks overlap, the frames keep their pixels.",
            is_input_list=True,  # track_masks is a list (one MASK per track); every other input arrives as a list of one
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("negative"),
                io.Vae.Input("vae"),
                io.Image.Input("image"),
                io.Mask.Input("track_masks", tooltip="One MASK per track (per frame, or one for all frames): VCD Face "
                                                     "Tracks' track_masks list, in its track order."),
                *refine_inputs(),
                *[io.Conditioning.Input(positive_name(k), optional=True,
                                        tooltip=f"Identity prompt of track {k} (the {k + 1}. mask of track_masks).")
                  for k in range(MAX_TRACKS)],
            ],
            outputs=[
                io.Image.Output(display_name="image"),
                io.Mask.Output(display_name="paste_mask", tooltip="All tracks' paste masks together (they never overlap)."),
                io.Mask.Output(display_name="track_paste_masks", is_output_list=True,
                               tooltip="Each track's paste mask, in track_masks' order."),
                io.Image.Output(display_name="window_preview",
                                tooltip="Each track's crop windows (thick) and face masks (thin) in the track's colour "
                                        "(VCD Face Tracks' colours); shown on the node before sampling starts."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, track_masks: list[torch.Tensor], **inputs: Any) -> io.NodeOutput:
        values = {name: single(NAME, name, value) for name, value in inputs.items()}
        positives = [values.pop(positive_name(k), None) for k in range(MAX_TRACKS)]
        return cls.refine(track_masks=track_masks, positives=positives, **values)

    @classmethod
    @checked
    def refine(cls, model, negative, vae, image: torch.Tensor, track_masks: list[torch.Tensor], positives: list[Any],
               crop_factor: float, guide_size: int, max_size: int, denoise: float, steps: int, cfg: float,
               sampler_name: str, scheduler: str, seed: int, gamma: float, feather: int, crop_mode: str) -> io.NodeOutput:
        refuse_whole_frame({"negative": negative, **{positive_name(k): p for k, p in enumerate(positives)}}, NAME,
                           "each face's crop window", tuple(WHOLE_FRAME))
        settings = SamplingSettings(seed, steps, cfg, sampler_name, scheduler, denoise, gamma)
        image = as_rgb(image, "image")
        masks = [face.masks_for_frames(m, image, f"track_masks (track {k})") for k, m in enumerate(track_masks)]
        notes = [f"{NAME}: {positive_name(k)} is wired but track_masks holds only {len(masks)} track(s): it is not used."
                 for k in range(len(masks), MAX_TRACKS) if positives[k] is not None]
        positives = track_positives(masks, positives)
        exclusive = face.exclusive_masks(torch.stack(masks))
        plans: list[TrackCrops] = []
        for k, mask in enumerate(masks):
            frames = [i for i in range(image.shape[0]) if bool((mask[i] > 0.5).any())]
            if not frames:
                continue
            plan = face.plan_crops(mask[frames], crop_factor, crop_mode, guide_size, max_size, paste=exclusive[k, frames])
            if plan.leaving:
                notes.append(outside_warning(NAME, [frames[i] for i in plan.leaving], f"track {k}'s face"))
            plans.append(TrackCrops(k, frames, plan))
        if not plans:
            notes.append(f"{NAME}: no track has a face in any frame; returning the frames unchanged.")
        for note in notes:
            log.warning(note)

        shown = [[None] * image.shape[0] for _ in masks]
        for k, frames, plan in plans:
            for i, window in zip(frames, plan.windows):
                shown[k][i] = window
        window_preview = preview.track_windows(image, shown, torch.stack(masks))
        paste_masks = torch.zeros((len(masks), *image.shape[:3]))
        refined = image.clone()
        if plans:
            send_preview_image(window_preview[plans[0].frames[0]], steps)  # where the windows are, before the long part
            warn_if_prior_lost(model, gamma, getattr(cls.hidden, "unique_id", None), NAME)
        for n, (k, frames, plan) in enumerate(plans):  # interrupts: core's ops check them per layer call
            send_progress_text(getattr(cls.hidden, "unique_id", None),
                               f"track {k} ({n + 1} of {len(plans)}): {len(frames)} frame(s)")
            own = dataclasses.replace(settings, seed=(seed + k) % (SEED_MAX + 1))
            track = face.refine_clip(image[frames], plan, feather, crop_denoiser(model, positives[k], negative, vae, own),
                                     onto=refined[frames])
            refined[frames], paste_masks[k, frames] = track.frames, track.paste_mask
        return io.NodeOutput(refined, paste_masks.sum(dim=0), list(paste_masks), window_preview,
                             ui=ui.PreviewText("\n".join(notes)) if notes else None)
