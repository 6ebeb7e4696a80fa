"""vcd_core.grounding_dino_original on its own: the transformers config built from an original ``.cfg.py`` + its
checkpoint equals the config the weights came from, and every file that is not a released GroundingDINO is refused
with a message naming what is wrong (the converted model's outputs: tests/test_segment.py)."""

from __future__ import annotations

import re

import pytest
import torch

from vcd_core import grounding_dino_original as gdo

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """``(hf_folder, checkpoint, bert_folder)`` of the tiny seeded GroundingDINO, saved both ways."""
    from devtools.original_grounding_dino import save_tiny_original_grounding_dino

    return save_tiny_original_grounding_dino(tmp_path_factory.mktemp("original_gdino"))


def parts(original):
    from transformers import BertConfig

    hf_folder, checkpoint, bert = original
    cfg = gdo.read_cfg(checkpoint.with_name("tiny_ogc.cfg.py"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return cfg, state, BertConfig.from_pretrained(bert, local_files_only=True)


def comparable(config) -> dict:
    ignored = {"_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype", "id2label",
               "label2id", "_attn_implementation_autoset", "output_hidden_states"}
    data = {k: v for k, v in config.to_dict().items() if k not in ignored}
    data["backbone_config"] = {k: v for k, v in data["backbone_config"].items() if k not in ignored}
    data["text_config"] = {k: v for k, v in data["text_config"].items() if k not in ignored}
    return data


def test_the_config_is_the_one_the_weights_came_from(original):
    """Read with its keys in reverse order too (Swin blocks counted whatever order the file lists them in)."""
    from transformers import GroundingDinoConfig

    cfg, state, text = parts(original)
    reference = comparable(GroundingDinoConfig.from_pretrained(original[0]))
    reference["backbone_config"].pop("image_size")  # the tiny model's 64; the release name's 224 here (below)
    for order in (state, dict(reversed(list(state.items())))):
        ours = comparable(gdo.hf_config(cfg, order, text))
        assert {**ours, "backbone_config": {k: v for k, v in ours["backbone_config"].items()
                                            if k != "image_size"}} == reference
    swin = ours["backbone_config"]
    assert (swin["depths"], swin["image_size"], swin["out_indices"]) == ([1, 1, 2, 1], 224, [2, 3, 4])
    assert (ours["two_stage"], ours["two_stage_bbox_embed_share"], ours["decoder_bbox_embed_share"],
            ours["embedding_init_target"], ours["query_dim"]) == (True, False, True, True, 4)
    assert ours["positional_embedding_temperature"] == 20 and ours["encoder_n_points"] == cfg["enc_n_points"]


def test_the_image_size_is_read_from_the_backbone_name(original):
    cfg, state, text = parts(original)
    assert gdo.hf_config({**cfg, "backbone": "swin_tiny_384_1k"}, state, text).backbone_config.image_size == 384


@pytest.mark.parametrize("change, message", [
    (lambda c: [c.pop("nheads"), c.pop("enc_n_points")],
     "the .cfg.py lacks nheads, enc_n_points: use the original GroundingDINO config file."),
    (lambda c: c.update(query_dim=3, num_patterns=1),
     "the .cfg.py sets {'query_dim': 3, 'num_patterns': 1}: transformers' GroundingDINO only holds the released "
     "architecture (query_dim=4, num_patterns=0)."),
    (lambda c: c.update(pe_temperatureW=10),
     "the .cfg.py sets {'pe_temperatureH': 20, 'pe_temperatureW': 10}: transformers' GroundingDINO only holds the "
     "released architecture ()."),
    (lambda c: c.update(text_encoder_type="roberta-base"),
     "the .cfg.py names text encoder 'roberta-base'; only bert-base-uncased is read."),
    (lambda c: c.update(backbone="resnet50"),
     "the .cfg.py names backbone 'resnet50'; only the Swin GroundingDINO checkpoints are read."),
])
def test_a_cfg_transformers_cannot_hold_is_named(original, change, message):
    cfg, state, text = parts(original)
    change(cfg)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        gdo.hf_config(cfg, state, text)


def test_a_local_bert_folder_is_found_by_its_tokenizer_json(original, tmp_path):
    (tmp_path / "nested" / "bert").mkdir(parents=True)
    (tmp_path / "nested" / "bert" / "config.json").write_text("{}")
    (tmp_path / "nested" / "bert" / "tokenizer.json").write_text("{}")
    (tmp_path / "a_other").mkdir()
    (tmp_path / "a_other" / "config.json").write_text("{}")  # a config without tokenizer files is not BERT's
    assert gdo.bert_folder(tmp_path) == tmp_path / "nested" / "bert"
    assert gdo.bert_folder(original[2]) == original[2]


def test_bert_that_does_not_fit_the_checkpoint_is_named(original):
    cfg, state, text = parts(original)
    wide = text.__class__(**{**text.to_dict(), "hidden_size": text.hidden_size * 2})
    with pytest.raises(ValueError, match=rf"^the BERT config \(vocab {text.vocab_size}, width {text.hidden_size * 2}, "
                                         rf"{text.num_hidden_layers} layers\) does not fit the checkpoint's BERT "
                                         rf"\(\({text.vocab_size}, {text.hidden_size}\), {text.num_hidden_layers} "
                                         r"layers\): use bert-base-uncased's config.json\.$"):
        gdo.hf_config(cfg, state, wide)
    no_bert = {k: v for k, v in state.items() if not k.startswith("bert.embeddings.word_embeddings")}
    with pytest.raises(ValueError, match=r"does not fit the checkpoint's BERT \(None, \d+ layers\)"):
        gdo.hf_config(cfg, no_bert, text)
    no_swin = {k: v for k, v in state.items() if k != "backbone.0.patch_embed.proj.weight"}
    with pytest.raises(ValueError, match=r"^the checkpoint for the .cfg.py is not an original GroundingDINO Swin "
                                         r"checkpoint \(no 'backbone.0.patch_embed.proj.weight'\)$"):
        gdo.hf_config(cfg, no_swin, text)


def test_checkpoints_are_read_with_or_without_their_wrapper(original, tmp_path):
    state = torch.load(original[1], map_location="cpu", weights_only=True)["model"]
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)  # saved from DataParallel
    for path in (plain, wrapped, original[1]):
        read = gdo._read_checkpoint(path)
        assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)
    extra = tmp_path / "extra.pth"
    torch.save({"model": {**state, "epoch": 3}}, extra)
    with pytest.raises(ValueError, match=r"^extra.pth is not a GroundingDINO checkpoint \(no state dict under "
                                         r"'model'\)\.$"):
        gdo._read_checkpoint(extra)


