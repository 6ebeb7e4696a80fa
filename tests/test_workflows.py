"""Shipped workflows in ComfyUI's real frontend: each loads with no missing node, every link connects,
and the prompt the frontend builds from it (``app.graphToPrompt``) equals its API twin, input for input.

Workflows with AnimateDiff-Evolved nodes need the real ADE (``../shared/vendor``) and skip without it;
the others run anywhere.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from devtools import graphs, ui_workflow
from devtools.host import ade_available

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
FRONTEND_ONLY = {"Note"}  # drawn by the frontend, never sent to the server


def read_workflow(path: Path) -> dict:
    """A UI workflow; skips when it uses AnimateDiff-Evolved's nodes and ADE is not beside the clone."""
    ui = json.loads(path.read_text())
    ade_nodes = sorted({n["type"] for n in ui["nodes"] if n["type"].startswith("ADE_")})
    if ade_nodes and not ade_available():
        pytest.skip(f"{path.name} uses AnimateDiff-Evolved ({', '.join(ade_nodes)}), not beside this clone (../shared/vendor)")
    return ui


def api_twin(path: Path) -> dict:
    """The API twin without ``_meta`` (titles: the frontend sends them too, and nothing reads them)."""
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    return {nid: {"class_type": node["class_type"], "inputs": node["inputs"]} for nid, node in api.items()}


@pytest.fixture(scope="module", params=UI_FILES, ids=lambda p: p.stem)
def loaded(request, host, frontend, artifacts) -> tuple[Path, dict, dict]:
    """(path, UI workflow, what the frontend reports after loading it, with ``layout``: after Fit view on a
    1600x900 canvas, with the photos its LoadImage nodes read in the input folder); its screenshot is kept."""
    graphs.provide_photos(host.input_dir)
    path = request.param
    ui = read_workflow(path)
    # every shipped workflow names model files this server lacks: wait until the frontend lists them
    report = frontend.call("load", workflow=ui, name=path.name, screenshot=str(artifacts / f"{path.stem}.png"),
                           problems_ms=15000)
    report["layout"] = frontend.call("layout", screenshot=str(artifacts / f"{path.stem}_fit_1600x900.png"))
    return path, ui, report


def test_every_api_twin_has_a_ui_workflow():
    assert {p.name for p in UI_FILES} == {p.name for p in (WORKFLOWS / "api").glob("*.json")}
    assert UI_FILES


def test_workflow_loads_with_no_missing_node(loaded):
    path, ui, report = loaded
    others = [d for d in report["dialogs"] if not d.startswith("Missing Models")]
    assert others == [], f"{path.name}: the frontend opened a dialog on load"
    missing = [g["text"] for g in report["error_groups"] if g["group"] == "missing-node"]
    assert missing == [], f"{path.name}: the frontend lists missing nodes"
    assert report["unregistered"] == []
    assert report["node_count"] == len(ui["nodes"])


def test_every_link_connects_as_written(loaded):
    """Each link joins existing slots of matching types, and joins the output and the named input the
    file says: none was dropped or repaired on load (newer frontends renumber input slots, not names)."""
    path, ui, report = loaded
    assert report["link_problems"] == []
    inputs = {node["id"]: [i["name"] for i in node.get("inputs", [])] for node in ui["nodes"]}
    written = [[link_id, src, src_slot, dst, inputs[dst][dst_slot] if dst_slot < len(inputs[dst]) else None, kind]
               for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]]
    assert sorted(report["links"]) == sorted(written), f"{path.name}: the frontend holds other links than the file"


def as_twin_inputs(inputs: dict, twin_inputs: dict, spec: dict) -> dict:
    """The frontend's inputs for one node in the older schema the files are made on (0.3.75's): a nested dynamic
    choice (0.33.0's Save Video ``format.codec``) as the flat input it replaced (``codec``), and an input the twin
    leaves out dropped where it holds the newer schema's default (0.33.0's Create Video ``bit_depth`` 8)."""
    defaults: dict = {}

    def collect(sections: dict) -> None:  # nested choices too; a dynamic choice defaults to its first option
        for section in ("required", "optional"):
            for name, entry in sections.get(section, {}).items():
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                if "default" in options:
                    defaults.setdefault(name, options["default"])
                elif entry[0] == "COMFY_DYNAMICCOMBO_V3" and options.get("options"):
                    defaults.setdefault(name, options["options"][0]["key"])
                for option in options.get("options", []) if entry[0] == "COMFY_DYNAMICCOMBO_V3" else []:
                    collect(option["inputs"])

    collect(spec["input"])
    flat: dict = {}
    for name, value in inputs.items():
        short = name.rsplit(".", 1)[-1]
        if short not in twin_inputs and short in defaults and value == defaults[short]:
            continue
        if "." in name:
            flat[short] = value
        else:
            flat.setdefault(name, value)
    return flat


