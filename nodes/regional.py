"""Regional identities: one identity's conditioning confined to a region of the frame (a MASK per frame, or a box)."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io, ui

from ..vcd_core import regions
from .inputs import checked

log = logging.getLogger("vcd")

REGIONS = ["mask", "box"]
BOX_SIDE = 512  # pixels of a box mask drawn without a latent to size it (ComfyUI resizes masks to the latent)


class VCDRegionalIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDRegionalIdentity",
            display_name="VCD Regional Identity",
            category="VCD/identity",
            description="Confine one identity's prompt (e.g. 'embedding:mona woman ...') to a region: a MASK per frame "
                        "(from VCD Face Tracks) or one for all frames, or a box. Combine it with a full-frame scene "
                        "prompt and the other identities through Conditioning (Combine). Works with "
                        "AnimateDiff-Evolved's context windows (a per-frame mask is sliced to each window).",
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The identity's prompt, encoded."),
                io.Combo.Input("region", options=REGIONS, default="mask"),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01),
                io.Float.Input("x", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Box left, fraction of the width."),
                io.Float.Input("y", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Box top, fraction of the height."),
                io.Float.Input("width", default=0.5, min=0.01, max=1.0, step=0.01, tooltip="Box width, fraction."),
                io.Float.Input("height", default=1.0, min=0.01, max=1.0, step=0.01, tooltip="Box height, fraction."),
                io.Mask.Input("mask", optional=True, tooltip="One mask per frame, or one for all (region 'mask')."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The latent you sample: checks the mask's frame count and aspect ratio."),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    @checked
    def execute(cls, conditioning, region: str, strength: float, x: float, y: float, width: float, height: float,
                mask: torch.Tensor | None = None, latent: dict | None = None) -> io.NodeOutput:
        import node_helpers

        frames = frame_size = None
        if latent is not None:
            samples = latent["samples"]
            if samples.ndim != 4:
                raise ValueError(f"latent: expected frames as a batch [frames, channels, h, w] (SD1.5 with "
                                 f"AnimateDiff), got shape {tuple(samples.shape)}; leave 'latent' unwired.")
            frames, frame_size = samples.shape[0], (samples.shape[-2] * 8, samples.shape[-1] * 8)
        if region == "box":
            pixels = frame_size or (BOX_SIDE, BOX_SIDE)
            region_mask = regions.box_mask(x, y, width, height, *pixels)
        elif mask is None:
            raise ValueError("VCD Regional Identity: region 'mask' needs a MASK wired into 'mask' (one per frame, or one "
                             "for all frames), or set region to 'box'.")
        else:
            region_mask = regions.check_region_mask(mask, frames, frame_size)
        # What core's ConditioningSetMask sets: the model sees the whole frame, its result counts inside the mask.
        out = node_helpers.conditioning_set_values(
            conditioning, {"mask": region_mask, "set_area_to_bounds": False, "mask_strength": strength})
        if latent is None and region == "mask" and region_mask.shape[0] > 1:
            note = (f"VCD Regional Identity: latent is unwired, so the mask's {region_mask.shape[0]} frames are not "
                    "checked against the clip (core cuts a longer mask to the clip's frames and fails on a shorter "
                    "one); wire the latent you sample into 'latent'.")
            log.warning(note)
            return io.NodeOutput(out, ui=ui.PreviewText(note))
        return io.NodeOutput(out)
