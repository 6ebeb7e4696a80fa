"""Evaluation: metrics against hand-computed values, tiny encoders end to end, node, command, bad input."""

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from devtools import tiny_encoders as te
from vcd_core import encoders, evaluate, metrics


def test_identical_frames_give_consistency_one_and_motion_zero():
    feats = torch.tensor([[1.0, 2.0, 3.0]]).repeat(5, 1)
    assert metrics.temporal_consistency(feats) == pytest.approx(1.0)
    assert metrics.motion_amplitude(torch.full((5, 8, 8, 3), 0.3)) == 0.0


def test_frame_equal_to_reference_scores_one_and_orthogonal_zero():
    frames = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    refs = torch.tensor([[3.0, 0.0]])
    assert metrics.cosine_matrix(frames, refs).flatten().tolist() == pytest.approx([1.0, 0.0])
    assert metrics.identity_score(frames, refs) == pytest.approx(0.5)
    assert metrics.per_frame_identity(frames, refs).tolist() == pytest.approx([1.0, 0.0])
    assert metrics.text_score(frames[:1], refs) == pytest.approx(1.0)


def test_hand_computed_consistency_and_motion():
    feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # cos(0 deg -> 45 deg) = cos(45 deg -> 90 deg) = 1/sqrt(2)
    assert metrics.temporal_consistency(feats) == pytest.approx(2 ** -0.5)
    frames = torch.zeros(3, 2, 2, 3)
    frames[1] = 0.5
    frames[2] = 0.5
    assert metrics.motion_amplitude(frames) == pytest.approx(0.25)


def test_one_frame_has_no_consistency_or_motion_and_zero_frames_are_an_error():
    """A single frame has no pair: undefined (None), never a perfect 1.0 that would inflate a mean."""
    assert metrics.temporal_consistency(torch.ones(1, 8)) is None and metrics.per_pair_consistency(torch.ones(1, 8)).numel() == 0
    assert metrics.motion_amplitude(torch.rand(1, 4, 4, 3)) is None
    for empty in (metrics.temporal_consistency, metrics.per_pair_consistency):
        with pytest.raises(ValueError, match="no frames"):
            empty(torch.zeros(0, 8))
    with pytest.raises(ValueError, match="no frames"):
        metrics.motion_amplitude(torch.zeros(0, 4, 4, 3))


def test_motion_amplitude_ignores_an_alpha_channel():
    frames = torch.zeros(3, 2, 2, 4)
    frames[1:, ..., :3] = 0.5
    frames[..., 3] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)  # alpha flickers: no motion in it
    assert metrics.motion_amplitude(frames) == pytest.approx(0.25)
    gray = torch.zeros(3, 2, 2, 1)
    gray[1:] = 0.5
    assert metrics.motion_amplitude(gray) == pytest.approx(0.25)


def test_face_score_hand_values():
    faces = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.face_score(faces, faces[:1]) == pytest.approx(0.5)  # one equal pair (1), one orthogonal (0)
    assert metrics.face_score(faces[:0], faces) is None and metrics.face_score(faces, faces[:0]) is None


@pytest.fixture(scope="module")
def astronaut_faces():
    import skimage.data

    photo = torch.from_numpy(skimage.data.astronaut()[:256, 96:352].copy()).float() / 255
    return torch.stack([photo, photo.flip(1), torch.full_like(photo, 0.5)])  # two faces, then none


def test_arcface_scores_only_frames_with_a_face(tmp_path, astronaut_faces, tiny_models):
    face = encoders.load_arcface(te.save_tiny_arcface(tmp_path / "w600k_tiny.onnx"))
    features, found = face(astronaut_faces)
    assert found.tolist() == [True, True, False] and features.shape == (2, 16)
    reference, _ = face(astronaut_faces[:1])
    assert metrics.cosine_matrix(features[:1], reference).item() == pytest.approx(1.0)  # the frame equal to the reference
    dino = encoders.load_dino(tiny_models[0])
    clip_image, clip_text = encoders.load_clip(tiny_models[1])
    scores = metrics.score_video(astronaut_faces, astronaut_faces[:1], "an astronaut", dino, clip_image, clip_text, face)
    assert scores["face_frames"] == 2
    assert scores["face_similarity"] == pytest.approx(float(metrics.cosine_matrix(features, reference).mean()))
    without = metrics.score_video(astronaut_faces, astronaut_faces[:1], "an astronaut", dino, clip_image, clip_text)
    assert "face_similarity" not in without  # off by default


