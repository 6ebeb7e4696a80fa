"""Prompt-to-segmentation with tiny seeded GroundingDINO (transformers) and SAM (original .pth) models."""

import numpy as np
import pytest
import skimage.data
import torch

from devtools.tiny_encoders import save_tiny_grounding_dino, save_tiny_sam
from vcd_core import segment


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment_models")
    dino = save_tiny_grounding_dino(root / "grounding-dino" / "tiny-gdino")
    sam = save_tiny_sam(root / "sams" / "tiny_sam.pth")
    return root, dino, sam


@pytest.fixture(scope="module")
def images():
    photo = torch.from_numpy(skimage.data.astronaut()[::4, ::4].copy()).float() / 255  # 128x128
    return torch.stack([photo, photo.flip(1)])


@pytest.fixture()
def model_dirs(inproc, models, monkeypatch):
    import folder_paths

    root, _, _ = models
    for key in ("grounding-dino", "sams"):
        monkeypatch.setitem(folder_paths.folder_names_and_paths, key, ([str(root / key)], {".pth", ".safetensors", ""}))
    return root


def run(inproc, images, **overrides):
    options = dict(prompt="person", grounding_dino_model="tiny-gdino", sam_model="tiny_sam.pth", box_threshold=0.0,
                   text_threshold=0.0, box_mode="first", if_none="empty")
    options.update(overrides)
    with torch.inference_mode():
        return inproc.pack.nodes.segment.VCDPromptSegment.execute(images, **options)


def test_node_takes_grey_and_rgba_images(inproc, model_dirs, images):
    masks, preview = run(inproc, images).result
    rgba = torch.cat([images, torch.rand(*images.shape[:-1], 1, generator=torch.Generator().manual_seed(0))], dim=-1)
    assert all(torch.equal(a, b) for a, b in zip(run(inproc, rgba).result, (masks, preview)))
    grey = images.mean(dim=-1, keepdim=True)
    assert all(torch.equal(a, b) for a, b in zip(run(inproc, grey).result, run(inproc, grey.expand(-1, -1, -1, 3)).result))


def test_core_functions_give_boxes_and_masks(models, images):
    _, dino, sam = models
    model, processor = segment.load_grounding_dino(dino)
    pixels = (images[0] * 255).to(torch.uint8).numpy()
    found = segment.detect(model, processor, pixels, "Person", 0.0, 0.0)
    assert found.boxes.shape[1] == 4 and len(found.boxes) >= 1
    assert bool((found.scores[:-1] >= found.scores[1:]).all())  # best first
    assert float(found.boxes[:, [0, 2]].min()) >= 0 and float(found.boxes[:, [0, 2]].max()) <= 128
    masks = segment.segment_boxes(segment.load_sam(sam), pixels, found.boxes[:2])
    assert masks.shape == (min(2, len(found.boxes)), 128, 128) and masks.dtype == torch.bool


def test_node_gives_one_mask_per_image(inproc, model_dirs, images):
    first, preview = run(inproc, images).result
    union = run(inproc, images, box_mode="union").result[0]
    assert first.shape == (2, 128, 128) and preview.shape == images.shape
    assert bool((union >= first).all())  # the union holds the best box's mask
    assert set(first.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("if_none, value", [("empty", 0.0), ("full", 1.0)])
def test_no_detection_gives_an_empty_or_full_mask(inproc, model_dirs, images, if_none, value):
    out = run(inproc, images, box_threshold=1.0, if_none=if_none)
    masks = out.result[0]
    assert masks.shape == (2, 128, 128) and bool((masks == value).all())
    assert "none in [0, 1]" in out.ui.as_dict()["text"][0]


def test_sam_size_is_read_from_the_weights(models):
    _, _, sam = models
    encoder = segment.load_sam(sam).model.image_encoder
    assert len(encoder.blocks) == 2 and encoder.patch_embed.proj.out_channels == 32
    assert [block.window_size for block in encoder.blocks] == [14, 0]  # block 1 is the global-attention one


def test_an_hq_sam_checkpoint_is_named(models, tmp_path):
    """HQ-SAM's files (sam_hq_vit_*.pth) share SAM's encoder keys and add their own decoder tokens."""
    state = torch.load(models[2], map_location="cpu", weights_only=True)
    state = state.get("model", state)
    torch.save({**state, "mask_decoder.hf_token.weight": torch.zeros(1, 32)}, tmp_path / "sam_hq_vit_b.pth")
    with pytest.raises(ValueError, match=r"^sam_hq_vit_b\.pth is not an original SAM checkpoint \(an HQ-SAM "
                                         r"checkpoint\): 1 unexpected weights \(e\.g\. \['mask_decoder\.hf_token\."
                                         r"weight'\]\), 0 missing \(e\.g\. \[\]\)\. Use the original SAM release"):
        segment.load_sam(tmp_path / "sam_hq_vit_b.pth")
    cut = {k: v for k, v in state.items() if not k.startswith("prompt_encoder.")}
    torch.save(cut, tmp_path / "cut_sam.pth")
    with pytest.raises(ValueError, match=r"^cut_sam\.pth is not an original SAM checkpoint: 0 unexpected weights "
                                         r"\(e\.g\. \[\]\), \d+ missing \(e\.g\. \['prompt_encoder\."):
        segment.load_sam(tmp_path / "cut_sam.pth")


def test_damaged_or_unsafe_sam_files_are_named_errors(tmp_path):
    (tmp_path / "cut.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^cut\.pth is not a readable checkpoint \(EOFError\)\. Use a released SAM "
                                         r"checkpoint \(e\.g\. sam_vit_b_01ec64\.pth\)\.$"):
        segment.load_sam(tmp_path / "cut.pth")
    torch.save({"model": {}, "hook": print}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match=r"^code\.pth holds more than tensors, so it is not loaded"):
        segment.load_sam(tmp_path / "code.pth")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"^other\.pth is not an original SAM checkpoint \(no "):
        segment.load_sam(tmp_path / "other.pth")


