"""Face VCD and Tiled VCD on a real ComfyUI server: the shipped full pipeline and refine graphs."""

import io
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from devtools.node_texts import NodeTexts

WINDOW_YELLOW, TILE_BLUE = (255, 217, 0), (51, 153, 255)  # vcd_core.face.WINDOW_COLOUR, tiling.TILE_COLOURS[0]


def per_prompt_preview_method(host) -> bool:
    """Whether the host reads ``extra_data["preview_method"]`` (0.33.0 does, 0.3.75 only has --preview-method)."""
    return "def set_preview_method" in (Path(host.comfyui_dir) / "latent_preview.py").read_text()


def check_plan_preview(events: NodeTexts, node: str, side: int, colour: tuple, latent_previews: bool) -> None:
    """The node's first live preview is our PNG (window or tile plan, ``colour`` drawn on a square frame), sent before
    its sampler's first step; the sampler's latent previews (JPEG) follow only when the preview method allows them."""
    previews = events.previews(node)
    assert previews and previews[0][0] == "image/png", [mime for mime, _ in previews]
    with Image.open(io.BytesIO(previews[0][1])) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=int)
    assert pixels.shape[0] == pixels.shape[1] >= side  # the server shows it up to --preview-size (512)
    assert (np.abs(pixels - colour).max(axis=-1) < 8).sum() > pixels.shape[0]  # at least one edge's worth
    order = [e for e in events.events if (e[0] == "preview" and e[1] == node)
             or (e[0] == "progress" and str(e[1]["node"]) == node and e[1]["value"] >= 1)]
    assert order[0][0] == "preview", "the plan preview came after sampling had started"
    latent = [mime for mime, _ in previews[1:]]
    assert latent == (["image/jpeg"] * len(latent) if latent_previews else []) and bool(latent) == latent_previews


def test_full_pipeline_writes_a_video_upscaled_as_the_graph_says(host, shipped, read_video):
    graph = shipped("full_pipeline", frames=8)
    latent_previews = per_prompt_preview_method(host)
    with NodeTexts(host.url) as events:
        result = host.run(graph, client_id=events.client_id, extra_data={"preview_method": "latent2rgb"})
    assert result.ok, result.describe()
    [video] = host.output_files(result)
    codec, frames = read_video(video)
    assert video.suffix == ".mp4" and codec == "h264"
    side = round(64 * graph["16"]["inputs"]["scale_by"] * graph["17"]["inputs"]["scale_by"])  # upscale, then 0.5
    assert len(frames) == 8 and frames[0].size == (side, side)
    check_plan_preview(events, "18", side, TILE_BLUE, latent_previews)


def test_refine_video_workflow_refines_the_face_of_loaded_frames(host, shipped, read_video):
    photo = Image.fromarray(skimage.data.astronaut()[:256, 96:352])
    clip = [photo.rotate(0, translate=(2 * i, 0)) for i in range(8)]
    clip[0].save(host.input_dir / "vcd_frames.webp", save_all=True, append_images=clip[1:], lossless=True)
    with NodeTexts(host.url) as events:  # the artist turned live previews off: only the window preview shows
        result = host.run(shipped("refine_video"), client_id=events.client_id, extra_data={"preview_method": "none"})
    assert result.ok, result.describe()
    check_plan_preview(events, "8", 256, WINDOW_YELLOW, latent_previews=False)
    [video] = host.output_files(result)
    codec, frames = read_video(video)
    assert video.suffix == ".mp4" and codec == "h264" and len(frames) == 8 and frames[0].size == (256, 256)
    changed = np.abs(np.asarray(frames[0], dtype=float) - np.asarray(clip[0].convert("RGB"), dtype=float)).mean(axis=2)
    rows, cols = np.nonzero(changed > 40)
    # Only the face region (around rows 60-170, columns 80-180 of this crop) is repainted.
    assert len(rows) > 100 and rows.max() < 230 and cols.min() > 20


def test_out_of_range_refine_inputs_are_rejected_naming_the_input(host, shipped):
    graph = shipped("full_pipeline")
    tiled = next(nid for nid, n in graph.items() if n["class_type"] == "VCDTiledRefine")
    graph[tiled]["inputs"]["tile_size"] = 32
    graph[tiled]["inputs"]["denoise"] = 0.0
    result = host.run(graph)
    assert result.http_status == 400
    errors = {e["extra_info"]["input_name"]: e["type"] for e in result.node_errors[tiled]["errors"]}
    assert errors == {"tile_size": "value_smaller_than_min", "denoise": "value_smaller_than_min"}
