"""Shipped workflows: UI graphs equal their API twins and use only known nodes with matching link types."""

import json
from pathlib import Path

import pytest

from devtools import ui_workflow

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


@pytest.fixture(scope="module")
def schemas(host, shared_dir):
    ade = ui_workflow.load_ade_snapshot(shared_dir / "data" / "animatediff-evolved-object_info.json")
    return {**ade, **host.object_info()}


def test_every_api_twin_has_a_ui_workflow():
    assert {p.name for p in UI_FILES} == {p.name for p in (WORKFLOWS / "api").glob("*.json")}
    assert UI_FILES


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_converts_to_its_api_twin(path, schemas):
    ui = json.loads(path.read_text())
    twin = ui_workflow.strip_meta(json.loads((WORKFLOWS / "api" / path.name).read_text()))
    assert ui_workflow.ui_to_api(ui, schemas) == twin


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_nodes_and_links_are_valid(path, schemas, shared_dir):
    ui = json.loads(path.read_text())
    ade = ui_workflow.load_ade_snapshot(shared_dir / "data" / "animatediff-evolved-object_info.json")
    nodes = {n["id"]: n for n in ui["nodes"]}
    unknown = {n["type"] for n in nodes.values()} - set(schemas)
    assert not unknown, f"unknown node types: {unknown}"
    foreign = {n["type"] for n in nodes.values() if n["type"] in ade}
    assert all(t.startswith("ADE_") for t in foreign)
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out_type = schemas[nodes[src]["type"]]["output"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        spec = dict(ui_workflow._ordered_inputs(schemas[nodes[dst]["type"]]))[target["name"]]
        assert out_type == kind == ui_workflow._input_type(spec), (link_id, out_type, target)
        assert target["link"] == link_id
