"""Bad widget values on a real server: every VCD node stops naming the input, never a silent result.

ComfyUI lets NaN through min/max, skips range checks for values wired from a Primitive node, and
0.3.75 does not check V3 combo values; the pack's own check (``nodes/inputs.py``) must catch all three.
"""

from __future__ import annotations

import math

import pytest

from devtools import graphs

TINY = {"class_type": graphs.TINY_CHECKPOINT, "inputs": {"seed": 0}}
IMAGE = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 8421504}}
TEXT = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a person"}}


def refine_inputs(**extra) -> dict:
    return {"model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["pos", 0], "vae": ["ckpt", 2],
            "image": ["img", 0], "denoise": 0.5, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "normal", "seed": 0, "gamma": 0.0, **extra}


NODES = {
    "VCD3DGaussianNoiseLatent": (
        {"width": 64, "height": 64, "frames": 2, "seed": 0, "gamma": 0.1, "mode": "ar1"},
        {"class_type": "SaveLatent", "inputs": {"samples": ["node", 0], "filename_prefix": "vcd_bad/x"}},
    ),
    "VCDFaceRefine": (
        refine_inputs(crop_factor=3.0, guide_size=64, max_size=128, feather=5, crop_mode="union",
                      detector="opencv_haar"),
        {"class_type": "PreviewImage", "inputs": {"images": ["node", 0]}},
    ),
    "VCDTiledRefine": (
        refine_inputs(tile_size=64, overlap=16, tile_batch=1),
        {"class_type": "PreviewImage", "inputs": {"images": ["node", 0]}},
    ),
    "VCDFaceRefineTracks": (
        {**refine_inputs(crop_factor=3.0, guide_size=64, max_size=128, feather=5, crop_mode="union"),
         "track_masks": ["mask", 0], "positive_1": ["pos", 0]},
        {"class_type": "PreviewImage", "inputs": {"images": ["node", 0]}},
    ),
    "VCDFaceDetect": ({"image": ["img", 0], "detector": "opencv_haar"},
                      {"class_type": "PreviewImage", "inputs": {"images": ["node", 1]}}),
    "VCDFaceTracks": ({"image": ["img", 0], "detector": "opencv_haar", "order": "left_to_right", "track": 0,
                       "min_iou": 0.1, "max_missed": 2, "min_frames": 1, "fill_gaps": True},
                      {"class_type": "PreviewImage", "inputs": {"images": ["node", 2]}}),
    "VCDTrainIdentity": (
        {"model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "images": ["img", 0], "name": "bad_input_case",
         "class_word": "man", "tokens": 4, "steps": 1, "learning_rate": 1e-3, "batch_size": 1, "seed": 0,
         "augment": False, "overwrite": False, "resolution": 64, "gradient_checkpointing": False},
        {"class_type": "PreviewImage", "inputs": {"images": ["node", 1]}},
    ),
}
EXTRA_NODES = {"VCDFaceRefineTracks": {"mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}}}

# (node, input, bad value, sent as: "widget" = a constant in the graph, "primitive" = wired from a Primitive node)
CASES = [
    ("VCD3DGaussianNoiseLatent", "gamma", math.nan, "widget", "finite"),
    ("VCD3DGaussianNoiseLatent", "gamma", 1.5, "primitive", "at most 1.0"),
    ("VCD3DGaussianNoiseLatent", "width", 0, "primitive", "at least 16"),
    ("VCD3DGaussianNoiseLatent", "frames", 0, "primitive", "at least 1"),
    ("VCD3DGaussianNoiseLatent", "mode", "fast", "widget", "not one of the choices"),
    ("VCDFaceRefine", "crop_factor", 0.0, "primitive", "at least 1.0"),
    ("VCDFaceRefine", "cfg", math.nan, "widget", "finite"),
    ("VCDFaceRefine", "max_size", 0, "primitive", "at least 64"),
    ("VCDFaceRefine", "sampler_name", "no_such_sampler", "widget", "not one of the choices"),
    ("VCDFaceRefine", "crop_mode", "tracked", "widget", "not one of the choices"),
    ("VCDFaceRefineTracks", "crop_factor", 0.0, "primitive", "at least 1.0"),
    ("VCDFaceRefineTracks", "cfg", math.nan, "widget", "finite"),
    ("VCDFaceRefineTracks", "crop_mode", "tracked", "widget", "not one of the choices"),
    ("VCDTiledRefine", "tile_size", 0, "primitive", "at least 64"),
    ("VCDTiledRefine", "denoise", math.inf, "widget", "finite"),
    ("VCDTiledRefine", "scheduler", "no_such_scheduler", "widget", "not one of the choices"),
    ("VCDFaceDetect", "detector", "no_such_detector", "widget", "not one of the choices"),
    ("VCDFaceTracks", "min_iou", math.nan, "widget", "finite"),
    ("VCDFaceTracks", "max_missed", -1, "primitive", "at least 0"),
    ("VCDFaceTracks", "order", "by_size", "widget", "not one of the choices"),
    ("VCDTrainIdentity", "steps", -5, "primitive", "at least 1"),
    ("VCDTrainIdentity", "learning_rate", math.nan, "widget", "finite"),
]


def case_graph(node: str, name: str, value, sent: str) -> dict:
    inputs, output = NODES[node]
    graph = {"ckpt": TINY, "img": IMAGE, "pos": TEXT, "node": {"class_type": node, "inputs": dict(inputs)}, "out": output,
             **EXTRA_NODES.get(node, {})}
    if sent == "primitive":
        kind = "PrimitiveFloat" if isinstance(value, float) else "PrimitiveInt"
        graph["prim"] = {"class_type": kind, "inputs": {"value": value}}
        graph["node"]["inputs"][name] = ["prim", 0]
    else:
        graph["node"]["inputs"][name] = value
    return graph


def refusal(result) -> str:
    """The message a refused run shows the artist: a validation error or the node's execution error."""
    if result.http_status == 400:
        errors = [e for node in result.node_errors.values() for e in node["errors"]]
        return " ".join(f"{e['extra_info'].get('input_name')}: {e['message']} {e['details']}" for e in errors)
    error = result.execution_error
    assert error is not None, f"the run was not refused: {result.describe()}"
    assert "Traceback" not in error["exception_message"]
    return f"{error['node_type']}: {error['exception_message']}"


@pytest.mark.parametrize("node,name,value,sent,expected", CASES, ids=lambda v: str(v))
def test_bad_value_is_refused_naming_the_input(host, node, name, value, sent, expected):
    result = host.run(case_graph(node, name, value, sent))
    assert not result.ok
    message = refusal(result)
    assert name in message, message
    if result.http_status != 400:  # ComfyUI's own check caught it first (0.33.0 checks combos): also fine
        assert expected in message, message


def test_good_values_through_primitives_still_run(host):
    graph = case_graph("VCD3DGaussianNoiseLatent", "frames", 3, "primitive")
    result = host.run(graph)
    assert result.ok, result.describe()