def test_arcface_faces_encode_crops_as_they_are(tmp_path, astronaut_faces):
    """``faces``: each image is the face (no detection), resized to the model's input and normalised as insightface."""
    import onnxruntime

    path = te.save_tiny_arcface(tmp_path / "w600k_tiny.onnx")
    face = encoders.load_arcface(path, batch_size=2)
    crops = astronaut_faces[:, 40:200, 50:190]
    pixels = torch.nn.functional.interpolate(crops.movedim(-1, 1), size=(112, 112), mode="bilinear", antialias=True,
                                             align_corners=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: ((pixels.clamp(0, 1) * 255 - 127.5) / 127.5).numpy()})[0]
    assert torch.allclose(face.faces(crops), torch.from_numpy(want), atol=1e-6) and want.shape == (3, 16)
    assert face(astronaut_faces[2:])[0].shape[0] == 0  # called on photos it finds no face in the grey one


def test_arcface_bad_models_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="ArcFace: no .onnx model"):
        encoders.load_arcface(tmp_path / "w600k_r50.onnx")
    te.export_onnx(torch.nn.Linear(8, 4), (1, 8), tmp_path / "flat.onnx")
    with pytest.raises(ValueError, match="not face images"):
        encoders.load_arcface(tmp_path / "flat.onnx")
    genderage = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, 8), torch.nn.Flatten(), torch.nn.Linear(4 * 12 * 12, 3))
    te.export_onnx(genderage, (1, 3, 96, 96), tmp_path / "genderage.onnx")  # buffalo_l's other files: 96 or 192 px
    with pytest.raises(ValueError, match=r"^ArcFace: genderage.onnx takes \[\['batch', 3, 96, 96\]\] and gives 1 "
                                         r"output\(s\): not a face recognition model, which takes one \[N, 3, 112, "
                                         r"112\] face crop and gives one embedding\. Pick insightface's recognition "
                                         r"model \(e\.g\. buffalo_l/w600k_r50\.onnx"):
        encoders.load_arcface(tmp_path / "genderage.onnx")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from pathlib import Path

    root = tmp_path_factory.mktemp("vcd_eval")
    tok = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer"
    return te.save_tiny_dino(root / "dino-tiny"), te.save_tiny_clip(root / "clip-tiny", tok)


def test_tiny_encoders_score_a_video(tiny_models):
    dino = encoders.load_dino(tiny_models[0])
    clip_image, clip_text = encoders.load_clip(tiny_models[1])
    frames = torch.rand(4, 48, 40, 3, generator=torch.Generator().manual_seed(0))
    scores = metrics.score_video(frames, frames[:2], "a photo of a man", dino, clip_image, clip_text)
    assert set(scores) >= {"dino", "clip_i", "clip_t", "temporal_consistency", "motion"}
    assert scores["per_frame_dino"][0] == pytest.approx(
        float(metrics.cosine_matrix(dino(frames[:1]), dino(frames[:2])).mean()))
    still = metrics.score_video(frames[:1].repeat(3, 1, 1, 1), frames[:1], "x", dino, clip_image, clip_text)
    assert still["temporal_consistency"] == pytest.approx(1.0) and still["motion"] == 0.0
    assert still["dino"] == pytest.approx(1.0) and still["clip_i"] == pytest.approx(1.0)


