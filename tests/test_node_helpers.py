"""The nodes' pure helpers in-process: input checks (nodes/inputs.py), IMAGE channels (nodes/channels.py),
line charts (nodes/charts.py) and what the pack reads from AnimateDiff-Evolved's MODEL (nodes/ade.py)."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture(scope="module")
def helpers(inproc):
    return inproc.pack.nodes


@pytest.fixture(scope="module")
def io(inproc):
    from comfy_api.latest import io

    return io


def test_numbers_are_checked_against_their_widget(helpers, io):
    check = helpers.inputs.check_value
    steps, cfg = io.Int.Input("steps", min=1, max=10), io.Float.Input("cfg", min=0.0, max=30.0)
    for spec, value in ((steps, 1), (steps, 10), (steps, 3.0), (cfg, 0.0), (cfg, 30.0), (cfg, 7), (steps, None)):
        check("Node", spec, value)
    for spec, value, message in (
        (steps, 0, "Node: steps must be at least 1 (got 0)."),
        (steps, 11, "Node: steps must be at most 10 (got 11)."),
        (steps, 2.5, "Node: steps must be a whole number (got 2.5)."),
        (steps, True, "Node: steps must be a number (got True)."),
        (cfg, "7", "Node: cfg must be a number (got '7')."),
        (cfg, math.nan, "Node: cfg must be a finite number (got nan). Type a number in the widget."),
        (cfg, -math.inf, "Node: cfg must be a finite number (got -inf). Type a number in the widget."),
        (cfg, 30.5, "Node: cfg must be at most 30.0 (got 30.5)."),
    ):
        with pytest.raises(ValueError) as refused:
            check("Node", spec, value)
        assert str(refused.value) == message
    check("Node", io.Float.Input("free"), -1e30)  # no min or max: any finite number
    check("Node", io.String.Input("text"), float("nan"))  # not a number widget: not ours to check


def test_choices_are_checked_and_listed(helpers, io):
    check = helpers.inputs.check_value
    few = io.Combo.Input("mode", options=["ar1", "mixed"])
    check("Node", few, "mixed")
    with pytest.raises(ValueError) as refused:
        check("Node", few, "sideways")
    assert str(refused.value) == "Node: mode 'sideways' is not one of the choices (ar1, mixed). Pick one from the list."
    twelve, thirteen = (io.Combo.Input("n", options=[str(i) for i in range(count)]) for count in (12, 13))
    with pytest.raises(ValueError, match=r"choices \(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11\)\. Pick"):
        check("Node", twelve, "x")
    with pytest.raises(ValueError, match=r"choices \(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \.\.\.\)\. Pick"):
        check("Node", thirteen, "x")
    models = io.Combo.Input("sam_model", options=[], tooltip="models/sams: an original SAM .pth checkpoint.")
    with pytest.raises(ValueError) as refused:
        check("Node", models, "sam_vit_b_01ec64.pth")  # a shared workflow opened before the model is downloaded
    assert str(refused.value) == ("Node: sam_model 'sam_vit_b_01ec64.pth' is not one of the choices (none yet). Pick "
                                  "one from the list. sam_model is read from models/sams: an original SAM .pth "
                                  "checkpoint: put the file there and reload the page.")


def test_checked_checks_the_keyword_inputs_of_its_schema_then_runs(helpers, io):
    ran = []

    class Node:
        name = None

        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="VCDTestNode", display_name=cls.name, inputs=[io.Int.Input("steps", min=1)],
                             outputs=[])

        @classmethod
        @helpers.inputs.checked
        def execute(cls, image, steps=1, other=None):
            ran.append((image, steps, other))
            return "done"

    assert Node.execute("pixels", steps=2, other=-5) == "done" and ran == [("pixels", 2, -5)]
    with pytest.raises(ValueError, match=r"^VCDTestNode: steps must be at least 1"):
        Node.execute("pixels", steps=0)
    Node.name = "VCD Test"
    with pytest.raises(ValueError, match=r"^VCD Test: steps must be at least 1"):
        Node.execute("pixels", steps=0)
    assert len(ran) == 1 and Node.execute.__name__ == "execute"


def test_image_channels_become_rgb_or_are_refused_by_name(helpers):
    as_rgb = helpers.channels.as_rgb
    rgb = torch.rand(2, 5, 6, 3)
    alpha = torch.rand(2, 5, 6, 1)
    assert torch.equal(as_rgb(rgb, "image"), rgb) and torch.equal(as_rgb(torch.cat([rgb, alpha], -1), "image"), rgb)
    grey = rgb[..., :1]
    for grey_input in (grey, torch.cat([grey, alpha], dim=-1)):  # grey, grey + alpha
        assert torch.equal(as_rgb(grey_input, "image"), grey.expand(-1, -1, -1, 3))
    for bad, message in (
        (torch.rand(2, 5, 6, 5), "images: an IMAGE has 1 to 4 channels (grey, grey + alpha, RGB, RGBA); this one has 5 channels."),
        (torch.rand(2, 5, 6, 0), "images: an IMAGE has 1 to 4 channels (grey, grey + alpha, RGB, RGBA); this one has 0 channels."),
        (torch.rand(0, 5, 6, 3), "images: the batch is empty (shape (0, 5, 6, 3)); connect at least one image."),
        (torch.rand(1, 5, 0, 3), "images: the batch is empty (shape (1, 5, 0, 3)); connect at least one image."),
        (torch.rand(5, 6, 3), "images: expected an IMAGE batch [B, H, W, C], got (5, 6, 3); connect an IMAGE output."),
        ([1, 2], "images: expected an IMAGE batch [B, H, W, C], got list; connect an IMAGE output."),
    ):
        with pytest.raises(ValueError) as refused:
            as_rgb(bad, "images")
        assert str(refused.value) == message


BLUE = torch.tensor([40, 90, 200]) / 255


def test_line_chart_maps_values_to_rows_between_low_and_high(helpers):
    """Pad 28 px: ``high`` lies on row 28, ``low`` on row H - 28, values outside clamp; x spans pad..W - pad."""
    chart = helpers.charts.line_chart
    image = chart([([3.0, 3.0], (40, 90, 200), "above"), ([-3.0, -3.0], (230, 120, 20), "below")], low=0.0, high=1.0)
    assert image.shape == (1, 256, 512, 3) and image.dtype == torch.float32
    assert torch.equal(image[0, 28, 256], BLUE) and torch.equal(image[0, 228, 256], torch.tensor([230, 120, 20]) / 255)
    assert torch.equal(image[0, 100, 256], torch.ones(3)) and torch.equal(image[0, 28, 500], torch.ones(3))
    fitted = chart([([2.0, 4.0, 4.0], (40, 90, 200), "fitted")])  # range 2..4: 4 on top, 2 at the bottom
    assert torch.equal(fitted[0, 28, 400], BLUE) and torch.equal(fitted[0, 227, 29], BLUE)
    flat = chart([([3.0, 3.0], (40, 90, 200), "flat")], width=200, height=100)  # no span: drawn at the bottom
    assert flat.shape == (1, 100, 200, 3) and torch.equal(flat[0, 72, 100], BLUE)
    dot = chart([([0.5], (40, 90, 200), "one")], low=0.0, high=1.0)
    assert torch.equal(dot[0, 128, 28], BLUE) and torch.equal(dot[0, 120, 40], torch.ones(3))
    assert chart([([], (40, 90, 200), "none")]).shape == (1, 256, 512, 3)


def test_line_chart_breaks_a_series_where_a_value_is_none(helpers):
    """x = 28 + i * 114: the line joins frames 0-1 and 3-4 on row 28, not 1-3; a lone value is a dot."""
    chart = helpers.charts.line_chart
    image = chart([([1.0, 1.0, None, 1.0, 1.0], (40, 90, 200), "gap")], low=0.0, high=1.0)
    assert torch.equal(image[0, 28, 100], BLUE) and torch.equal(image[0, 28, 420], BLUE)
    assert not torch.equal(image[0, 28, 200], BLUE) and not torch.equal(image[0, 28, 300], BLUE)
    dot = chart([([None, 0.5, None], (40, 90, 200), "lone")], low=0.0, high=1.0)
    assert torch.equal(dot[0, 128, 256], BLUE) and not (dot[0, 128, 262] == BLUE).all()
    fitted = chart([([None, 2.0, 4.0], (40, 90, 200), "fitted")])  # None is left out of the fitted range
    def near(y, x):  # BLUE within 1 px of (y, x)
        return bool((fitted[0, y - 1:y + 2, x - 1:x + 2] == BLUE).all(dim=-1).any())

    assert near(28, 483) and near(228, 257) and not near(128, 100)  # 4 on top at x 484, 2 at the bottom at x 256


def ade_model(inproc, **settings):
    """The tiny MODEL with a Sample Settings attachment where ADE puts its own (defaults unless given)."""
    model = inproc.tiny.tiny_model(0).clone()
    defaults = dict(batch_offset=0, seed_offset=0, noise_type="default", seed_gen="comfy", seed_override=None,
                    noise_layers=SimpleNamespace(layers=[]), iteration_opts=SimpleNamespace(iterations=1))
    model.set_attachments("ADE_sample_settings", SimpleNamespace(**{**defaults, **settings}))
    return model


def test_ade_settings_that_change_the_noise_are_named(inproc, helpers):
    changes = helpers.ade.noise_changes
    assert changes(inproc.tiny.tiny_model(0)) == [] and changes(object()) == [] and changes(ade_model(inproc)) == []
    assert changes(ade_model(inproc, seed_offset=1, noise_type="FFT")) == [
        "seed_offset=1 replaces it", "noise_type='FFT' replaces it"]
    assert changes(ade_model(inproc, batch_offset=2, seed_gen="auto1111", seed_override=5)) == [
        "batch_offset=2 replaces it", "seed_gen='auto1111' replaces it", "seed_override=5 replaces it"]
    assert changes(ade_model(inproc, noise_layers=SimpleNamespace(layers=["a", "b"]))) == [
        "2 noise layer(s) mix other noise into it"]
    assert changes(ade_model(inproc, iteration_opts=SimpleNamespace(iterations=3))) == [
        "iteration_opts (3 iterations) re-noise it"]
    sparse = inproc.tiny.tiny_model(0).clone()
    sparse.set_attachments("ADE_sample_settings", SimpleNamespace(seed_offset=0))  # older ADE: fewer fields
    assert changes(sparse) == []


def test_the_artist_is_warned_only_when_a_prior_is_lost(inproc, helpers, caplog):
    warn = helpers.ade.warn_if_prior_lost
    caplog.set_level(logging.WARNING, logger="vcd")
    assert warn(ade_model(inproc, seed_offset=1), 0.0, None, "VCD Face Refine") is None  # gamma 0: no prior to lose
    assert warn(ade_model(inproc), 0.1, None, "VCD Face Refine") is None and caplog.text == ""
    message = warn(ade_model(inproc, seed_offset=1, iteration_opts=SimpleNamespace(iterations=2)), 0.25, None, "VCD X")
    assert message == ("VCD X: AnimateDiff-Evolved's Sample Settings on this MODEL change the sampler's noise "
                       "(seed_offset=1 replaces it; iteration_opts (2 iterations) re-noise it), so the 3D noise prior "
                       "(gamma 0.25) is not what gets sampled. Keep the Sample Settings at their defaults (or leave them "
                       "unwired) to use the prior.")
    assert message in caplog.text


def test_training_gets_the_model_without_animatediff(inproc, helpers):
    from comfy.patcher_extension import PatcherInjection

    plain_model = inproc.tiny.tiny_model(0)
    assert helpers.ade.without_animatediff(plain_model) is plain_model
    model = plain_model.clone()
    injection = PatcherInjection(inject=lambda patcher: None, eject=lambda patcher: None)
    model.set_injections("ADE", [injection])
    model.set_injections("other", [injection])
    model.set_additional_models("ADE", [plain_model.clone()])
    model.add_object_patch("model_sampling", object())
    model.add_object_patch("kept", 1)
    plain = helpers.ade.without_animatediff(model)
    assert plain is not model and "ADE" not in plain.injections and "other" in plain.injections
    assert "ADE" not in plain.additional_models and "model_sampling" not in plain.object_patches
    assert plain.object_patches["kept"] == 1
    assert "ADE" in model.injections and "ADE" in model.additional_models and "model_sampling" in model.object_patches


def test_yolo_models_are_found_and_missed_in_models_ultralytics_bbox(inproc, helpers, tmp_path, monkeypatch):
    """Impact Pack's folder: a YOLO file there is listed for Face Detect and Face Tracks alike; a missing one is an
    error naming models/ultralytics/bbox (not the key), and no models/ultralytics_bbox is ever searched."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "ultralytics_bbox", ([], set()))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    (tmp_path / "ultralytics" / "bbox").mkdir(parents=True)
    (tmp_path / "ultralytics" / "bbox" / "face_yolov8m.pt").write_bytes(b"weights")
    assert helpers.face.detector_options() == ["opencv_haar", "yolo/face_yolov8m.pt"]
    frames = torch.zeros(1, 32, 32, 3)
    for detect in (helpers.face.detect_masks, helpers.face.detect_boxes):  # Face Detect, Face Tracks
        with pytest.raises(FileNotFoundError, match=r"^detector: 'gone.pt' is not in models/ultralytics/bbox; put the "
                                                    r"YOLO face model there\.$"):
            detect(frames, "yolo/gone.pt")
        with pytest.raises(ValueError, match=r"detector must be 'opencv_haar' or a 'yolo/<file>' from "
                                             r"models/ultralytics/bbox \(got 'mtcnn'\)"):
            detect(frames, "mtcnn")
    assert folder_paths.get_folder_paths("ultralytics_bbox") == [str(tmp_path / "ultralytics" / "bbox")]
    assert helpers.model_folders.folder_name("sams") == "models/sams"
