"""Generate the UI-format workflows (what users load) from their API-format twins (what /prompt takes).

UI workflows in ``workflows/`` are generated from their API twins in ``workflows/api/`` with the
node schemas of a live server with the real AnimateDiff-Evolved (``../shared/vendor``). The tests
load them in ComfyUI's real frontend and check that the prompt it builds equals the twin.

    python -m devtools.ui_workflow              # regenerate workflows/*.json (starts a headless server)
    python -m devtools.ui_workflow t2v_vcd ...  # only these (by the API twin's name)

It lays them out with node sizes measured in the real frontend (headless Chromium, ``source
scripts/browser.sh``) and saves what "Fit view" shows: ``docs/workflow_NAME.png`` for the README and
``workflows/NAME.jpg``, the template browser's thumbnail.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import workflow_notes

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


STAGE_ORDER = ("Photos", "Masks", "Models", "T2V VCD", "Identity", "Face VCD", "Tiled VCD", "Check", "Save")
TITLE_HEIGHT = 30  # litegraph draws a node's title bar above its pos
GROUP_HEADER, GROUP_PAD, GAP = 42, 12, 24  # a group's title is 24 px * 1.4 tall
CANVAS, FIT_ZOOM = (1600, 900), 0.75  # the canvas the layout is made for; "Fit view" leaves a 25% margin
NOTE_LINE, NOTE_CHAR = 17, 7.2  # the note's textarea: px per line and per character (the frontend's 14 px font)


def estimate_size(spec: dict, node: dict) -> list[float]:
    """A node's body size (no title) before the frontend has measured it."""
    rows = len(_ordered_inputs(spec)) + len(spec["output"])
    return [340.0, 30.0 + 26.0 * rows]


def _models(node: dict) -> list[dict]:
    """The frontend's ``models`` property for a loader node: the files it names and where each goes."""
    found = []
    for (kind, name), directory in workflow_notes.MODEL_INPUTS.items():
        value = node["inputs"].get(name)
        if node["class_type"] == kind and value in workflow_notes.MODEL_URLS:
            found.append({"name": value, "url": workflow_notes.MODEL_URLS[value], "directory": directory})
    return found


def _stage_columns(ids: list[str], sizes: dict[str, list[float]], column_height: float) -> list[list[str]]:
    """Greedy columns in graph order, each at most ``column_height`` tall (a taller node gets its own)."""
    columns: list[list[str]] = [[]]
    height = 0.0
    for nid in ids:
        need = TITLE_HEIGHT + sizes[nid][1]
        if columns[-1] and height + GAP + need > column_height:
            columns.append([])
            height = 0.0
        height += (GAP if columns[-1] else 0) + need
        columns[-1].append(nid)
    return columns


def fit_scale(width: float, height: float) -> float:
    """The zoom the frontend's "Fit view" reaches for content of this size on CANVAS (litegraph fitToBounds)."""
    return FIT_ZOOM * min(CANVAS[0] / max(width, 300), CANVAS[1] / max(height, 300))


