"""Face tracks: every face in every frame, linked across frames; a MASK per track and a colour preview."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..vcd_core import preview, tracks
from .channels import as_rgb
from .face import HAAR, detect_boxes, detector_options
from .inputs import checked

ORDERS = ["left_to_right", "first_seen"]
log = logging.getLogger("vcd")


def describe(found: list[tracks.Track]) -> str:
    """One line per track: its index (its colour in the preview is PALETTE[index]) and the frames it is seen in."""
    lines = [f"{len(found)} face track(s)"]
    for k, track in enumerate(found):
        seen = [i for i, b in enumerate(track) if b is not None]
        lines.append(f"track {k}: frames {seen[0]}-{seen[-1]} ({len(seen)} seen)")
    return "\n".join(lines)


class VCDFaceTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDFaceTracks",
            display_name="VCD Face Tracks",
            category="VCD/face",
            description="Every face in every frame, linked into tracks across frames (overlap + motion; a face "
                        "missed for a few frames keeps its track). Outputs the chosen track's MASK, one MASK per "
                        "track as a list (one empty mask when none is found), and a preview with a colour per track.",
            inputs=[
                io.Image.Input("image"),
                io.Combo.Input("detector", options=detector_options(), default=HAAR),
                io.Combo.Input("order", options=ORDERS, default="left_to_right",
                               tooltip="Track numbering: by mean horizontal position, or by first appearance."),
                io.Int.Input("track", default=0, min=0, max=63, tooltip="The track given on the 'mask' output."),
                io.Float.Input("min_iou", default=0.1, min=0.0, max=1.0, step=0.01,
                               tooltip="Least overlap of a face with a track's predicted box to continue that track."),
                io.Int.Input("max_missed", default=2, min=0, max=100,
                             tooltip="Frames a face may go undetected and keep its track."),
                io.Int.Input("min_frames", default=1, min=1, max=10000,
                             tooltip="Tracks seen in fewer frames are dropped (stray detections)."),
                io.Boolean.Input("fill_gaps", default=True,
                                 tooltip="Frames where a tracked face was missed get its box interpolated."),
            ],
            outputs=[
                io.Mask.Output(display_name="mask"),
                io.Mask.Output(display_name="track_masks", is_output_list=True),
                io.Image.Output(display_name="preview"),
                io.Int.Output(display_name="count"),
            ],
        )

    @classmethod
    @checked
    def execute(cls, image: torch.Tensor, detector: str, order: str, track: int, min_iou: float, max_missed: int,
                min_frames: int, fill_gaps: bool) -> io.NodeOutput:
        image = as_rgb(image, "image")
        found = tracks.link_tracks(detect_boxes(image, detector), min_iou, max_missed, min_frames)
        if order == "left_to_right":
            found = tracks.order_left_to_right(found)
        if fill_gaps:
            found = [tracks.fill_gaps(t) for t in found]
        frames, height, width = image.shape[:3]
        masks = tracks.track_masks(found, height, width) if found else torch.zeros((0, frames, height, width))
        text = describe(found)
        if track < len(found):
            chosen = masks[track]
        else:
            chosen = torch.zeros((frames, height, width))
            warning = f"VCD Face Tracks: no track {track} ({len(found)} found); its mask is empty."
            log.warning(warning)
            text = f"{warning}\n{text}"
        per_track = list(masks) or [torch.zeros((frames, height, width))]  # a list output is never empty
        return io.NodeOutput(chosen, per_track, preview.outline_all(image, masks), len(found), ui=ui.PreviewText(text))
