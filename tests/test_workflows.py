"""Shipped workflows in ComfyUI's real frontend: each loads with no missing node, every link connects,
and the prompt the frontend builds from it (``app.graphToPrompt``) equals its API twin, input for input.

Workflows with AnimateDiff-Evolved nodes need the real ADE (``../shared/vendor``) and skip without it;
the others run anywhere.
"""

import json
from pathlib import Path

import pytest

from devtools import ui_workflow
from devtools.host import ade_available

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


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
def loaded(request, frontend, artifacts) -> tuple[Path, dict, dict]:
    """(path, UI workflow, what the frontend reports after loading it); its screenshot is kept as an artifact."""
    path = request.param
    ui = read_workflow(path)
    report = frontend.call("load", workflow=ui, name=path.name, screenshot=str(artifacts / f"{path.stem}.png"))
    return path, ui, report


def test_every_api_twin_has_a_ui_workflow():
    assert {p.name for p in UI_FILES} == {p.name for p in (WORKFLOWS / "api").glob("*.json")}
    assert UI_FILES


def test_workflow_loads_with_no_missing_node(loaded):
    path, ui, report = loaded
    assert report["dialogs"] == [], f"{path.name}: the frontend opened a dialog on load"
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


def test_frontend_prompt_equals_the_api_twin(loaded):
    path, _, report = loaded
    prompt = {nid: {"class_type": node.get("class_type"), "inputs": node.get("inputs")} for nid, node in report["prompt"].items()}
    twin = api_twin(path)
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
    unknown = {n["type"] for n in nodes.values()} - set(schemas)
    assert not unknown, f"{path.name}: node types the server does not know"
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        assert src_slot < len(schemas[nodes[src]["type"]]["output"]) and dst_slot < len(nodes[dst]["inputs"]), \
            f"{path.name}: link {link_id} names a slot its nodes do not have"
        out_type = schemas[nodes[src]["type"]]["output"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        spec = dict(ui_workflow._ordered_inputs(schemas[nodes[dst]["type"]]))[target["name"]]
        assert out_type == kind == ui_workflow._input_type(spec), (link_id, out_type, target)
        assert target["link"] == link_id