def note_height(text: str, width: float) -> float:
    """How tall the note's textarea must be to show ``text`` without scrolling at ``width``."""
    chars = int((width - 20) / NOTE_CHAR)
    return 24 + NOTE_LINE * sum(1 + len(line) // chars for line in text.splitlines())


def _stage_block(ids: list[str], sizes: dict[str, list[float]], column_height: float) -> tuple[list[list[str]], list[float], float, float]:
    """A stage's columns, their widths, and its group's width and height."""
    columns = _stage_columns(ids, sizes, column_height)
    widths = [max(sizes[n][0] for n in column) for column in columns]
    heights = [sum(TITLE_HEIGHT + sizes[n][1] for n in column) + GAP * (len(column) - 1) for column in columns]
    return columns, widths, sum(widths) + GAP * (len(widths) - 1) + 2 * GROUP_PAD, GROUP_HEADER + max(heights) + GROUP_PAD


def _layout_once(api: dict, sizes: dict[str, list[float]], note: tuple[float, float], column_height: float,
                 breaks: int, fill_rows: bool = False) -> tuple[dict[str, list[float]], list[dict], list[float], float]:
    """One layout; ``fill_rows``: each stage's columns may then be as tall as its row (a short stage beside a tall
    one gets fewer, taller columns)."""
    depth = _depths(api)
    stages = sorted({node["_meta"]["stage"] for node in api.values()}, key=STAGE_ORDER.index)
    ids = {stage: sorted((n for n in api if api[n]["_meta"]["stage"] == stage), key=lambda n: (depth[n], int(n)))
           for stage in stages}
    plans = {stage: _stage_block(ids[stage], sizes, column_height) for stage in stages}
    blocks = [("note", note[0] + GROUP_PAD, note[1] + TITLE_HEIGHT + GROUP_PAD)] + [(s, *plans[s][2:]) for s in stages]
    rows: list[list[tuple[str, float, float]]] = [[]]
    for i, block in enumerate(blocks):
        if i and breaks >> (i - 1) & 1:  # bit i-1 set: a new row starts at block i
            rows.append([])
        rows[-1].append(block)
    if fill_rows:
        for row in rows:
            room = max(b[2] for b in row) - GROUP_HEADER - GROUP_PAD  # the row's height, from its tallest block
            for k, (title, _, _) in enumerate(row):
                if title != "note":
                    plans[title] = _stage_block(ids[title], sizes, max(column_height, room))
                    row[k] = (title, *plans[title][2:])
    placed: dict[str, list[float]] = {}
    groups, note_box, y, width = [], [], 0.0, 0.0
    for row in rows:
        x, row_height = 0.0, max(b[2] for b in row)
        for title, block_width, _ in row:
            if title == "note":
                note_box = [x, y + TITLE_HEIGHT, note[0], row_height - TITLE_HEIGHT]
            else:
                groups.append({"title": title, "bounding": [x, y, block_width, row_height], "color": "#3f789e",
                               "font_size": 24, "flags": {}})
                columns, widths = plans[title][:2]
                cx = x + GROUP_PAD
                for column, column_width in zip(columns, widths):
                    cy = y + GROUP_HEADER
                    for nid in column:
                        placed[nid] = [cx, cy + TITLE_HEIGHT, column_width, sizes[nid][1]]
                        cy += TITLE_HEIGHT + sizes[nid][1] + GAP
                    cx += column_width + GAP
            x += block_width + GAP
        width = max(width, x - GAP)
        y += row_height + GAP
    return placed, groups, note_box, fit_scale(width, y - GAP)


def layout(api: dict, sizes: dict[str, list[float]], note_text: str) -> tuple[dict[str, list[float]], list[dict], list[float], float]:
    """Node [x, y, w, h], one group per stage (``_meta.stage``) in rows after the note, the note's [x, y, w, h],
    and the zoom "Fit view" reaches: of the note widths, column heights, row breaks and row filling tried, the
    closest (the first of equals: rows filled only where that zooms closer)."""
    stages = len({node["_meta"]["stage"] for node in api.values()})
    tries = [_layout_once(api, sizes, (width, note_height(note_text, width)), column, breaks, fill)
             for fill in (False, True) for width in range(400, 801, 100) for column in range(300, 701, 25)
             for breaks in range(2 ** stages)]
    return max(tries, key=lambda t: t[3])


def api_to_ui(api: dict, schemas: dict, name: str, sizes: dict[str, list[float]] | None = None) -> dict:
    """A UI-format workflow (litegraph 0.4): one titled group per stage in rows, a note at the start, model
    metadata on loaders. ``sizes``: each node's body [width, height] as the frontend measured it."""
    nodes, links = [], []
    depth = _depths(api)
    sizes = sizes or {nid: estimate_size(schemas[n["class_type"]], n) for nid, n in api.items()}
    note_text = workflow_notes.NOTES[name]
    placed, groups, note, _ = layout(api, sizes, note_text)
    out_links: dict[tuple[str, int], list[int]] = {}
    for order, nid in enumerate(sorted(api, key=lambda n: (depth[n], int(n)))):
        node, spec = api[nid], schemas[api[nid]["class_type"]]
        inputs, widgets = [], []
        for input_name, entry in _ordered_inputs(spec):
            value = node["inputs"].get(input_name)
            if isinstance(value, list) and len(value) == 2:
                link_id = len(links) + 1
                src, slot = str(value[0]), int(value[1])
                links.append([link_id, int(src), slot, int(nid), len(inputs), schemas[api[src]["class_type"]]["output"][slot]])
                out_links.setdefault((src, slot), []).append(link_id)
                inputs.append({"name": input_name, "type": _input_type(entry), "link": link_id,
                               **({"widget": {"name": input_name}} if _is_widget(entry) else {})})
                if _is_widget(entry):  # a widget fed by a link keeps its slot in widgets_values, as the frontend saves it
                    widgets.append(entry[1].get("default", "") if len(entry) > 1 else "")
                    if _has_control(entry):
                        widgets.append("fixed")
            elif _is_widget(entry):
                widgets.append(value if input_name in node["inputs"] else (entry[1].get("default") if len(entry) > 1 else None))
                if _has_control(entry):
                    widgets.append("fixed")
        x, y, width, height = placed[nid]
        models = _models(node)
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [x, y], "size": [width, height],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": [],
            "properties": {"Node name for S&R": node["class_type"], **({"models": models} if models else {})},
            "widgets_values": widgets, **({"title": node["_meta"]["title"]} if "_meta" in node else {}),
        })
    for entry in nodes:
        spec = schemas[entry["type"]]
        entry["outputs"] = [
            {"name": spec["output_name"][i], "type": kind, "links": out_links.get((str(entry["id"]), i), []), "slot_index": i}
            for i, kind in enumerate(spec["output"])
        ]
    note_id = max(int(n) for n in api) + 1
    nodes.insert(0, {"id": note_id, "type": "Note", "title": "Read me first", "pos": note[:2], "size": note[2:],
                     "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                     "widgets_values": [note_text], "color": "#432", "bgcolor": "#653"})
    return {
        "last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": groups, "config": {}, "extra": {}, "version": 0.4,
    }


def measured_sizes(frontend, ui: dict) -> dict[str, list[float]]:
    """Each node's body [width, height] as the frontend computes it (the file's sizes shrunk to nothing),
    widened a little: frontends differ by a few pixels."""
    tiny = json.loads(json.dumps(ui))
    for node in tiny["nodes"]:
        node["size"] = [10, 10]
    frontend.call("load", workflow=tiny, name="measure.json")
    rects = {n["id"]: n["rect"] for n in frontend.call("layout")["nodes"]}
    return {str(n["id"]): [max(240.0, 10 * round((rects[str(n["id"])][2] + 25) / 10)), rects[str(n["id"])][3] - TITLE_HEIGHT]
            for n in ui["nodes"] if n["type"] != "Note"}


def save_pictures(frontend, ui: dict, name: str, docs: Path, thumbnails: Path) -> dict:
    """Fit view on a 1600x900 canvas: the README's picture (docs/workflow_NAME.png, 1200 px) and the template
    browser's thumbnail (workflows/NAME.jpg, what the frontend asks for); returns the frontend's layout report."""
    import tempfile

    from PIL import Image

    frontend.call("load", workflow=ui, name=f"{name}.json")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "fit.png"
        report = frontend.call("layout", screenshot=str(shot))
        with Image.open(shot) as image:
            picture = image.convert("RGB").resize((1200, 675), Image.LANCZOS)
        _atomic_save(picture.quantize(colors=128), docs / f"workflow_{name}.png", "PNG", optimize=True)
        _atomic_save(picture.resize((640, 360), Image.LANCZOS), thumbnails / f"{name}.jpg", "JPEG", quality=85)
    return report


def _atomic_save(image, path: Path, kind: str, **options) -> None:
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, kind, **options)
    tmp.replace(path)


def main(names: list[str] | None = None) -> None:
    """Regenerate the UI workflows and pictures of ``names`` (API twins' stems; all when empty)."""
    import os
    import tempfile

    from .frontend import Frontend
    from .graphs import provide_photos
    from .host import ADE_PACK, ComfyHost, ade_available

    if not ade_available():
        raise SystemExit(f"the workflows use AnimateDiff-Evolved's nodes: put it at {ADE_PACK} (../shared/vendor)")
    root = Path(__file__).resolve().parents[1] / "workflows"
    docs = root.parent / "docs"
    twins = sorted((root / "api").glob("*.json"))
    unknown = sorted(set(names or ()) - {p.stem for p in twins})
    if unknown:
        raise SystemExit(f"no API twin named {', '.join(unknown)} in {root / 'api'}")
    twins = [p for p in twins if not names or p.stem in names]
    with tempfile.TemporaryDirectory() as tmp, ComfyHost(os.environ["COMFYUI_DIR"], tmp, with_ade=True) as host:
        provide_photos(host.input_dir)  # sizes measured with the photos drawn on their LoadImage nodes, as users see them
        schemas = host.object_info()
        frontend = Frontend(host.url, Path(tmp) / "browser")
        try:
            for api_path in twins:
                api, name = json.loads(api_path.read_text()), api_path.stem
                sizes = measured_sizes(frontend, api_to_ui(api, schemas, name))
                ui = api_to_ui(api, schemas, name, sizes)
                (root / api_path.name).write_text(json.dumps(ui, indent=1) + "\n")
                report = save_pictures(frontend, ui, name, docs, root)
                print(f"wrote {root / api_path.name}: Fit view at {report['scale']:.2f} "
                      f"(text hidden below {report['lod_threshold']:.2f}), pictures in {docs} and {root}")
        finally:
            frontend.close()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
