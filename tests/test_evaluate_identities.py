"""VCD Evaluate Identities: in-process on two real faces with the tiny encoders, and after VCD Face Tracks on the
real server (DINO and ArcFace face similarity, by similarity and by picked tracks, a bad mask named)."""

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from devtools import tiny_encoders as te
from devtools.clips import as_tensor, two_faces
from vcd_core import encoders, face_detect, identity_scores, tracks

FRAMES = 4  # two_faces' default
PROMPTS = "a photo of ann\na photo of bob"


def photos() -> tuple[Image.Image, Image.Image]:
    """Reference photos of 'ann' (the left face of two_faces) and 'bob' (its mirror image, the right face)."""
    face = two_faces(1)[0].crop((40, 8, 152, 120))
    return face, ImageOps.mirror(face)


def summary(text: str) -> dict:
    """The scores JSON shown under the table in the node's text."""
    return json.loads(text[text.index("\n\n{") + 2:])


def face_tracks(image: torch.Tensor) -> torch.Tensor:
    """``[T, F, H, W]``: what VCD Face Tracks gives at its defaults (Haar, left to right, gaps filled)."""
    found = tracks.order_left_to_right(tracks.link_tracks(face_detect.haar_faces(image), 0.1, 2, 1))
    return tracks.track_masks([tracks.fill_gaps(t) for t in found], *image.shape[1:3])


def expected(image, masks, refs, folders, face=None, face_model="", **kw) -> dict:
    """evaluate_identities called directly on the same inputs, with the scores the node's text shows."""
    dino = encoders.load_dino(folders[0])
    clip_image, clip_text = encoders.load_clip(folders[1])
    space = identity_scores.FaceModel(f"DINO ({folders[0].name}, no face_model chosen): face crops vs the whole "
                                      "reference photos", dino, dino)
    if face is not None:
        space = identity_scores.FaceModel(f"ArcFace ({face_model}): face crops vs the largest face in each reference "
                                          "photo", face.faces, lambda p: face(p)[0])
    found = identity_scores.tracks_from_masks(list(masks), *image.shape[:3])
    scores = identity_scores.evaluate_identities(image, found, refs, ["ann", "bob"], PROMPTS.splitlines(), dino,
                                                 clip_image, clip_text, space, **kw)
    for track in scores["tracks"]:
        del track["per_frame_similarity"]
    for part in scores["per_identity"].values():
        for key in [k for k in part if k.startswith("per_")]:
            del part[key]
    return scores


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vcd_eval")
    tok = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer"
    return te.save_tiny_dino(root / "dino-tiny"), te.save_tiny_clip(root / "clip-tiny", tok)


@pytest.fixture
def run(inproc, folders, monkeypatch):
    """The node as the server calls it: every input a list (track_masks one MASK per track, the rest a list of one)."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vcd_eval", ([str(folders[0].parent)], set()))
    node = inproc.pack.nodes.evaluate.VCDEvaluateIdentities

    def call(image, masks, refs, **widgets):
        inputs = dict(image=image if isinstance(image, list) else [image], track_masks=list(masks),
                      names=["ann, bob"], prompts=[PROMPTS], assignment=["by_similarity"], picks=[""],
                      dino_model=["dino-tiny"], clip_model=["clip-tiny"])
        inputs.update({f"references_{k + 1}": [r] for k, r in enumerate(refs)})
        inputs.update({k: [v] for k, v in widgets.items()})
        with torch.inference_mode():
            return node.execute(**inputs)

    return call


def test_node_scores_each_track_and_identity_as_the_library_does(run, folders):
    image = as_tensor(two_faces())
    refs = [as_tensor([p]) for p in photos()]
    masks = face_tracks(image)
    assert masks.shape[0] == 2
    out = run(image, masks, refs)
    scores_json, chart = out.args
    text = out.ui.as_dict()["text"][0]
    assert summary(text) == expected(image, masks, refs, folders)
    full = json.loads(scores_json)
    assert full["tracks"][0]["per_frame_similarity"]["frames"] == list(range(FRAMES))
    assert text.startswith("face similarity in DINO (dino-tiny, no face_model chosen)")
    lines = text.splitlines()
    assert lines[2] == "track | identity | face frames | ann | bob | swaps"
    for t, track in enumerate(summary(text)["tracks"]):
        similarity, swaps = track["face_similarity"], len(track["swap_frames"])
        assert lines[3 + t] == (f"{t} | {track['identity']} | 4 | {similarity['ann']:.3f} | {similarity['bob']:.3f} | "
                                f"{swaps} ({track['swap_rate']:.0%})")
    ann = summary(text)["per_identity"]["ann"]
    assert f"ann | 4 | {ann['dino']:.3f} | {ann['clip_i']:.3f} | {ann['clip_t']:.3f} | " in text
    assert chart.shape == (1, 2 * (128 + 10 * 2), 512, 3)  # a panel per track, a line per identity
    picked = json.loads(run(image, masks, refs, assignment="by_position", picks="1, 0").args[0])
    assert [t["identity"] for t in picked["tracks"]] == ["bob", "ann"]


def test_node_names_bad_inputs(run):
    image = as_tensor(two_faces())
    refs = [as_tensor([p]) for p in photos()]
    masks = face_tracks(image)
    cases = [
        (dict(masks=masks[:, :3]), r"^track_masks: mask 0 has 3 frames but the video has 4"),
        (dict(refs=[refs[0], None, refs[1]]), r"^VCD Evaluate Identities: connect references_2: identity k's photos"),
        (dict(names="ann"), r"^VCD Evaluate Identities: names 'ann' gives 1 name\(s\) for the 2 connected references"),
        (dict(prompts="a\nb\nc"), r"^VCD Evaluate Identities: prompts has 3 line\(s\) for 2 identities"),
        (dict(assignment="by_position", picks="0, 1, 2"), r"^picks: 3 track picks but only 2 identities have reference "
                                                          r"photos: connect references_3"),
        (dict(assignment="by_position", picks="left"), r"^VCD Evaluate Identities: picks 'left' must be track numbers"),
        (dict(assignment="by_age"), r"^VCD Evaluate Identities: assignment 'by_age' is not one of the choices"),
    ]
    for change, message in cases:
        args = dict(masks=masks, refs=refs)
        args.update({k: change.pop(k) for k in list(change) if k in args})
        with pytest.raises(ValueError, match=message):
            run(image, args["masks"], args["refs"], **change)
    with pytest.raises(ValueError, match=r"^VCD Evaluate Identities: image got a list of 2 values; wire a single one"):
        run([image, image], masks, refs)


def close(a, b) -> bool:
    """Equal JSON, numbers to 1e-6 (the server runs the encoders in another process)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=1e-6, abs=1e-9)
    return a == b