@pytest.mark.parametrize("overrides, error, message", [
    (dict(prompt="  "), ValueError, "prompt"),
    (dict(grounding_dino_model="nothing-here"), ValueError, "grounding_dino_model 'nothing-here' is not one of"),
    (dict(sam_model="sam_vit_h_4b8939.pth"), ValueError, r"sam_model 'sam_vit_h_4b8939.pth' is not one of .* "
                                                         r"sam_model is read from models/sams: an original SAM \.pth "
                                                         r"checkpoint: put the file there and reload the page\.$"),
    (dict(box_mode="all"), ValueError, "box_mode"),
])
def test_bad_inputs_get_clear_errors(inproc, model_dirs, images, overrides, error, message):
    with pytest.raises(error, match=message):
        run(inproc, images, **overrides)


def test_wrong_model_kinds_are_named(tmp_path, models):
    from devtools.tiny_encoders import save_tiny_dino

    with pytest.raises(ValueError, match="not GroundingDINO"):
        segment.load_grounding_dino(save_tiny_dino(tmp_path / "vit"))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "not_sam.pth")
    with pytest.raises(ValueError, match="not an original SAM checkpoint"):
        segment.load_sam(tmp_path / "not_sam.pth")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from devtools.original_grounding_dino import save_tiny_original_grounding_dino

    return save_tiny_original_grounding_dino(tmp_path_factory.mktemp("original_gdino"))