def test_frontend_prompt_equals_the_api_twin(loaded, schemas):
    """Input for input, read in the files' schema (as_twin_inputs): on 0.33.0 the same values land in its newer
    video widgets."""
    path, _, report = loaded
    twin = api_twin(path)
    prompt = {nid: {"class_type": node.get("class_type"),
                    "inputs": as_twin_inputs(node.get("inputs") or {}, twin.get(nid, {}).get("inputs", {}),
                                             schemas[node.get("class_type")])}
              for nid, node in report["prompt"].items()}
    differences = {nid: {"frontend": prompt.get(nid), "twin": twin.get(nid)}
                   for nid in sorted(set(prompt) | set(twin), key=int) if prompt.get(nid) != twin.get(nid)}
    assert differences == {}, f"{path.name}: regenerate it (python -m devtools.ui_workflow) or fix the twin"


@pytest.fixture(scope="module")
def schemas(host) -> dict:
    return host.object_info()


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_link_types_match_the_server_schemas(path, schemas):
    """Without a browser too: every node type is one the server knows, and each link's type is exactly
    its source output's and its target input's in the server's schemas."""
    ui = read_workflow(path)
    nodes = {n["id"]: n for n in ui["nodes"]}
    unknown = {n["type"] for n in nodes.values()} - set(schemas) - FRONTEND_ONLY
    assert not unknown, f"{path.name}: node types the server does not know"
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert src_slot < len(schemas[nodes[src]["type"]]["output"]) and dst_slot < len(nodes[dst]["inputs"]), \
            f"{path.name}: link {link_id} names a slot its nodes do not have"
        out_type = schemas[nodes[src]["type"]]["output"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        spec = dict(ui_workflow._ordered_inputs(schemas[nodes[dst]["type"]]))[target["name"]]
        assert out_type == kind == ui_workflow._input_type(spec), (link_id, out_type, target)
        assert target["link"] == link_id


def boxes_overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_fit_view_keeps_text_readable_and_no_node_overlaps_another(loaded):
    """After Fit view on a 1600x900 canvas the frontend still draws text (its level-of-detail threshold, with its
    default font-size setting), and no two nodes' boxes (title bars included) intersect."""
    path, _, report = loaded
    layout = report["layout"]
    assert layout["canvas"] == [1600, 900]
    assert layout["scale"] >= layout["lod_threshold"] > 0.5 and not layout["low_quality"], \
        f"{path.name}: Fit view zooms to {layout['scale']:.2f}, text is hidden below {layout['lod_threshold']:.2f}"
    nodes = layout["nodes"]
    overlaps = [(a["title"], b["title"]) for i, a in enumerate(nodes) for b in nodes[i + 1:] if boxes_overlap(a["rect"], b["rect"])]
    assert overlaps == [], f"{path.name}: nodes overlap"


def test_each_stage_is_a_titled_group_holding_its_nodes(loaded):
    """One group per stage of the API twin (``_meta.stage``), titled with it, holding exactly that stage's nodes."""
    path, _, report = loaded
    stages: dict[str, set[str]] = {}
    for nid, node in json.loads((WORKFLOWS / "api" / path.name).read_text()).items():
        stages.setdefault(node["_meta"]["stage"], set()).add(nid)
    groups = {g["title"]: set(g["nodes"]) for g in report["layout"]["groups"]}
    assert groups == stages, f"{path.name}: the frontend's groups hold other nodes than the stages say"


def test_the_note_says_what_to_install_and_where(loaded):
    """A Note at the top left names every model file the loaders ask for and its folder under models/, the packs,
    what to change first and the paper's defaults."""
    path, ui, report = loaded
    [note] = [n for n in ui["nodes"] if n["type"] == "Note"]
    text = note["widgets_values"][0]
    for model in (m for n in ui["nodes"] for m in n["properties"].get("models", [])):
        assert model["name"] in text and f"{model['directory']}/" in text, (path.name, model)
    for words in ("Packs:", "Change first:", "Paper defaults:"):
        assert words in text, (path.name, words)
    top_left = min(report["layout"]["nodes"], key=lambda n: (n["rect"][1] + n["rect"][0]))
    assert top_left["type"] == "Note", f"{path.name}: the note is not where reading starts"


def test_missing_models_are_listed_on_load(loaded):
    """Every model file a loader names (its ``models`` property) and this server lacks is listed by the frontend as
    soon as the workflow loads: the missing-models dialog (1.32.9) or the errors panel (1.49.6)."""
    path, ui, report = loaded
    models = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
    assert models, f"{path.name}: no loader carries model metadata"
    shown = " ".join(report["dialogs"] + [g["text"] for g in report["error_groups"] if g["group"].startswith("missing-model")])
    missing = [m["name"] for m in models if m["name"] not in shown]
    assert missing == [], f"{path.name}: the frontend did not list these missing files: {shown!r}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_template_browser_thumbnail_is_served_and_shows_something(path, host):
    """The template browser asks for /api/workflow_templates/<pack folder>/<name>.jpg: served, and a picture
    (the graph after Fit view), not a blank card."""
    listed = requests.get(f"{host.url}/workflow_templates", timeout=10).json()
    assert path.stem in listed["vcd"]  # the host links this pack as custom_nodes/vcd
    answer = requests.get(f"{host.url}/api/workflow_templates/vcd/{path.stem}.jpg", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as picture:
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.shape == (360, 640) and pixels.std() > 10 and len(np.unique(pixels)) > 64
