"""Face VCD and Tiled VCD on a real ComfyUI server: the shipped full pipeline and refine graphs."""

import numpy as np
import skimage.data
from PIL import Image


def test_full_pipeline_writes_a_video_upscaled_as_the_graph_says(host, shipped, read_video):
    graph = shipped("full_pipeline", frames=8)
    result = host.run(graph)
    assert result.ok, result.describe()
    [video] = host.output_files(result)
    codec, frames = read_video(video)
    assert video.suffix == ".mp4" and codec == "h264"
    side = round(64 * graph["16"]["inputs"]["scale_by"] * graph["17"]["inputs"]["scale_by"])  # upscale, then 0.5
    assert len(frames) == 8 and frames[0].size == (side, side)


def test_refine_video_workflow_refines_the_face_of_loaded_frames(host, shipped, read_video):
    photo = Image.fromarray(skimage.data.astronaut()[:256, 96:352])
    clip = [photo.rotate(0, translate=(2 * i, 0)) for i in range(8)]
    clip[0].save(host.input_dir / "vcd_frames.webp", save_all=True, append_images=clip[1:], lossless=True)
    result = host.run(shipped("refine_video"))
    assert result.ok, result.describe()
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