def test_original_checkpoint_converts_to_the_same_model(original, images):
    from safetensors.torch import load_file
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor

    from vcd_core.grounding_dino_original import to_hf_state_dict

    hf_folder, checkpoint, bert = original
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert "bert.pooler.dense.weight" in state and "backbone.0.layers.0.blocks.0.attn.relative_position_index" in state
    hub = {k: v for k, v in load_file(str(hf_folder / "model.safetensors")).items() if ".swin.layernorm." not in k}
    converted = to_hf_state_dict(state)  # refuses any original key it has no place for
    assert converted.keys() == hub.keys()  # every Hugging Face weight filled, none left over
    assert all(torch.equal(converted[k], hub[k]) for k in hub)
    model, processor = segment.load_grounding_dino(checkpoint, bert=bert)
    reference = GroundingDinoForObjectDetection.from_pretrained(hf_folder).eval()
    processor.image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 128})
    inputs = processor(images=[(images[0] * 255).to(torch.uint8).numpy()], text=["a person."], return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model(**inputs), reference(**inputs)
    assert torch.equal(ours.logits, theirs.logits) and torch.equal(ours.pred_boxes, theirs.pred_boxes)
    assert ours.logits.isfinite().any() and ours.pred_boxes.std() > 0  # not a degenerate output


@pytest.fixture()
def original_dirs(inproc, models, original, monkeypatch):
    import folder_paths

    root, hf_folder, checkpoint, bert = models[0], *original
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "grounding-dino",
                        ([str(hf_folder.parent), str(checkpoint.parent)], {".pth", ""}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "sams", ([str(root / "sams")], {".pth"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "bert-base-uncased", ([str(bert)], set()))
    yield hf_folder, checkpoint
    import comfy.model_management  # both routes' models go, so later tests see one GroundingDINO at most

    inproc.pack.nodes.segment.cached_grounding_dino.cache_clear()
    comfy.model_management.unload_all_models()


def test_node_masks_from_an_original_checkpoint_equal_the_hugging_face_ones(inproc, original_dirs, images):
    hf_folder, checkpoint = original_dirs
    schema = inproc.pack.nodes.segment.VCDPromptSegment.define_schema()
    options = next(spec.options for spec in schema.inputs if spec.id == "grounding_dino_model")
    assert {hf_folder.name, checkpoint.name} <= set(options)
    ours = run(inproc, images[:1], grounding_dino_model=checkpoint.name, box_mode="union").result[0]
    theirs = run(inproc, images[:1], grounding_dino_model=hf_folder.name, box_mode="union").result[0]
    assert torch.equal(ours, theirs) and 0 < float(ours.mean()) < 1


def test_node_names_the_missing_bert_folder(inproc, original_dirs, images, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "bert-base-uncased", ([str(tmp_path / "nothing")], set()))
    with pytest.raises(FileNotFoundError, match=r"nothing: put bert-base-uncased's config.json and vocab.txt"):
        run(inproc, images[:1], grounding_dino_model=original_dirs[1].name)


def original_copy(original, folder, name="groundingdino_swint_ogc.pth", cfg: str | None = None):
    """The tiny original checkpoint copied into ``folder`` as ``name``, with ``cfg`` (text) as its .cfg.py if given."""
    import shutil

    target = shutil.copy(original[1], folder / name)
    if cfg is not None:
        (folder / "GroundingDINO_SwinT_OGC.cfg.py").write_text(cfg)
    return target


def tiny_cfg_text(original) -> str:
    return original[1].with_name("tiny_ogc.cfg.py").read_text()


@pytest.mark.parametrize("case, error, message", [
    ("no cfg", FileNotFoundError, r"groundingdino_swint_ogc.pth has no config beside it .*: put "
                                  r"groundingdino_swint_ogc.cfg.py or GroundingDINO_SwinT_OGC.cfg.py"),
    ("code in cfg", ValueError, r"GroundingDINO_SwinT_OGC.cfg.py line 2: .* holds code .*it is not run"),
    ("cfg of another model", ValueError, r"says swin_T_224_1k .* belongs to another checkpoint"),
    ("no bert", FileNotFoundError, r"needs the BERT tokenizer and config in .*missing: put bert-base-uncased's"),
    ("pickled code", ValueError, r"^groundingdino_swint_ogc.pth holds more than tensors, so it is not loaded \(a "
                                 r"pickle like that can run code\)\. Use the released GroundingDINO \.pth\.$"),
    ("foreign weight", ValueError, r"unexpected weight 'extra.weight'"),
])
def test_bad_original_files_get_clear_errors(original, tmp_path, case, error, message):
    cfg = tiny_cfg_text(original)
    marker = tmp_path / "ran"
    cfg = {"no cfg": None, "code in cfg": f"hidden_dim = 32\nopen({str(marker)!r}, 'w')\n" + cfg,
           "cfg of another model": cfg.replace("'swin_tiny'", "'swin_T_224_1k'")}.get(case, cfg)
    checkpoint = original_copy(original, tmp_path, cfg=cfg)
    state = torch.load(checkpoint, weights_only=True)
    if case == "pickled code":
        import argparse

        torch.save({**state, "args": argparse.Namespace(lr=1)}, checkpoint)
    if case == "foreign weight":
        torch.save({"model": {**state["model"], "extra.weight": torch.zeros(1)}}, checkpoint)
    bert = tmp_path / "missing" if case == "no bert" else original[2]
    with pytest.raises(error, match=message):
        segment.load_grounding_dino(checkpoint, bert=bert)
    assert not marker.exists()


def test_node_models_are_under_comfyui_model_management(inproc, model_dirs, images):
    """GroundingDINO and SAM are loaded through ComfyUI's model management for the node's run, and leave it for
    the offload device when ComfyUI frees memory; the next run loads them again."""
    import comfy.model_management

    def ours():
        return [m for m in comfy.model_management.loaded_models() if type(m.model).__name__ == "_Holder"]

    masks = run(inproc, images).result[0]
    loaded = ours()
    assert sorted(type(m.model.module).__name__ for m in loaded) == ["GroundingDinoForObjectDetection", "Sam"]
    comfy.model_management.unload_all_models()
    assert ours() == []
    offload = comfy.model_management.unet_offload_device()
    assert all(p.device == offload for m in loaded for p in m.model.parameters())
    assert torch.equal(run(inproc, images).result[0], masks) and len(ours()) == 2


@pytest.mark.parametrize("prompt, text", [("Person", "person."), ("  a Cat. ", "a cat."), ("man.", "man.")])
def test_grounding_text_is_lower_case_with_one_full_stop(prompt, text):
    assert segment.grounding_text(prompt) == text


def test_an_empty_segmentation_prompt_says_what_to_give():
    with pytest.raises(ValueError, match=r"^the prompt is empty: say what to segment, e\.g\. 'person'$"):
        segment.grounding_text("  ")


def test_prompt_masks_take_the_best_box_or_all_and_fill_misses():
    """prompt_masks with stand-in detector and segmenter (it takes callables): one mask per image, in [0, 1]."""
    images = torch.rand(3, 8, 8, 4)  # an alpha channel the detector never sees
    seen = []

    def find_boxes(pixels):
        seen.append(pixels)
        index = len(seen) - 1
        boxes = [[0, 0, 4, 4], [4, 4, 8, 8]] if index == 0 else [] if index == 1 else [[2, 2, 6, 6]]
        return segment.Detection(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.ones(len(boxes)))

    def segment_boxes(pixels, boxes):
        masks = torch.zeros(len(boxes), *pixels.shape[:2], dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = True
        return masks

    masks, missed = segment.prompt_masks(images, find_boxes, segment_boxes)
    assert missed == [1] and masks.shape == (3, 8, 8) and masks.dtype == torch.float32
    assert all(p.shape == (8, 8, 3) and p.dtype == np.uint8 for p in seen)
    assert np.array_equal(seen[0], (images[0, ..., :3] * 255).round().byte().numpy())
    assert masks[0].sum() == 16 and masks[0, :4, :4].all()  # "first": the best box only
    assert masks[1].sum() == 0 and masks[2, 2:6, 2:6].all() and masks[2].sum() == 16
    seen.clear()
    union, _ = segment.prompt_masks(images, find_boxes, segment_boxes, box_mode="union", if_none="full")
    assert union[0].sum() == 32 and bool((union[1] == 1).all())
    for mode, value, message in (("box_mode", "all", r"^box_mode must be 'first' or 'union', got 'all'$"),
                                 ("if_none", "skip", r"^if_none must be 'empty' or 'full', got 'skip'$")):
        with pytest.raises(ValueError, match=message):
            segment.prompt_masks(images, find_boxes, segment_boxes, **{mode: value})


def test_loaders_name_what_is_wrong_with_a_model_folder(models, tmp_path):
    _, dino, sam = models
    with pytest.raises(FileNotFoundError, match=r"^.*empty holds no config\.json: put a Hugging Face GroundingDINO "
                                                r"folder there \(e\.g\. IDEA-Research/grounding-dino-tiny: config, "
                                                r"weights, processor and tokenizer files\)\.$"):
        segment.load_grounding_dino(tmp_path / "empty")
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(ValueError, match=r"^clip holds a 'clip' model, not GroundingDINO$"):
        segment.load_grounding_dino(clip)
    (tmp_path / "groundingdino_swint_ogc.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^groundingdino_swint_ogc\.pth is an original GroundingDINO checkpoint: it "
                                         r"needs a bert-base-uncased folder$"):
        segment.load_grounding_dino(tmp_path / "groundingdino_swint_ogc.pth")
    with pytest.raises(FileNotFoundError, match=r"^no SAM checkpoint at .*nothing\.pth: put e\.g\. "
                                                r"sam_vit_b_01ec64\.pth in models/sams$"):
        segment.load_sam(tmp_path / "nothing.pth")


def test_sam_reads_safetensors_and_checkpoints_wrapped_in_model(models, tmp_path):
    from safetensors.torch import save_file

    _, _, sam = models
    state = torch.load(sam, weights_only=True)
    save_file(state, str(tmp_path / "sam.safetensors"))
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    want = segment.load_sam(sam).model.state_dict()
    for path in (tmp_path / "sam.safetensors", tmp_path / "wrapped.pth"):
        got = segment.load_sam(path).model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_prompt_masks_clamp_out_of_range_pixels_before_the_detector_sees_them():
    seen = []
    images = torch.tensor([-0.5, 0.5, 1.5]).view(1, 1, 3, 1).expand(1, 1, 3, 3)

    def find_boxes(pixels):
        seen.append(pixels)
        return segment.Detection(torch.zeros(0, 4), torch.zeros(0))

    segment.prompt_masks(images, find_boxes, lambda pixels, boxes: torch.zeros(0, 1, 3, dtype=torch.bool))
    assert seen[0][0, :, 0].tolist() == [0, 128, 255]  # not wrapped around uint8
