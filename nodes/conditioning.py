"""What a stage that samples part of the frame (a face crop, a tile) cannot take from whole-frame conditioning.

Core lays areas, masks, ControlNet hints and GLIGEN boxes out on the latent it samples. Face Refine samples a
crop and Tiled Refine a tile, so those would be stretched or squashed onto it: a silent wrong result. The refine
nodes refuse them by name instead (Tiled Refine cuts plain conditioning masks per tile itself).
"""

from __future__ import annotations

WHOLE_FRAME = {
    "area": "area conditioning (Conditioning (Set Area))",
    "set_area_to_bounds": "a mask with set_area_to_bounds (Conditioning (Set Mask), set_cond_area 'mask bounds')",
    "mask": "a conditioning mask (Conditioning (Set Mask), VCD Regional Identity)",
    "control": "a ControlNet or T2I-Adapter (Apply ControlNet)",
    "gligen": "GLIGEN boxes (GLIGENTextBoxApply)",
}


def refuse_whole_frame(conditionings: dict[str, list | None], node: str, part: str, keys: tuple[str, ...],
                       hint: str = "") -> None:
    """A clear error when any of ``conditionings`` (input name -> CONDITIONING) carries one of ``keys``."""
    for name, conditioning in conditionings.items():
        for _, values in conditioning or ():
            found = next((key for key in keys if values.get(key) is not None and values.get(key) is not False), None)
            if found:
                raise ValueError(
                    f"{node}: {name} carries {WHOLE_FRAME[found]}, laid out on the whole frame; {node} samples "
                    f"{part}, where it would land stretched. Connect {name} without it (e.g. straight from the text "
                    f"encode); use it in the T2V sampler.{hint}")