def test_dinov2_folders_load_and_give_the_cls_feature(tmp_path):
    from transformers import Dinov2Model

    folder = te.save_tiny_dinov2(tmp_path / "dinov2-tiny")
    frames = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    features = encoders.load_dino(folder)(frames)
    model = Dinov2Model.from_pretrained(str(folder), local_files_only=True).eval()
    mean, std = torch.tensor(encoders.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(encoders.IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(pixel_values=(frames.movedim(-1, 1) - mean) / std).pooler_output  # the layer-normed CLS token
    assert features.shape == (3, 32)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    # Like facebook/dinov2-small: the processor crops to 224 although the config says 518.
    (folder / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 16, "width": 16}}))
    small = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(pixel_values=(small.movedim(-1, 1) - mean) / std).pooler_output
    torch.testing.assert_close(encoders.load_dino(folder)(small), expected, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_clear(tiny_models, tmp_path):
    dino = encoders.load_dino(tiny_models[0])
    clip_image, clip_text = encoders.load_clip(tiny_models[1])
    frames = torch.rand(2, 32, 32, 3)
    with pytest.raises(ValueError, match="references"):
        metrics.score_video(frames, frames[:0], "a man", dino, clip_image, clip_text)
    with pytest.raises(ValueError, match="prompt"):
        metrics.score_video(frames, frames, "  ", dino, clip_image, clip_text)
    with pytest.raises(FileNotFoundError, match="no model in"):
        encoders.load_dino(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds a 'clip' model"):
        encoders.load_dino(tiny_models[1])
    with pytest.raises(ValueError, match="no reference images"):
        evaluate.read_references(tmp_path / "nobody")


def test_evaluate_command_scores_a_folder(tiny_models, tmp_path, capsys):
    videos, refs = tmp_path / "videos", tmp_path / "refs" / "ann"
    videos.mkdir()
    refs.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(refs / "a.png")
    rows = []
    for setting, shift in (("gamma0", 40), ("gamma0.1", 0)):
        frames = [Image.new("RGB", (32, 32), (100 + shift * (i % 2), 100, 100)) for i in range(4)]
        # APNG: animated WEBP and GIF merge identical frames, so the still clip would read back as one frame
        frames[0].save(videos / f"{setting}.png", save_all=True, append_images=frames[1:])
        rows.append({"video": f"videos/{setting}.png", "subject": "ann", "prompt": "a photo of ann", "seed": 0, "setting": setting})
    manifest = tmp_path / "runs.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert evaluate.main(["--manifest", str(manifest), "--references", str(tmp_path / "refs"),
                          "--dino", str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) == {"gamma0", "gamma0.1"}
    assert summary["gamma0.1"]["motion"] == 0.0 and summary["gamma0"]["motion"] == pytest.approx(40 / 255 / 3)
    assert len(list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))) == 2
    assert "[2/2]" in capsys.readouterr().err
    arcface = te.save_tiny_arcface(tmp_path / "arcface.onnx")
    assert evaluate.main(["--manifest", str(manifest), "--references", str(tmp_path / "refs"), "--arcface", str(arcface),
                          "--dino", str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "faces")]) == 0
    with_faces = json.loads((tmp_path / "faces" / "summary.json").read_text())
    assert with_faces["gamma0"]["face_frames"] == 0 and with_faces["gamma0"]["face_similarity"] is None  # flat colours


