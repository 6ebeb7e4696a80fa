"""ComfyUI's real frontend (the one the host serves) runs our graphs: the Run button queues a tiny T2V
graph, its progress bar and output preview appear, and the gamma chart follows typed values unsaved."""

import os
import re
import time
from pathlib import Path

import pytest

from devtools.graphs import load_api, tinyize, with_webp_output

NOISE, SAMPLER, SAVE = "8", "12", "16"  # node ids in workflows/api/t2v_vcd.json (16: SaveVideo there)


def tiny_t2v() -> dict:
    """t2v_vcd on the tiny checkpoint, 64 px, 2 frames, 2 steps, without ADE, saving an animated WEBP (an image
    preview; the mp4 is checked on the server); a noise seed this server has not run yet (it would answer a
    repeated prompt from its cache, with no progress to show)."""
    graph = with_webp_output(tinyize(load_api("t2v_vcd"), frames=2, steps=2))
    assert graph[NOISE]["class_type"] == "VCD3DGaussianNoise" and graph[SAVE]["class_type"] == "SaveAnimatedWEBP"
    graph[NOISE]["inputs"]["noise_seed"] = time.time_ns() % 2**48
    return graph


def test_the_page_runs_the_frontend_the_host_pins(frontend):
    """The frontend under test is the one the host's requirements.txt pins (1.32.9 on 0.3.75, 1.49.6 on 0.33.0)."""
    pinned = re.search(r"comfyui-frontend-package==(\S+)", Path(os.environ["COMFYUI_DIR"], "requirements.txt").read_text())
    assert pinned, "the host's requirements.txt pins no comfyui-frontend-package"
    assert frontend.info["frontend"] == pinned[1]
    assert frontend.info["extensions"] == ["vcd.gammaChart"]


def test_run_button_shows_progress_and_the_output_preview(frontend, host, artifacts):
    graph = tiny_t2v()
    loaded = frontend.call("load", workflow=graph, name="tiny_t2v", api=True)
    assert loaded["unregistered"] == [] and loaded["link_problems"] == []
    run = frontend.call("queue", screenshot=str(artifacts / "tiny_t2v_run.png"))
    assert run["finished"] and ["execution_success", None] in run["events"], (run["events"], run["dialogs"], host.log_tail(2000))
    bars = [p for p in run["progress"] if p["node"] == SAMPLER]
    assert bars, f"no progress bar drawn on the sampler: {run['progress']} {run['events']}"
    red, green, blue = bars[-1]["pixel"]
    assert green > 100 and red < 60 and blue < 60, f"the progress bar is not drawn (pixel {bars[-1]['pixel']})"
    previews = {p["node"]: p["images"] for p in run["previews"]}
    assert SAVE in previews, f"no output preview on the save node: {run['previews']}"
    image = previews[SAVE][0]
    assert (image["width"], image["height"]) == (64, 64)
    assert "/view?" in image["src"] and "t2v_" in image["src"]


@pytest.fixture
def pipeline(frontend) -> dict:
    """The full pipeline (three VCD nodes with gamma) loaded in the frontend, without ADE."""
    graph = tinyize(load_api("full_pipeline"))
    report = frontend.call("load", workflow=graph, name="tiny_full_pipeline", api=True)
    return {"graph": graph, "report": report}


def test_every_vcd_node_with_gamma_gets_a_chart(pipeline):
    with_gamma = {nid for nid, node in pipeline["graph"].items()
                  if node["class_type"].startswith("VCD") and "gamma" in node["inputs"]}
    charts = {nid for nid, names in pipeline["report"]["widgets"].items() if "gamma_chart" in names}
    assert len(with_gamma) == 3 and charts == with_gamma


def test_gamma_chart_follows_typed_values_and_is_not_saved(frontend, pipeline, artifacts):
    typed = [0.5, 0.9, 0.0]
    result = frontend.call("gamma", node_id=NOISE, values=typed, screenshot=str(artifacts / "gamma_chart.png"))
    for value, reading in zip(typed, result["readings"]):
        assert reading["gamma"] == pytest.approx(value)
        bars = reading["bars"]
        assert bars is not None and len(bars) == 16, f"gamma {value}: bars drawn {bars}"
        full = bars[0]
        assert full > 20
        expected = [max(1.0, full * value**k) for k in range(16)]
        assert bars == pytest.approx(expected, abs=1.5), f"gamma {value}: bar heights {bars}, gamma^k gives {expected}"
    names = [name for name, _ in result["widgets"]]
    assert "gamma_chart" in names
    assert result["widgets_values"] == [value for name, value in result["widgets"] if name != "gamma_chart"]
    assert set(result["inputs"]) == set(pipeline["graph"][NOISE]["inputs"]) and result["inputs"]["gamma"] == 0.0