def test_evaluate_identities_after_face_tracks_on_the_server(host, folders):
    clip = two_faces()
    clip[0].save(host.input_dir / "ids_two_faces.webp", save_all=True, append_images=clip[1:], lossless=True)
    clip[0].save(host.input_dir / "ids_three_frames.webp", save_all=True, append_images=clip[1:3], lossless=True)
    for name, picture in zip(("ids_ann.png", "ids_bob.png"), photos()):
        picture.save(host.input_dir / name)
    tok = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer"
    server_folders = (te.save_tiny_dino(host.models_dir / "vcd_eval" / "dino-tiny"),
                      te.save_tiny_clip(host.models_dir / "vcd_eval" / "clip-tiny", tok))
    arcface = te.save_tiny_arcface(host.models_dir / "insightface" / "models" / "buffalo_l" / "w600k_r50.onnx")
    track_inputs = {"detector": "opencv_haar", "order": "left_to_right", "track": 0, "min_iou": 0.1, "max_missed": 2,
                    "min_frames": 1, "fill_gaps": True}
    graph = {
        "clip": {"class_type": "LoadImage", "inputs": {"image": "ids_two_faces.webp"}},
        "ann": {"class_type": "LoadImage", "inputs": {"image": "ids_ann.png"}},
        "bob": {"class_type": "LoadImage", "inputs": {"image": "ids_bob.png"}},
        "tracks": {"class_type": "VCDFaceTracks", "inputs": {"image": ["clip", 0], **track_inputs}},
        "scores": {"class_type": "VCDEvaluateIdentities", "inputs": {
            "image": ["clip", 0], "track_masks": ["tracks", 1], "references_1": ["ann", 0], "references_2": ["bob", 0],
            "names": "ann, bob", "prompts": PROMPTS, "assignment": "by_similarity", "picks": "",
            "dino_model": "dino-tiny", "clip_model": "clip-tiny"}},
        "chart": {"class_type": "PreviewImage", "inputs": {"images": ["scores", 1]}},
    }
    image = as_tensor(clip)
    refs = [as_tensor([p]) for p in photos()]
    masks = face_tracks(image)
    result = host.run(graph)
    assert result.ok, result.describe()
    shown = summary(result.history["outputs"]["scores"]["text"][0])
    assert close(shown, expected(image, masks, refs, server_folders)) and len(shown["tracks"]) == 2
    assert result.history["outputs"]["chart"]["images"]  # the chart was previewed

    graph["scores"]["inputs"].update(face_model="models/buffalo_l/w600k_r50.onnx", assignment="by_position", picks="1, 0")
    faces = host.run(graph)
    assert faces.ok, faces.describe()
    shown = summary(faces.history["outputs"]["scores"]["text"][0])
    want = expected(image, masks, refs, server_folders, encoders.load_arcface(arcface), "models/buffalo_l/w600k_r50.onnx",
                    assignment="by_position", picks=[1, 0])
    assert close(shown, want) and shown["face_model"].startswith("ArcFace (models/buffalo_l/w600k_r50.onnx)")
    assert [t["identity"] for t in shown["tracks"]] == ["bob", "ann"]

    graph["short"] = {"class_type": "LoadImage", "inputs": {"image": "ids_three_frames.webp"}}
    graph["tracks"]["inputs"]["image"] = ["short", 0]
    bad = host.run(graph)
    assert not bad.ok and "track_masks: mask 0 has 3 frames but the video has 4" in bad.execution_error["exception_message"]