def test_one_frame_videos_are_left_out_of_the_consistency_mean(tiny_models, tmp_path):
    """The summary averages consistency and motion over videos that have a frame pair; a still is not 1.0."""
    (tmp_path / "refs" / "ann").mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(tmp_path / "refs" / "ann" / "a.png")
    frames = [Image.new("RGB", (32, 32), (100 + 40 * (i % 2), 100, 100)) for i in range(3)]
    frames[0].save(tmp_path / "moving.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "still.webp", lossless=True)
    (tmp_path / "runs.csv").write_text("video,subject,prompt\nmoving.webp,ann,a photo\nstill.webp,ann,a photo\n")
    assert evaluate.main(["--manifest", str(tmp_path / "runs.csv"), "--references", str(tmp_path / "refs"),
                          "--dino", str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["default"]
    assert rows[1]["temporal_consistency"] == "" and rows[1]["motion"] == ""
    assert summary["temporal_consistency"] == pytest.approx(float(rows[0]["temporal_consistency"]))
    assert summary["motion"] == pytest.approx(40 / 255 / 3) and summary["videos"] == 2


def test_evaluate_command_scores_through_score_video(tiny_models, tmp_path, capsys):
    """One scoring path: each row of scores.csv is score_video's numbers for that video against the subject's
    photos (two sizes, encoded once per subject); a row that cannot be scored is named."""
    refs = tmp_path / "refs" / "ann"
    refs.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(refs / "a.png")
    Image.new("RGB", (24, 36), (20, 160, 90)).save(refs / "b.png")
    pixels = (torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(7)) * 255).to(torch.uint8).numpy()
    frames = [Image.fromarray(frame) for frame in pixels]
    frames[0].save(tmp_path / "clip.png", save_all=True, append_images=frames[1:])
    (tmp_path / "runs.csv").write_text("video,subject,prompt\nclip.png,ann,a photo of ann\nclip.png,ann,a man\n")
    assert evaluate.main(["--manifest", str(tmp_path / "runs.csv"), "--references", str(tmp_path / "refs"),
                          "--dino", str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")]) == 0
    dino = encoders.load_dino(tiny_models[0])
    clip_image, clip_text = encoders.load_clip(tiny_models[1])
    video, photos = evaluate.read_frames(tmp_path / "clip.png"), evaluate.read_references(refs)
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    for row in rows:
        want = metrics.score_video(video, photos, row["prompt"], dino, clip_image, clip_text)
        assert {m: float(row[m]) for m in evaluate.METRICS} == pytest.approx({m: want[m] for m in evaluate.METRICS}, rel=1e-12)
    assert rows[0]["clip_t"] != rows[1]["clip_t"] and rows[0]["dino"] == rows[1]["dino"]
    command = ["--manifest", str(tmp_path / "runs.csv"), "--references", str(tmp_path / "refs"),
               "--dino", str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")]
    before = (tmp_path / "out" / "scores.csv").read_bytes()
    with pytest.raises(SystemExit) as refused:  # earlier results are kept unless --overwrite, checked first
        evaluate.main(command)
    assert refused.value.code == 2 and re.search(r"error: scores.csv already exists in .*out: pick another name",
                                                 capsys.readouterr().err)
    (tmp_path / "runs.csv").write_text("video,subject,prompt\nclip.png,ann,a photo\nclip.png,ann, \n")
    with pytest.raises(SystemExit):
        evaluate.main([*command, "--overwrite"])
    assert re.search(r"error: .*runs.csv row 2 \(clip.png\): prompt: CLIP-T needs", capsys.readouterr().err)
    assert (tmp_path / "out" / "scores.csv").read_bytes() == before  # a failed run leaves the old results
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "runs.csv").write_text("video,subject,prompt\nclip.png,ann,a photo\nbroken.png,ann,a photo\n")
    with pytest.raises(SystemExit):
        evaluate.main([*command, "--overwrite"])
    assert re.search(r"error: .*runs.csv row 2 \(broken.png\): cannot identify image file", capsys.readouterr().err)
    (tmp_path / "runs.csv").write_text("file,subject\nclip.png,ann\n")
    with pytest.raises(SystemExit):
        evaluate.main([*command, "--overwrite"])
    assert re.search(r"error: .*runs.csv has no column video, prompt: its header must name video,subject,prompt "
                     r"\(\+ seed, setting\); it names file, subject\.", capsys.readouterr().err)


def test_encoded_references_score_like_the_images():
    """encode_references once, then many videos: the same scores as passing the images; sizes may differ."""
    frames, refs = colour_images([1.0, 0, 0], [0, 1.0, 0]), colour_images([1.0, 0, 0], [0, 0.5, 0])
    text = lambda p: torch.tensor([[1.0, 0, 0]])  # noqa: E731
    direct = metrics.score_video(frames, refs, "a man", mean_colour, mean_colour, text)
    per_size = [refs[:1], refs[1:, :2]]  # a 3x1 and a 2x1 photo
    encoded = metrics.encode_references(per_size, mean_colour, mean_colour)
    assert metrics.score_video(frames, encoded, "a man", mean_colour, mean_colour, text) == direct
    assert metrics.score_video(frames, per_size, "a man", mean_colour, mean_colour, text) == direct
    with pytest.raises(ValueError, match=r"^references: give at least one"):
        metrics.encode_references([], mean_colour, mean_colour)
    face = lambda images: (images.mean(dim=(1, 2)), torch.ones(images.shape[0], dtype=torch.bool))  # noqa: E731
    with pytest.raises(ValueError, match=r"^references: encoded without the face encoder; pass it to encode_references"):
        metrics.score_video(frames, encoded, "a man", mean_colour, mean_colour, text, face)
    with_face = metrics.score_video(frames, metrics.encode_references(refs, mean_colour, mean_colour, face), "a man",
                                    mean_colour, mean_colour, text, face)
    assert with_face == {**direct, "face_similarity": 0.5, "face_frames": 2}


def test_score_video_of_no_frames_names_the_input(tiny_models):
    dino = encoders.load_dino(tiny_models[0])
    clip_image, clip_text = encoders.load_clip(tiny_models[1])
    with pytest.raises(ValueError, match="image: .*no frames"):
        metrics.score_video(torch.zeros(0, 32, 32, 3), torch.rand(1, 32, 32, 3), "a man", dino, clip_image, clip_text)
    one = metrics.score_video(torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3), "a man", dino, clip_image, clip_text)
    assert one["temporal_consistency"] is None and one["motion"] is None and one["per_pair_consistency"] == []


def test_evaluate_node_takes_grey_and_rgba_images(inproc, tiny_models, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vcd_eval", ([str(tiny_models[0].parent)], set()))
    frames = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    refs = torch.rand(2, 40, 36, 3, generator=torch.Generator().manual_seed(3))

    def scores(image, references):
        with torch.inference_mode():
            out = inproc.pack.nodes.evaluate.VCDEvaluate.execute(image, references, "a photo of a man", "dino-tiny",
                                                                  "clip-tiny")
        return json.loads(out.result[0])

    def alpha(x):
        return torch.cat([x, torch.rand(*x.shape[:-1], 1, generator=torch.Generator().manual_seed(4))], dim=-1)

    assert scores(alpha(frames), alpha(refs)) == scores(frames, refs)
    grey, grey_refs = frames.mean(-1, keepdim=True), refs.mean(-1, keepdim=True)
    assert scores(grey, grey_refs) == scores(grey.expand(-1, -1, -1, 3), grey_refs.expand(-1, -1, -1, 3))


def test_mixed_frame_sizes_are_rejected():
    import numpy as np

    with pytest.raises(ValueError, match="mixed sizes"):
        evaluate.stack_frames([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)], "clip.webp")
    assert evaluate.stack_frames([np.full((4, 4, 3), 255, np.uint8)] * 2, "ok").shape == (2, 4, 4, 3)


def test_evaluate_node_on_the_server(host, tmp_path):
    import skimage.data

    from pathlib import Path

    tok = Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer"
    te.save_tiny_dino(host.models_dir / "vcd_eval" / "dino-tiny")
    te.save_tiny_clip(host.models_dir / "vcd_eval" / "clip-tiny", tok)
    photo = Image.fromarray(skimage.data.astronaut()).resize((64, 64))
    photo.save(host.input_dir / "vcd_eval_ref.png")
    photo.save(host.input_dir / "vcd_eval_clip.webp", save_all=True, append_images=[photo.rotate(5), photo.rotate(10)])
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "vcd_eval_clip.webp"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "vcd_eval_ref.png"}},
        "3": {"class_type": "VCDEvaluate", "inputs": {"image": ["1", 0], "references": ["2", 0], "prompt": "an astronaut",
                                                      "dino_model": "dino-tiny", "clip_model": "clip-tiny"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    result = host.run(graph)
    assert result.ok, result.describe()
    shown = json.loads(result.history["outputs"]["3"]["text"][0])
    assert shown["frames"] == 3 and 0.9 < shown["dino"] <= 1.0 + 1e-9 and shown["motion"] > 0
    assert set(result.history["outputs"]) == {"3", "4"}  # the chart was previewed
    te.save_tiny_arcface(host.models_dir / "insightface" / "models" / "buffalo_l" / "w600k_r50.onnx")
    graph["3"]["inputs"]["face_model"] = "models/buffalo_l/w600k_r50.onnx"
    faces = host.run(graph)
    assert faces.ok, faces.describe()
    assert "face_frames" in json.loads(faces.history["outputs"]["3"]["text"][0])
    graph["3"]["inputs"]["dino_model"] = "missing-model"
    bad = host.run(graph)
    message = json.dumps(bad.node_errors) if bad.http_status == 400 else bad.execution_error["exception_message"]
    assert not bad.ok and "dino_model" in message


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """A hand-checkable image encoder: each image's mean colour ``[N, 3]``."""
    return images.mean(dim=(1, 2))


def colour_images(*colours) -> torch.Tensor:
    return torch.tensor(colours).view(len(colours), 1, 1, 3).expand(-1, 3, 1, -1)  # 3 x 1 pixels


def test_score_video_by_hand_with_a_colour_encoder():
    """Red then green frames vs a red and a half-bright green reference, prompt feature red."""
    frames, refs = colour_images([1.0, 0, 0], [0, 1.0, 0]), colour_images([1.0, 0, 0], [0, 0.5, 0])
    scores = metrics.score_video(frames, refs, "a man", mean_colour, mean_colour, lambda p: torch.tensor([[1.0, 0, 0]]))
    assert scores.pop("per_frame_dino") == pytest.approx([0.5, 0.5]) and scores.pop("per_pair_consistency") == [0.0]
    assert scores == pytest.approx({
        "dino": 0.5, "clip_i": 0.5, "clip_t": 0.5, "temporal_consistency": 0.0, "motion": 2 / 3, "frames": 2,
    })


@pytest.mark.parametrize("frames, refs, prompt, message", [
    (colour_images(), colour_images([1.0, 0, 0]), "a man", r"^image: the video has no frames; give at least one\.$"),
    (colour_images([1.0, 0, 0]), colour_images(), "a man", r"^references: give at least one reference image of the identity\.$"),
    (colour_images([1.0, 0, 0]), colour_images([1.0, 0, 0]), " ", r"^prompt: CLIP-T needs the prompt the video was generated from \(it is empty\)\.$"),
])
def test_score_video_refuses_missing_inputs_by_name(frames, refs, prompt, message):
    with pytest.raises(ValueError, match=message):
        metrics.score_video(frames, refs, prompt, mean_colour, mean_colour, lambda p: torch.ones(1, 3))


COLOURS = ((220, 40, 40), (40, 200, 60), (50, 60, 210))


def write_video(path, codec: str) -> None:
    """Three flat-colour 32 x 32 frames through PyAV."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for colour in COLOURS:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), colour, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize("name, codec", [("a.mp4", "h264"), ("b.MP4", "h264"), ("c.mkv", "h264"), ("d.mov", "h264"),
                                         ("e.webm", "libvpx-vp9")])
def test_videos_are_read_by_their_suffix_in_any_case(tmp_path, name, codec):
    write_video(tmp_path / name, codec)
    frames = evaluate.read_frames(tmp_path / name)
    assert frames.shape == (3, 32, 32, 3) and frames.dtype == torch.float32
    wanted = torch.tensor(COLOURS, dtype=torch.float32)[:, None, None] / 255
    assert (frames - wanted).abs().mean() < 0.03  # lossy, but each frame its own colour


def test_palette_and_grey_images_are_read_as_rgb(tmp_path):
    Image.new("L", (6, 4), 128).save(tmp_path / "grey.png")
    Image.new("P", (6, 4), 3).save(tmp_path / "palette.gif")
    for name in ("grey.png", "palette.gif"):
        assert evaluate.read_frames(tmp_path / name).shape == (1, 4, 6, 3)
    with pytest.raises(ValueError, match=r"^clip\.webp: no frames$"):
        evaluate.stack_frames([], "clip.webp")


def test_references_are_the_first_frame_of_each_image(tmp_path):
    frames = [Image.new("RGB", (8, 8), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "moving.png", save_all=True, append_images=frames[1:])
    [photo] = evaluate.read_references(tmp_path)
    assert photo.shape == (1, 8, 8, 3) and photo.sum() == 0


def test_the_evaluate_command_says_what_it_takes(capsys):
    with pytest.raises(SystemExit) as shown:
        evaluate.main(["--help"])
    text = capsys.readouterr().out
    assert shown.value.code == 0 and text.startswith("usage: python -m vcd_core.evaluate")
    assert evaluate.__doc__.split("\n\n")[0] in " ".join(text.split()) and "--manifest runs.csv" not in text
    flat = " ".join(text.split())
    for option, words in (("--dino DINO", "local HF folder of DINO ViT-S/16"),
                          ("--clip CLIP", "local HF folder of CLIP ViT-B/32"),
                          ("--arcface ARCFACE", "optional: insightface's ArcFace .onnx (e.g. w600k_r50.onnx); adds "
                                                "face_similarity (needs onnxruntime)"),
                          ("--overwrite", "replace scores.csv and summary.json in --out")):
        assert re.search(rf"{re.escape(option)} {re.escape(words)}( -|$)", flat), option
    for missing in ("--manifest", "--references", "--dino", "--clip", "--out"):
        argv = [a for flag in ("--manifest", "--references", "--dino", "--clip", "--out") if flag != missing
                for a in (flag, "x")]
        with pytest.raises(SystemExit) as refused:
            evaluate.main(argv)
        assert refused.value.code == 2 and f"the following arguments are required: {missing}" in capsys.readouterr().err


class RecordingSession:
    """An onnxruntime-shaped session whose model returns each input's mean per channel: what ArcFace feeds it is
    visible in the features, and every batch is kept."""

    def __init__(self, shape):
        self.shape, self.batches = shape, []

    def get_inputs(self):
        return [type("Input", (), {"name": "data", "shape": self.shape})()]

    def run(self, outputs, feeds):
        self.batches.append(feeds["data"])
        return [feeds["data"].mean(axis=(2, 3))]


def arcface_input(crop: torch.Tensor, size: int) -> torch.Tensor:
    """What ArcFace should feed the model for one face crop: RGB, resized, clamped, (x * 255 - 127.5) / 127.5."""
    x = torch.nn.functional.interpolate(crop[..., :3].movedim(-1, 0)[None].float(), size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)[0]
    return (x.clamp(0, 1) * 255 - 127.5) / 127.5


def test_arcface_crops_normalises_and_batches_faces(monkeypatch):
    from vcd_core import face_detect
    from vcd_core.geometry import Box

    session = RecordingSession(["batch", 3, 16, 16])
    arcface = encoders.ArcFace(session, batch_size=2)
    assert arcface.size == 16 and encoders.ArcFace(RecordingSession(["n", 3, "h", "w"])).size == 112
    crops = torch.rand(5, 20, 24, 4, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2  # RGBA, out of [0, 1]
    features = arcface.faces(crops)
    assert [b.shape for b in session.batches] == [(2, 3, 16, 16), (2, 3, 16, 16), (1, 3, 16, 16)]
    wanted = torch.stack([arcface_input(c, 16) for c in crops])
    assert torch.allclose(torch.from_numpy(np.concatenate(session.batches)), wanted)
    assert torch.allclose(features, wanted.mean(dim=(2, 3))) and features.dtype == torch.float32

    frames = torch.rand(5, 40, 60, 3, generator=torch.Generator().manual_seed(1))
    boxes = [[], [Box(10, 20, 50, 60), Box(0, 4, 0, 4)], [Box(2, 32, 5, 35)], [Box(30, 40, 0, 10)],
             [Box(14, 40, 10, 50)]]  # none; near the right edge; large; bottom left; taller than the frame with 1.3
    monkeypatch.setattr(face_detect, "haar_faces", lambda images: boxes)
    session.batches.clear()
    features, found = arcface(frames)
    assert found.tolist() == [False, True, True, True, True] and features.shape == (4, 3)
    # 13 px (1.3 x 10) about (15, 55), moved left into the frame; 39 px about (17, 20), moved down to the top;
    # 13 px about (35, 5), moved up and right into the frame; 52 px about (27, 30): from the top, cut to the frame
    wanted = torch.stack([arcface_input(frames[1, 9:22, 47:60], 16), arcface_input(frames[2, 0:39, 1:40], 16),
                          arcface_input(frames[3, 27:40, 0:13], 16), arcface_input(frames[4, 0:40, 4:56], 16)])
    assert torch.allclose(torch.cat([torch.from_numpy(b) for b in session.batches]), wanted)
    session.batches.clear()
    monkeypatch.setattr(face_detect, "haar_faces", lambda images: [[Box(0, 20, 12, 60)]])  # 62 px: wider than it
    arcface(frames[:1])
    assert torch.allclose(torch.from_numpy(session.batches[0]), arcface_input(frames[0], 16)[None])
    session.batches.clear()
    monkeypatch.setattr(face_detect, "haar_faces", lambda images: [[] for _ in images])
    none, found = arcface(frames)
    assert none.shape == (0, 1) and found.tolist() == [False] * 5 and session.batches == []


def test_clip_text_pads_batches_and_cuts_long_prompts_at_77_tokens(tiny_models):
    _, encode_text = encoders.load_clip(tiny_models[1])
    texts = ["a", "a photo of a man"]
    batch = encode_text(texts)
    assert torch.allclose(batch, torch.cat([encode_text([t]) for t in texts]), atol=1e-6)
    long = encode_text(["a " * 200])  # 202 tokens: cut to BOS + 75 + EOS, as the paper's CLIP-T reads a prompt
    assert torch.allclose(long, encode_text(["a " * 75]), atol=1e-6)


def test_encoder_folders_are_named_with_the_model_expected(tmp_path, tiny_models):
    with pytest.raises(FileNotFoundError, match=r"^CLIP ViT-B/32: no model in .*nothing \(expected a Hugging Face "
                                                r"folder with config\.json and weights, e\.g\. a save_pretrained copy "
                                                r"of CLIP ViT-B/32\)\.$"):
        encoders.load_clip(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"^DINO ViT-S/16: .* holds a 'clip' model, expected one of \('vit', "
                                         r"'dinov2'\)\.$"):
        encoders.load_dino(tiny_models[1])
    with pytest.raises(ValueError, match=r"^CLIP ViT-B/32: .* holds a 'vit' model, expected one of \('clip',\)\.$"):
        encoders.load_clip(tiny_models[0])


def test_preprocessing_resizes_the_short_side_crops_the_centre_and_normalises(tmp_path):
    """The folder's preprocessor_config.json (mean, std, crop size as a dict or a number) over the model's size."""
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)

    def wanted(images, size, top, left, side):
        x = torch.nn.functional.interpolate(images[..., :3].movedim(-1, 1), size=size, mode="bicubic", antialias=True,
                                            align_corners=False)
        return (x[..., top:top + side, left:left + side].clamp(0, 1) - mean) / std

    # wide, RGBA, black and white: bicubic overshoots [0, 1] on edges like these, so the clamp shows
    images = (torch.rand(2, 30, 60, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for crop in ({"height": 16, "width": 16}, 16):
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": mean.flatten().tolist(), "image_std": std.flatten().tolist(), "crop_size": crop}))
        run = encoders._preprocess(tmp_path, 99, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        assert torch.allclose(run(images), wanted(images, (16, 32), 0, 8, 16), atol=1e-6)
    tall = images.transpose(1, 2)
    assert torch.allclose(run(tall), wanted(tall, (32, 16), 8, 0, 16), atol=1e-6)
    (tmp_path / "preprocessor_config.json").unlink()  # no file: the model's size and the given mean / std
    plain = encoders._preprocess(tmp_path, 12, mean.flatten().tolist(), std.flatten().tolist())
    assert torch.allclose(plain(images), wanted(images, (12, 24), 0, 6, 12), atol=1e-6)


def test_arcface_files_that_cannot_be_run_are_named(tmp_path, monkeypatch):
    import sys

    grey = te.export_onnx(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 8, 8), torch.nn.Flatten()), (1, 1, 16, 16),
                          tmp_path / "grey.onnx")
    with pytest.raises(ValueError, match=r"^ArcFace: grey\.onnx takes \[.*1, 16, 16\], not face images \[N, 3, H, W\]$"):
        encoders.load_arcface(grey)
    with pytest.raises(FileNotFoundError, match=r"^ArcFace: no \.onnx model at .*w600k\.pth; put insightface's "
                                                r"recognition model \(e\.g\. models/insightface/models/buffalo_l/"
                                                r"w600k_r50\.onnx\) there\.$"):
        encoders.load_arcface(tmp_path / "w600k.pth")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"^ArcFace: the face score needs onnxruntime \(pip install onnxruntime\); it "
                                          r"is optional$"):
        encoders.load_arcface(grey)


def test_the_evaluate_command_works_offline_and_reports_as_it_goes(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    refs = tmp_path / "refs" / "ann"
    refs.mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(refs / "a.png")
    frames = [Image.new("RGB", (32, 32), (100 + 40 * (i % 2), 100, 100)) for i in range(3)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    (tmp_path / "runs.csv").write_text("video,subject,prompt,setting\na.png,ann,a photo,g0\na.png,ann,a man,g1\n")
    command = ["--manifest", str(tmp_path / "runs.csv"), "--references", str(tmp_path / "refs"), "--dino",
               str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")]
    assert evaluate.main(command) == 0
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"  # nothing is fetched
    out, err = capsys.readouterr()
    assert err.endswith("\r[1/2] a.png\r[2/2] a.png\n")  # (after transformers' own loading bars)
    lines = out.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["g0", "g1"]
    assert all(re.fullmatch(r"g[01]( [a-z_]+=-?\d+\.\d{3})+", line) for line in lines), lines
    summary = (tmp_path / "out" / "summary.json").read_text()
    assert summary.startswith('{\n  "g0": {\n    "videos": 1,') and summary.endswith("}\n")
    (tmp_path / "runs.csv").write_text("video,subject,prompt\na.png,ann,a photo\n")
    assert evaluate.main([*command, "--overwrite"]) == 0  # replaces both tables
    assert list(json.loads((tmp_path / "out" / "summary.json").read_text())) == ["default"]
    assert len(list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))) == 1


def test_an_empty_manifest_is_named(tiny_models, tmp_path, capsys):
    (tmp_path / "refs").mkdir()
    (tmp_path / "runs.csv").write_text("video,subject,prompt\n")
    with pytest.raises(SystemExit):
        evaluate.main(["--manifest", str(tmp_path / "runs.csv"), "--references", str(tmp_path / "refs"), "--dino",
                       str(tiny_models[0]), "--clip", str(tiny_models[1]), "--out", str(tmp_path / "out")])
    assert re.search(r"error: .*runs\.csv lists no videos$", capsys.readouterr().err.strip())
