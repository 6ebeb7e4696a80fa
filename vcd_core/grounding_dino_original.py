"""Original GroundingDINO checkpoints (``groundingdino_swint_ogc.pth`` + ``GroundingDINO_SwinT_OGC.cfg.py``,
the SwinB pair) converted on load into transformers' ``GroundingDinoForObjectDetection``.

The key mapping follows transformers' ``convert_grounding_dino_to_hf.py``: original names become the
Hugging Face checkpoint layout (the one ``IDEA-Research/grounding-dino-tiny`` ships), which
``from_pretrained`` reads under every transformers version (5.x renames it on load). Fused
``qkv`` / ``in_proj`` matrices are split into query, key and value. The ``.cfg.py`` is parsed, never
run: only ``name = literal`` lines. The Swin size is read from the weights; the BERT config and
tokenizer come from a local ``bert-base-uncased`` folder (its weights are in the checkpoint).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import torch

from .files import load_tensors

__all__ = ["read_cfg", "paired_cfg", "bert_folder", "to_hf_state_dict", "hf_config", "load_original"]

# Known original checkpoint -> config pairs (the names the segment-anything packs download).
KNOWN_PAIRS = {"groundingdino_swint_ogc.pth": "GroundingDINO_SwinT_OGC.cfg.py",
               "groundingdino_swinb_cogcoor.pth": "GroundingDINO_SwinB.cfg.py"}
# The original repository's Swin table: (embed_dim, depths, num_heads, window_size).
SWIN = {"swin_T_224_1k": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
        "swin_B_224_22k": (128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
        "swin_B_384_22k": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
        "swin_L_224_22k": (192, (2, 2, 18, 2), (6, 12, 24, 48), 7),
        "swin_L_384_22k": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12)}
# Settings transformers' GroundingDINO has fixed; a cfg with other values is a model it cannot hold.
FIXED = dict(modelname="groundingdino", position_embedding="sine", two_stage_type="standard", query_dim=4,
             num_patterns=0, pre_norm=False, use_text_enhancer=True, use_fusion_layer=True,
             use_text_cross_attention=True, sub_sentence_present=True, dec_pred_bbox_embed_share=True,
             two_stage_bbox_embed_share=False, two_stage_class_embed_share=False, embed_init_tgt=True)
NEEDED = ("backbone", "hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward", "num_queries",
          "num_feature_levels", "enc_n_points", "dec_n_points", "max_text_len", "return_interm_indices",
          "transformer_activation", "pe_temperatureH", "pe_temperatureW", "text_encoder_type")
BERT_HINT = ("put bert-base-uncased's config.json and vocab.txt (or tokenizer.json) there; its weights are "
             "not needed, the GroundingDINO checkpoint holds them")

SWIN_BLOCK = r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\."
HF_SWIN = "model.backbone.conv_encoder.model."
ENC, DEC = r"transformer\.encoder\.", r"transformer\.decoder\.layers\.(\d+)\."
# (original pattern, Hugging Face name); the first pattern that matches the whole key wins.
RENAMES = [
    (r"backbone\.0\.patch_embed\.proj\.(weight|bias)", HF_SWIN + r"embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.0\.patch_embed\.norm\.(weight|bias)", HF_SWIN + r"embeddings.norm.\1"),
    (SWIN_BLOCK + r"norm1\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (SWIN_BLOCK + r"norm2\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (SWIN_BLOCK + r"attn\.relative_position_bias_table",
     HF_SWIN + r"encoder.layers.\1.blocks.\2.attention.self.relative_position_bias_table"),
    (SWIN_BLOCK + r"attn\.proj\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.attention.output.dense.\3"),
    (SWIN_BLOCK + r"mlp\.fc1\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.intermediate.dense.\3"),
    (SWIN_BLOCK + r"mlp\.fc2\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.output.dense.\3"),
    (r"backbone\.0\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
     HF_SWIN + r"encoder.layers.\1.downsample.\2.\3"),
    (r"transformer\.level_embed", "model.level_embed"),
    (r"transformer\.tgt_embed\.weight", "model.query_position_embeddings.weight"),
    (r"transformer\.enc_output(_norm)?\.(weight|bias)", r"model.enc_output\1.\2"),
    (r"transformer\.enc_out_bbox_embed\.layers\.(\d+)\.(weight|bias)", r"model.encoder_output_bbox_embed.layers.\1.\2"),
    (ENC + r"layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
     r"model.encoder.layers.\1.deformable_layer.self_attn.\2.\3"),
    (ENC + r"layers\.(\d+)\.norm1\.(weight|bias)", r"model.encoder.layers.\1.deformable_layer.self_attn_layer_norm.\2"),
    (ENC + r"layers\.(\d+)\.norm2\.(weight|bias)", r"model.encoder.layers.\1.deformable_layer.final_layer_norm.\2"),
    (ENC + r"layers\.(\d+)\.linear(1|2)\.(weight|bias)", r"model.encoder.layers.\1.deformable_layer.fc\2.\3"),
    (ENC + r"text_layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.out_proj.\2"),
    (ENC + r"text_layers\.(\d+)\.linear(1|2)\.(weight|bias)", r"model.encoder.layers.\1.text_enhancer_layer.fc\2.\3"),
    (ENC + r"text_layers\.(\d+)\.norm1\.(weight|bias)", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_before.\2"),
    (ENC + r"text_layers\.(\d+)\.norm2\.(weight|bias)", r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_after.\2"),
    (ENC + r"fusion_layers\.(\d+)\.gamma_v", r"model.encoder.layers.\1.fusion_layer.vision_param"),
    (ENC + r"fusion_layers\.(\d+)\.gamma_l", r"model.encoder.layers.\1.fusion_layer.text_param"),
    (ENC + r"fusion_layers\.(\d+)\.layer_norm_v\.(weight|bias)", r"model.encoder.layers.\1.fusion_layer.layer_norm_vision.\2"),
    (ENC + r"fusion_layers\.(\d+)\.layer_norm_l\.(weight|bias)", r"model.encoder.layers.\1.fusion_layer.layer_norm_text.\2"),
    (ENC + r"fusion_layers\.(\d+)\.attn\.(values_|out_)?v_proj\.(weight|bias)",
     r"model.encoder.layers.\1.fusion_layer.attn.\2vision_proj.\3"),
    (ENC + r"fusion_layers\.(\d+)\.attn\.(values_|out_)?l_proj\.(weight|bias)",
     r"model.encoder.layers.\1.fusion_layer.attn.\2text_proj.\3"),
    (DEC + r"cross_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)",
     r"model.decoder.layers.\1.encoder_attn.\2.\3"),
    (DEC + r"norm1\.(weight|bias)", r"model.decoder.layers.\1.encoder_attn_layer_norm.\2"),
    (DEC + r"ca_text\.out_proj\.(weight|bias)", r"model.decoder.layers.\1.encoder_attn_text.out_proj.\2"),
    (DEC + r"catext_norm\.(weight|bias)", r"model.decoder.layers.\1.encoder_attn_text_layer_norm.\2"),
    (DEC + r"self_attn\.out_proj\.(weight|bias)", r"model.decoder.layers.\1.self_attn.out_proj.\2"),
    (DEC + r"norm2\.(weight|bias)", r"model.decoder.layers.\1.self_attn_layer_norm.\2"),
    (DEC + r"linear(1|2)\.(weight|bias)", r"model.decoder.layers.\1.fc\2.\3"),
    (DEC + r"norm3\.(weight|bias)", r"model.decoder.layers.\1.final_layer_norm.\2"),
    (r"transformer\.decoder\.norm\.(weight|bias)", r"model.decoder.layer_norm.\1"),
    (r"transformer\.decoder\.ref_point_head\.layers\.(\d+)\.(weight|bias)", r"model.decoder.reference_points_head.layers.\1.\2"),
    (r"bbox_embed\.0\.layers\.(\d+)\.(weight|bias)", r"bbox_embed.0.layers.\1.\2"),
    (r"input_proj\.(\d+)\.(0|1)\.(weight|bias)", r"model.input_proj_vision.\1.\2.\3"),
    (r"feat_map\.(weight|bias)", r"model.text_projection.\1"),
    (r"bert\.((embeddings|encoder)\..+)", r"model.text_backbone.\1"),
]
# Fused [query; key; value] matrices: (original pattern, Hugging Face name with {} for query/key/value).
SPLITS = [
    (SWIN_BLOCK + r"attn\.qkv\.(weight|bias)", HF_SWIN + r"encoder.layers.\1.blocks.\2.attention.self.{}.\3"),
    (ENC + r"text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", r"model.encoder.layers.\1.text_enhancer_layer.self_attn.{}.\2"),
    (DEC + r"ca_text\.in_proj_(weight|bias)", r"model.decoder.layers.\1.encoder_attn_text.{}.\2"),
    (DEC + r"self_attn\.in_proj_(weight|bias)", r"model.decoder.layers.\1.self_attn.{}.\2"),
]
# Buffers and parameters transformers' model has no place for: Swin's index buffers, BERT's pooler
# (unused by GroundingDINO) and position ids; the shared box heads' copies are checked, then dropped.
UNUSED = [r".+\.relative_position_index", r"bert\.pooler\..+", r"bert\.embeddings\.position_ids"]
OUT_NORM = r"backbone\.0\.norm(\d+)\.(weight|bias)"
SHARED_BOX = r"(?:transformer\.decoder\.)?bbox_embed\.(\d+)\.(layers\.\d+\.(?:weight|bias))"


def read_cfg(path: str | os.PathLike) -> dict:
    """The ``name = literal`` assignments of an original ``.cfg.py``, read without running it."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        raise ValueError(f"{path.name} is not a GroundingDINO .cfg.py (line {error.lineno}: {error.msg})") from None
    cfg = {}
    for node in tree.body:
        try:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                raise ValueError
            cfg[node.targets[0].id] = ast.literal_eval(node.value)
        except (ValueError, TypeError):
            raise ValueError(f"{path.name} line {node.lineno}: only `name = literal` lines are read from a GroundingDINO "
                             f".cfg.py, and this one holds code ({ast.unparse(node)[:60]!r}); it is not run. Use the "
                             "original config file.") from None
    return cfg


