"""Generate the UI-format workflows (what users load) from their API-format twins (what /prompt takes).

UI workflows in ``workflows/`` are generated from their API twins in ``workflows/api/`` with the
node schemas of a live server with the real AnimateDiff-Evolved (``../shared/vendor``). The tests
load them in ComfyUI's real frontend and check that the prompt it builds equals the twin.

    python -m devtools.ui_workflow      # regenerate workflows/*.json (starts a headless server)
"""

from __future__ import annotations

import json
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _ordered_inputs(spec: dict) -> list[tuple[str, list]]:
    inputs = []
    for section in ("required", "optional"):
        specs = spec["input"].get(section, {})
        for name in spec.get("input_order", {}).get(section, list(specs)):
            inputs.append((name, specs[name]))
    return inputs


def _input_type(entry: list) -> str:
    kind = entry[0]
    return "COMBO" if isinstance(kind, list) else kind


def _is_widget(entry: list) -> bool:
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    return _input_type(entry) in WIDGET_TYPES and not options.get("forceInput")


def _has_control(entry: list) -> bool:
    return len(entry) > 1 and isinstance(entry[1], dict) and bool(entry[1].get("control_after_generate"))


def _depths(api: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid: str) -> int:
        if nid not in depth:
            parents = [str(v[0]) for v in api[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
            depth[nid] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[nid]

    for nid in api:
        visit(nid)
    return depth


def api_to_ui(api: dict, schemas: dict) -> dict:
    """A UI-format workflow (litegraph 0.4) laid out in columns by graph depth."""
    nodes, links = [], []
    depth = _depths(api)
    rows: dict[int, float] = {}
    out_links: dict[tuple[str, int], list[int]] = {}
    for order, nid in enumerate(sorted(api, key=lambda n: (depth[n], int(n)))):
        node, spec = api[nid], schemas[api[nid]["class_type"]]
        inputs, widgets = [], []
        for name, entry in _ordered_inputs(spec):
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2:
                link_id = len(links) + 1
                src, slot = str(value[0]), int(value[1])
                links.append([link_id, int(src), slot, int(nid), len(inputs), schemas[api[src]["class_type"]]["output"][slot]])
                out_links.setdefault((src, slot), []).append(link_id)
                inputs.append({"name": name, "type": _input_type(entry), "link": link_id,
                               **({"widget": {"name": name}} if _is_widget(entry) else {})})
                if _is_widget(entry):  # a widget fed by a link keeps its slot in widgets_values, as the frontend saves it
                    widgets.append(entry[1].get("default", "") if len(entry) > 1 else "")
                    if _has_control(entry):
                        widgets.append("fixed")
            elif _is_widget(entry):
                widgets.append(value if name in node["inputs"] else (entry[1].get("default") if len(entry) > 1 else None))
                if _has_control(entry):
                    widgets.append("fixed")
        column = depth[nid]
        y = rows.get(column, 60.0)
        # the frontend draws a socket for every input that is not a widget, linked or not
        free = [name for name, entry in _ordered_inputs(spec) if not _is_widget(entry) and name not in node["inputs"]]
        height = 60 + 26 * (len(inputs) + len(free) + len(widgets) + len(spec["output"]))
        rows[column] = y + height + 40
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [60 + 380 * column, y], "size": [340, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
            **({"title": node["_meta"]["title"]} if "_meta" in node else {}),
        })
    for entry in nodes:
        spec = schemas[entry["type"]]
        entry["outputs"] = [
            {"name": spec["output_name"][i], "type": kind, "links": out_links.get((str(entry["id"]), i), []), "slot_index": i}
            for i, kind in enumerate(spec["output"])
        ]
    return {
        "last_node_id": max(int(n) for n in api), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }


def main() -> None:
    import os
    import tempfile

    from .host import ADE_PACK, ComfyHost, ade_available

    if not ade_available():
        raise SystemExit(f"the workflows use AnimateDiff-Evolved's nodes: put it at {ADE_PACK} (../shared/vendor)")
    root = Path(__file__).resolve().parents[1] / "workflows"
    with tempfile.TemporaryDirectory() as tmp, ComfyHost(os.environ["COMFYUI_DIR"], tmp, with_ade=True) as host:
        schemas = host.object_info()
    for api_path in sorted((root / "api").glob("*.json")):
        ui = api_to_ui(json.loads(api_path.read_text()), schemas)
        (root / api_path.name).write_text(json.dumps(ui, indent=1) + "\n")
        print("wrote", root / api_path.name)


if __name__ == "__main__":
    main()