def test_run_with_a_missing_identity_shows_which_file_goes_where(frontend, artifacts):
    """The shipped T2V graph naming an identity this server lacks (mona.pt): Run is refused before anything runs,
    and the page shows our message naming the file, the folder and how to make one (not just "Value not in list")."""
    graph = tiny_t2v()
    loader = next(nid for nid, n in graph.items() if n["class_type"] == "VCDLoadIdentity")
    graph[loader]["inputs"]["embedding"] = "mona.pt"
    frontend.call("load", workflow=graph, name="missing_identity", api=True)
    run = frontend.call("queue", screenshot=str(artifacts / "missing_identity_run.png"), timeout_ms=60000)
    assert run["rejected"] and not any(kind == "execution_start" for kind, _ in run["events"]), run["events"]
    shown = " ".join(run["dialogs"] + [group["text"] for group in run["error_groups"]])
    if frontend.info["frontend"].startswith("1.32."):  # its dialog shows the server's details: our message
        assert "no identity file 'mona.pt' in models/embeddings" in shown and "train_identity.json" in shown, shown
    else:  # 1.49.6's errors panel names the node and input (details only on the node) and lists mona.pt as missing
        assert "Load Identity (models/embeddings) - embedding" in shown and "mona.pt" in shown, shown





def tiny_tiled_refine(host) -> tuple[dict, str, str]:
    """(graph, refine node, preview node): the full pipeline's VCD Tiled Refine alone on an 80x64 picture (two 64 px
    tiles), 1 step on the tiny model, its tile plan into Preview Image; a seed this server has not run yet."""
    from PIL import Image

    full = tinyize(load_api("full_pipeline"), steps=1)
    refine, picture, preview = "18", "30", "31"
    assert full[refine]["class_type"] == "VCDTiledRefine" and picture not in full and preview not in full
    Image.new("RGB", (80, 64), (90, 120, 150)).save(host.input_dir / "vcd_tiles_80x64.png")
    full[refine]["inputs"].update(image=[picture, 0], seed=time.time_ns() % 2**48)
    keep, todo = set(), [refine]
    while todo:
        nid = todo.pop()
        if nid not in keep and nid in full:
            keep.add(nid)
            todo += [str(v[0]) for v in full[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    graph = {nid: full[nid] for nid in keep}
    graph[picture] = {"class_type": "LoadImage", "inputs": {"image": "vcd_tiles_80x64.png"}}
    graph[preview] = {"class_type": "PreviewImage", "inputs": {"images": [refine, 1]}}
    return graph, refine, preview


def test_tiled_refine_shows_its_tile_plan_while_it_runs_and_the_plan_image_after(frontend, host, artifacts):
    """Run in the real page: the tile plan reaches the browser as Tiled Refine's live preview (a PNG) and is drawn on
    the node before it has finished; after the run the Preview Image node shows the tile_plan output."""
    graph, refine, preview = tiny_tiled_refine(host)
    loaded = frontend.call("load", workflow=graph, name="tiny_tiled_refine", api=True)
    assert loaded["unregistered"] == [] and loaded["link_problems"] == []
    run = frontend.call("queue", screenshot=str(artifacts / "tiny_tiled_refine_run.png"), timeout_ms=120000)
    assert run["finished"] and ["execution_success", None] in run["events"], (run["events"], run["dialogs"], host.log_tail(2000))
    assert ["executing", refine] in run["events"], run["events"]  # what "finished" is judged by (no "executed" here)
    plans = [p for p in run["live"] if p["node"] == refine and p["type"] == "image/png"]
    assert plans and not plans[0]["executed"], f"no tile plan preview sent while the node ran: {run['live']}"
    assert plans[0]["width"] >= 80 and plans[0]["height"] >= 64
    shown = run["shown"].get(refine)
    assert shown and not shown["executed"], f"no live preview drawn on Tiled Refine while it ran: {run['shown']}"
    previews = {p["node"]: p["images"] for p in run["previews"]}
    assert preview in previews, f"no output preview on the Preview Image node: {run['previews']}"
    image = previews[preview][0]
    assert (image["width"], image["height"]) == (80, 64) and "/view?" in image["src"]