def paired_cfg(checkpoint: str | os.PathLike) -> Path:
    """The ``.cfg.py`` beside an original checkpoint: ``<stem>.cfg.py``, or its released name."""
    checkpoint = Path(checkpoint)
    names = [checkpoint.stem + ".cfg.py"] + [KNOWN_PAIRS[n] for n in KNOWN_PAIRS if n == checkpoint.name.lower()]
    beside = {p.name.lower(): p for p in checkpoint.parent.iterdir() if p.is_file()}
    for name in names:
        if name.lower() in beside:
            return beside[name.lower()]
    raise FileNotFoundError(f"{checkpoint.name} has no config beside it in {checkpoint.parent}: put "
                            f"{' or '.join(names)} (from the same GroundingDINO release) there.")


def bert_folder(root: str | os.PathLike) -> Path:
    """The folder under ``root`` (itself or a sub-folder) holding BERT's config.json and tokenizer files."""
    root = Path(root)
    for config in sorted(root.rglob("config.json")) if root.is_dir() else []:
        if any((config.parent / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
            return config.parent
    raise FileNotFoundError(f"an original GroundingDINO checkpoint needs the BERT tokenizer and config in {root}: "
                            f"{BERT_HINT}.")


def _swin_shape(state: dict[str, torch.Tensor]) -> tuple[int, tuple[int, ...], tuple[int, ...], int, int, float]:
    """``(embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio)`` of the checkpoint's Swin."""
    blocks: dict[int, int] = {}
    for key in state:
        if m := re.fullmatch(SWIN_BLOCK + r"attn\.relative_position_bias_table", key):
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    proj = state["backbone.0.patch_embed.proj.weight"]
    table = state["backbone.0.layers.0.blocks.0.attn.relative_position_bias_table"]
    heads = tuple(state[f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in sorted(blocks))
    window = (round(table.shape[0] ** 0.5) + 1) // 2
    mlp_ratio = state["backbone.0.layers.0.blocks.0.mlp.fc1.weight"].shape[0] / proj.shape[0]
    return proj.shape[0], tuple(blocks[i] for i in sorted(blocks)), heads, window, proj.shape[-1], mlp_ratio


def hf_config(cfg: dict, state: dict[str, torch.Tensor], text_config, name: str = "the .cfg.py"):
    """transformers' ``GroundingDinoConfig`` for an original cfg, its checkpoint and a ``BertConfig``."""
    from transformers import GroundingDinoConfig, SwinConfig

    missing = [key for key in NEEDED if key not in cfg]
    if missing:
        raise ValueError(f"{name} lacks {', '.join(missing)}: use the original GroundingDINO config file.")
    other = {key: cfg[key] for key, value in FIXED.items() if key in cfg and cfg[key] != value}
    if cfg["pe_temperatureH"] != cfg["pe_temperatureW"]:
        other.update(pe_temperatureH=cfg["pe_temperatureH"], pe_temperatureW=cfg["pe_temperatureW"])
    if other:
        raise ValueError(f"{name} sets {other}: transformers' GroundingDINO only holds the released architecture "
                         f"({', '.join(f'{k}={v!r}' for k, v in FIXED.items() if k in other)}).")
    if os.path.basename(str(cfg["text_encoder_type"])) != "bert-base-uncased":
        raise ValueError(f"{name} names text encoder {cfg['text_encoder_type']!r}; only bert-base-uncased is read.")
    backbone = str(cfg["backbone"])
    if not backbone.startswith("swin_"):
        raise ValueError(f"{name} names backbone {backbone!r}; only the Swin GroundingDINO checkpoints are read.")
    try:
        embed_dim, depths, heads, window, patch, mlp_ratio = _swin_shape(state)
    except KeyError as key:
        raise ValueError(f"the checkpoint for {name} is not an original GroundingDINO Swin checkpoint (no {key})") from None
    if backbone in SWIN and SWIN[backbone] != (embed_dim, depths, heads, window):
        raise ValueError(f"{name} says {backbone} {SWIN[backbone]} but the checkpoint's Swin is "
                         f"{(embed_dim, depths, heads, window)} (embed_dim, depths, heads, window): the .cfg.py "
                         "belongs to another checkpoint (SwinT: GroundingDINO_SwinT_OGC.cfg.py, SwinB: GroundingDINO_SwinB.cfg.py).")
    words = state.get("bert.embeddings.word_embeddings.weight")
    bert_layers = len({k.split(".")[3] for k in state if k.startswith("bert.encoder.layer.")})
    if words is None or (tuple(words.shape), bert_layers) != ((text_config.vocab_size, text_config.hidden_size),
                                                             text_config.num_hidden_layers):
        raise ValueError(f"the BERT config (vocab {text_config.vocab_size}, width {text_config.hidden_size}, "
                         f"{text_config.num_hidden_layers} layers) does not fit the checkpoint's BERT "
                         f"({None if words is None else tuple(words.shape)}, {bert_layers} layers): use bert-base-uncased's config.json.")
    image_size = int(m.group(1)) if (m := re.search(r"_(\d+)_", backbone)) else 224
    swin = SwinConfig(embed_dim=embed_dim, depths=list(depths), num_heads=list(heads), window_size=window,
                      patch_size=patch, mlp_ratio=mlp_ratio, image_size=image_size,
                      out_indices=[i + 1 for i in cfg["return_interm_indices"]])
    return GroundingDinoConfig(
        backbone_config=swin, text_config=text_config.to_dict(), d_model=cfg["hidden_dim"],
        encoder_layers=cfg["enc_layers"], decoder_layers=cfg["dec_layers"], encoder_ffn_dim=cfg["dim_feedforward"],
        decoder_ffn_dim=cfg["dim_feedforward"], encoder_attention_heads=cfg["nheads"],
        decoder_attention_heads=cfg["nheads"], num_queries=cfg["num_queries"],
        num_feature_levels=cfg["num_feature_levels"], encoder_n_points=cfg["enc_n_points"],
        decoder_n_points=cfg["dec_n_points"], max_text_len=cfg["max_text_len"],
        activation_function=cfg["transformer_activation"], positional_embedding_temperature=cfg["pe_temperatureH"],
        two_stage=True, two_stage_bbox_embed_share=False, decoder_bbox_embed_share=True, embedding_init_target=True,
        query_dim=4)


def _hf_weights(key: str, value: torch.Tensor, state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """The Hugging Face ``(name, tensor)`` pairs for one original weight: none if unused, three for a fused q/k/v."""
    if any(re.fullmatch(pattern, key) for pattern in UNUSED):
        return []
    for pattern, target in SPLITS:
        if m := re.fullmatch(pattern, key):
            parts = zip(("query", "key", "value"), value.chunk(3, dim=0))
            return [(m.expand(target.replace("{}", part)), chunk.contiguous()) for part, chunk in parts]
    if m := re.fullmatch(OUT_NORM, key):  # Swin's norm{i} after stage i is transformers' stage{i+1}
        return [(f"{HF_SWIN}hidden_states_norms.stage{int(m.group(1)) + 1}.{m.group(2)}", value)]
    for pattern, target in RENAMES:
        if m := re.fullmatch(pattern, key):
            return [(m.expand(target), value)]
    if m := re.fullmatch(SHARED_BOX, key):
        if torch.equal(value, state.get(f"bbox_embed.0.{m.group(2)}", value.new_empty(0))):
            return []
        raise ValueError(f"{key} differs from bbox_embed.0: a checkpoint with unshared box heads "
                         "(dec_pred_bbox_embed_share False) is not a released GroundingDINO.")
    raise ValueError(f"unexpected weight {key!r}: not an original GroundingDINO checkpoint "
                     "(or a variant transformers' GroundingDINO cannot hold).")


def to_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original GroundingDINO state dict in the Hugging Face checkpoint layout; every key is used or refused."""
    return dict(pair for key, value in state.items() for pair in _hf_weights(key, value, state))


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    state = load_tensors(path, "Use the released GroundingDINO .pth.")
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} is not a GroundingDINO checkpoint (no state dict under 'model').")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_original(checkpoint: str | os.PathLike, bert: str | os.PathLike, device: torch.device | str = "cpu"):
    """``(model, processor)``: an original GroundingDINO ``.pth`` with its ``.cfg.py``, converted to transformers."""
    from transformers import (AutoTokenizer, BertConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor,
                              GroundingDinoProcessor)

    checkpoint = Path(checkpoint)
    cfg_path = paired_cfg(checkpoint)
    cfg = read_cfg(cfg_path)
    text_folder = bert_folder(bert)
    text_config = BertConfig.from_pretrained(text_folder, local_files_only=True)
    if text_config.model_type != "bert":
        raise ValueError(f"{text_folder} holds a {text_config.model_type!r} config, not BERT: {BERT_HINT}.")
    state = _read_checkpoint(checkpoint)
    config = hf_config(cfg, state, text_config, cfg_path.name)
    model, info = GroundingDinoForObjectDetection.from_pretrained(
        None, config=config, state_dict=to_hf_state_dict(state), output_loading_info=True)
    problems = {kind: sorted(keys)[:3] for kind, keys in info.items() if kind != "error_msgs" and keys}
    if problems or info.get("error_msgs"):
        raise ValueError(f"{checkpoint.name} with {cfg_path.name} does not fill transformers' GroundingDINO: "
                         f"{problems or info['error_msgs']}")
    tokenizer = AutoTokenizer.from_pretrained(text_folder, local_files_only=True)
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer)
    return model.to(device).eval(), processor
