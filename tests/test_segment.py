"""Prompt-to-segmentation with tiny seeded GroundingDINO (transformers) and SAM (original .pth) models."""

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


@pytest.mark.parametrize("overrides, error, message", [
    (dict(prompt="  "), ValueError, "prompt"),
    (dict(grounding_dino_model="nothing-here"), ValueError, "grounding_dino_model 'nothing-here' is not one of"),
    (dict(sam_model="sam_vit_h_4b8939.pth"), ValueError, "sam_model 'sam_vit_h_4b8939.pth' is not one of"),
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