def test_weights_with_no_place_are_refused_by_name(original):
    state = torch.load(original[1], map_location="cpu", weights_only=True)["model"]
    box = next(k for k in state if re.fullmatch(r"bbox_embed\.0\.layers\.\d+\.weight", k))
    unshared = {**state, box.replace("bbox_embed.0", "bbox_embed.1"): state[box] + 1}
    with pytest.raises(ValueError, match=r"^bbox_embed\.1\.layers\.\d+\.weight differs from bbox_embed\.0: a "
                                         r"checkpoint with unshared box heads \(dec_pred_bbox_embed_share False\) is "
                                         r"not a released GroundingDINO\.$"):
        gdo.to_hf_state_dict(unshared)
    without_first = {k: v for k, v in state.items() if not k.startswith("bbox_embed.0.")}
    without_first["transformer.decoder.bbox_embed.1." + box.split(".", 2)[2]] = state[box]
    with pytest.raises(ValueError, match="differs from bbox_embed.0"):  # nothing to be a copy of
        gdo.to_hf_state_dict(without_first)
    with pytest.raises(ValueError, match=r"^unexpected weight 'head\.weight': not an original GroundingDINO "
                                         r"checkpoint \(or a variant transformers' GroundingDINO cannot hold\)\.$"):
        gdo.to_hf_state_dict({**state, "head.weight": torch.zeros(1)})


def test_a_cfg_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    code = tmp_path / "code.cfg.py"
    code.write_text(f"hidden_dim = 256\nopen({str(marker)!r}, 'w').write('x')\n")
    shown = repr(f"open({str(marker)!r}, 'w').write('x')"[:60])  # the line's first 60 characters
    with pytest.raises(ValueError, match=r"^code.cfg.py line 2: only `name = literal` lines are read from a "
                                         r"GroundingDINO \.cfg\.py, and this one holds code \(" + re.escape(shown) +
                                         r"\); it is not run\. Use the original config file\.$"):
        gdo.read_cfg(code)
    broken = tmp_path / "broken.cfg.py"
    broken.write_text("hidden_dim = (256\n")
    with pytest.raises(ValueError, match=r"^broken.cfg.py is not a GroundingDINO \.cfg\.py \(line 1: .+\)$"):
        gdo.read_cfg(broken)
    assert not marker.exists()
    (tmp_path / "ok.cfg.py").write_text("hidden_dim = 256\nreturn_interm_indices = [1, 2, 3]\nname = 'x'\n")
    assert gdo.read_cfg(tmp_path / "ok.cfg.py") == {"hidden_dim": 256, "return_interm_indices": [1, 2, 3], "name": "x"}


def test_a_cfg_of_another_release_is_named(original):
    cfg, state, text = parts(original)
    with pytest.raises(ValueError, match=r"^x.cfg.py says swin_T_224_1k \(96, \(2, 2, 6, 2\), \(3, 6, 12, 24\), 7\) "
                                         r"but the checkpoint's Swin is \(\d+, \(1, 1, 2, 1\), \(1, 1, 2, 2\), \d+\) "
                                         r"\(embed_dim, depths, heads, window\): the \.cfg\.py belongs to another "
                                         r"checkpoint \(SwinT: GroundingDINO_SwinT_OGC\.cfg\.py, SwinB: "
                                         r"GroundingDINO_SwinB\.cfg\.py\)\.$"):
        gdo.hf_config({**cfg, "backbone": "swin_T_224_1k"}, state, text, "x.cfg.py")


def test_a_checkpoint_missing_weights_is_named_with_them(original, tmp_path):
    import shutil

    state = torch.load(original[1], map_location="cpu", weights_only=True)["model"]
    checkpoint = tmp_path / "tiny_ogc.pth"
    torch.save({"model": {k: v for k, v in state.items() if k != "transformer.level_embed"}}, checkpoint)
    shutil.copy(original[1].with_name("tiny_ogc.cfg.py"), tmp_path)
    with pytest.raises(ValueError, match=r"^tiny_ogc.pth with tiny_ogc.cfg.py does not fill transformers' "
                                         r"GroundingDINO: \{'missing_keys': \['model.level_embed'\]\}$"):
        gdo.load_original(checkpoint, original[2])


def test_a_bert_folder_holding_another_model_is_named(original, tmp_path):
    import json
    import shutil

    folder = tmp_path / "bert-base-uncased"
    shutil.copytree(original[2], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(folder))} holds a 'roberta' config, not BERT: put "
                                         r"bert-base-uncased's config.json and vocab.txt \(or tokenizer.json\) there"):
        gdo.load_original(original[1], folder)
