"""A tiny original-layout GroundingDINO checkpoint (``.pth`` + ``.cfg.py`` + ``bert-base-uncased/``), for tests.

The ``.pth`` is written module by module from the original repository's model definition
(IDEA-Research/GroundingDINO: ``groundingdino.py``, ``transformer.py``, ``fuse_modules.py``, Swin,
``BertModelWarper``), each tensor's shape checked against that definition, and filled from a tiny seeded
transformers model: the reverse route, written apart from ``vcd_core.grounding_dino_original``'s rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny_encoders import GROUNDING_VOCAB, save_tiny_grounding_dino

SHAPE = dict(num_feature_levels=4, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2))  # 4 levels: one extra 3x3 conv level
SWIN = "model.backbone.conv_encoder.model."
QKV = ("query", "key", "value")


def tiny_cfg(config) -> dict:
    """The released SwinT OGC ``.cfg.py`` settings with the tiny model's sizes."""
    return dict(
        batch_size=1, modelname="groundingdino", backbone="swin_tiny", position_embedding="sine",
        pe_temperatureH=20, pe_temperatureW=20, return_interm_indices=[1, 2, 3], backbone_freeze_keywords=None,
        enc_layers=config.encoder_layers, dec_layers=config.decoder_layers, pre_norm=False,
        dim_feedforward=config.encoder_ffn_dim, hidden_dim=config.d_model, dropout=0.0,
        nheads=config.encoder_attention_heads, num_queries=config.num_queries, query_dim=4, num_patterns=0,
        num_feature_levels=config.num_feature_levels, enc_n_points=config.encoder_n_points,
        dec_n_points=config.decoder_n_points, two_stage_type="standard", two_stage_bbox_embed_share=False,
        two_stage_class_embed_share=False, transformer_activation="relu", dec_pred_bbox_embed_share=True,
        dn_box_noise_scale=1.0, dn_label_noise_ratio=0.5, dn_label_coef=1.0, dn_bbox_coef=1.0, embed_init_tgt=True,
        dn_labelbook_size=2000, max_text_len=config.max_text_len, text_encoder_type="bert-base-uncased", use_text_enhancer=True,
        use_fusion_layer=True, use_checkpoint=True, use_transformer_ckpt=True, use_text_cross_attention=True,
        text_dropout=0.0, fusion_dropout=0.0, fusion_droppath=0.1, sub_sentence_present=True)


class _Writer:
    """Original keys filled from Hugging Face tensors; every tensor's shape is the original module's."""

    def __init__(self, hf: dict[str, torch.Tensor]):
        self.hf, self.out = dict(hf), {}

    def put(self, key: str, shape: tuple[int, ...], value: torch.Tensor) -> None:
        assert key not in self.out and tuple(value.shape) == shape, (key, tuple(value.shape), shape)
        self.out[key] = value.clone()

    def take(self, key: str) -> torch.Tensor:
        return self.hf.pop(key)

    def linear(self, key: str, hf_key: str, n_out: int, n_in: int, bias: bool = True) -> None:
        self.put(f"{key}.weight", (n_out, n_in), self.take(f"{hf_key}.weight"))
        if bias:
            self.put(f"{key}.bias", (n_out,), self.take(f"{hf_key}.bias"))

    def fused(self, key: str, hf_prefix: str, n: int) -> None:
        """nn.MultiheadAttention's / Swin's one [3n, n] matrix: query, key, value stacked in that order."""
        self.put(f"{key}_weight" if key.endswith("in_proj") else f"{key}.weight", (3 * n, n),
                 torch.cat([self.take(f"{hf_prefix}.{part}.weight") for part in QKV]))
        self.put(f"{key}_bias" if key.endswith("in_proj") else f"{key}.bias", (3 * n,),
                 torch.cat([self.take(f"{hf_prefix}.{part}.bias") for part in QKV]))


def _norm(w: _Writer, key: str, hf_key: str, n: int) -> None:
    w.put(f"{key}.weight", (n,), w.take(f"{hf_key}.weight"))
    w.put(f"{key}.bias", (n,), w.take(f"{hf_key}.bias"))


def _mlp(w: _Writer, key: str, hf_key: str, sizes: list[int]) -> None:
    """groundingdino.models.GroundingDINO.utils.MLP: ``layers.{i}`` Linear layers."""
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w.linear(f"{key}.layers.{i}", f"{hf_key}.layers.{i}", n_out, n_in)


def _relative_position_index(window: int) -> torch.Tensor:
    """Swin's ``relative_position_index`` buffer, as WindowAttention computes it."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]


def original_layout(hf: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """The original GroundingDINO state dict holding a Hugging Face checkpoint's (hub layout) tensors."""
    w = _Writer(hf)
    swin, text, d, ff = config.backbone_config, config.text_config, config.d_model, config.encoder_ffn_dim
    c, window = swin.embed_dim, swin.window_size
    # backbone.0: SwinTransformer (PatchEmbed, BasicLayer blocks + PatchMerging, norm{i} per output)
    w.put("backbone.0.patch_embed.proj.weight", (c, 3, 4, 4), w.take(SWIN + "embeddings.patch_embeddings.projection.weight"))
    w.put("backbone.0.patch_embed.proj.bias", (c,), w.take(SWIN + "embeddings.patch_embeddings.projection.bias"))
    _norm(w, "backbone.0.patch_embed.norm", SWIN + "embeddings.norm", c)
    for i, (depth, heads) in enumerate(zip(swin.depths, swin.num_heads)):
        dim = c * 2 ** i
        for j in range(depth):
            key, hf_key = f"backbone.0.layers.{i}.blocks.{j}", f"{SWIN}encoder.layers.{i}.blocks.{j}"
            _norm(w, f"{key}.norm1", f"{hf_key}.layernorm_before", dim)
            w.put(f"{key}.attn.relative_position_bias_table", ((2 * window - 1) ** 2, heads),
                  w.take(f"{hf_key}.attention.self.relative_position_bias_table"))
            w.put(f"{key}.attn.relative_position_index", (window ** 2, window ** 2), _relative_position_index(window))
            w.fused(f"{key}.attn.qkv", f"{hf_key}.attention.self", dim)
            w.linear(f"{key}.attn.proj", f"{hf_key}.attention.output.dense", dim, dim)
            _norm(w, f"{key}.norm2", f"{hf_key}.layernorm_after", dim)
            w.linear(f"{key}.mlp.fc1", f"{hf_key}.intermediate.dense", 4 * dim, dim)
            w.linear(f"{key}.mlp.fc2", f"{hf_key}.output.dense", dim, 4 * dim)
        if i < len(swin.depths) - 1:
            hf_key = f"{SWIN}encoder.layers.{i}.downsample"
            w.put(f"backbone.0.layers.{i}.downsample.reduction.weight", (2 * dim, 4 * dim), w.take(f"{hf_key}.reduction.weight"))
            _norm(w, f"backbone.0.layers.{i}.downsample.norm", f"{hf_key}.norm", 4 * dim)
    outputs = [i - 1 for i in swin.out_indices]  # return_interm_indices [1, 2, 3]
    for i in outputs:
        _norm(w, f"backbone.0.norm{i}", f"{SWIN}hidden_states_norms.stage{i + 1}", c * 2 ** i)
    # bert: BertModelWarper keeps embeddings, encoder and pooler of BertModel
    h = text.hidden_size
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        weight = w.take(f"model.text_backbone.embeddings.{name}.weight")
        w.put(f"bert.embeddings.{name}.weight", tuple(weight.shape), weight)
    w.put("bert.embeddings.position_ids", (1, text.max_position_embeddings), torch.arange(text.max_position_embeddings)[None])
    _norm(w, "bert.embeddings.LayerNorm", "model.text_backbone.embeddings.LayerNorm", h)
    for n in range(text.num_hidden_layers):
        key = hf_key = f"encoder.layer.{n}"
        for part in QKV:
            w.linear(f"bert.{key}.attention.self.{part}", f"model.text_backbone.{hf_key}.attention.self.{part}", h, h)
        w.linear(f"bert.{key}.attention.output.dense", f"model.text_backbone.{hf_key}.attention.output.dense", h, h)
        _norm(w, f"bert.{key}.attention.output.LayerNorm", f"model.text_backbone.{hf_key}.attention.output.LayerNorm", h)
        w.linear(f"bert.{key}.intermediate.dense", f"model.text_backbone.{hf_key}.intermediate.dense", text.intermediate_size, h)
        w.linear(f"bert.{key}.output.dense", f"model.text_backbone.{hf_key}.output.dense", h, text.intermediate_size)
        _norm(w, f"bert.{key}.output.LayerNorm", f"model.text_backbone.{hf_key}.output.LayerNorm", h)
    pooler = torch.Generator().manual_seed(1)  # BertModel's pooler: in the checkpoint, unused by GroundingDINO
    w.put("bert.pooler.dense.weight", (h, h), torch.randn(h, h, generator=pooler))
    w.put("bert.pooler.dense.bias", (h,), torch.randn(h, generator=pooler))
    w.linear("feat_map", "model.text_projection", d, h)
    # input_proj: Conv2d 1x1 + GroupNorm(32) per backbone output, then 3x3 stride-2 convs for the extra levels
    channels = [c * 2 ** i for i in outputs]
    for level in range(config.num_feature_levels):
        size, n_in = (1, channels[level]) if level < len(channels) else (3, channels[-1] if level == len(channels) else d)
        conv = w.take(f"model.input_proj_vision.{level}.0.weight")
        w.put(f"input_proj.{level}.0.weight", (d, n_in, size, size), conv)
        w.put(f"input_proj.{level}.0.bias", (d,), w.take(f"model.input_proj_vision.{level}.0.bias"))
        _norm(w, f"input_proj.{level}.1", f"model.input_proj_vision.{level}.1", d)
    # transformer
    levels, heads = config.num_feature_levels, config.encoder_attention_heads
    w.put("transformer.level_embed", (levels, d), w.take("model.level_embed"))
    w.put("transformer.tgt_embed.weight", (config.num_queries, d), w.take("model.query_position_embeddings.weight"))
    w.linear("transformer.enc_output", "model.enc_output", d, d)
    _norm(w, "transformer.enc_output_norm", "model.enc_output_norm", d)
    _mlp(w, "transformer.enc_out_bbox_embed", "model.encoder_output_bbox_embed", [d, d, d, 4])

    def deformable(key: str, hf_key: str, points: int) -> None:  # MSDeformAttn
        w.linear(f"{key}.sampling_offsets", f"{hf_key}.sampling_offsets", heads * levels * points * 2, d)
        w.linear(f"{key}.attention_weights", f"{hf_key}.attention_weights", heads * levels * points, d)
        w.linear(f"{key}.value_proj", f"{hf_key}.value_proj", d, d)
        w.linear(f"{key}.output_proj", f"{hf_key}.output_proj", d, d)

    for n in range(config.encoder_layers):
        key, hf_key = f"transformer.encoder.layers.{n}", f"model.encoder.layers.{n}.deformable_layer"
        deformable(f"{key}.self_attn", f"{hf_key}.self_attn", config.encoder_n_points)
        _norm(w, f"{key}.norm1", f"{hf_key}.self_attn_layer_norm", d)
        w.linear(f"{key}.linear1", f"{hf_key}.fc1", ff, d)
        w.linear(f"{key}.linear2", f"{hf_key}.fc2", d, ff)
        _norm(w, f"{key}.norm2", f"{hf_key}.final_layer_norm", d)
        # text enhancer: transformer_vanilla.TransformerEncoderLayer(d, nhead // 2, dim_feedforward // 2)
        key, hf_key = f"transformer.encoder.text_layers.{n}", f"model.encoder.layers.{n}.text_enhancer_layer"
        w.fused(f"{key}.self_attn.in_proj", f"{hf_key}.self_attn", d)
        w.linear(f"{key}.self_attn.out_proj", f"{hf_key}.self_attn.out_proj", d, d)
        w.linear(f"{key}.linear1", f"{hf_key}.fc1", ff // 2, d)
        w.linear(f"{key}.linear2", f"{hf_key}.fc2", d, ff // 2)
        _norm(w, f"{key}.norm1", f"{hf_key}.layer_norm_before", d)
        _norm(w, f"{key}.norm2", f"{hf_key}.layer_norm_after", d)
        # fusion: fuse_modules.BiAttentionBlock(v_dim=d, l_dim=d, embed_dim=dim_feedforward // 2)
        key, hf_key = f"transformer.encoder.fusion_layers.{n}", f"model.encoder.layers.{n}.fusion_layer"
        w.put(f"{key}.gamma_v", (d,), w.take(f"{hf_key}.vision_param"))
        w.put(f"{key}.gamma_l", (d,), w.take(f"{hf_key}.text_param"))
        _norm(w, f"{key}.layer_norm_v", f"{hf_key}.layer_norm_vision", d)
        _norm(w, f"{key}.layer_norm_l", f"{hf_key}.layer_norm_text", d)
        for ours, theirs in (("v", "vision"), ("l", "text")):
            w.linear(f"{key}.attn.{ours}_proj", f"{hf_key}.attn.{theirs}_proj", ff // 2, d)
            w.linear(f"{key}.attn.values_{ours}_proj", f"{hf_key}.attn.values_{theirs}_proj", ff // 2, d)
            w.linear(f"{key}.attn.out_{ours}_proj", f"{hf_key}.attn.out_{theirs}_proj", d, ff // 2)
    for n in range(config.decoder_layers):
        key, hf_key = f"transformer.decoder.layers.{n}", f"model.decoder.layers.{n}"
        deformable(f"{key}.cross_attn", f"{hf_key}.encoder_attn", config.decoder_n_points)
        _norm(w, f"{key}.norm1", f"{hf_key}.encoder_attn_layer_norm", d)
        w.fused(f"{key}.ca_text.in_proj", f"{hf_key}.encoder_attn_text", d)
        w.linear(f"{key}.ca_text.out_proj", f"{hf_key}.encoder_attn_text.out_proj", d, d)
        _norm(w, f"{key}.catext_norm", f"{hf_key}.encoder_attn_text_layer_norm", d)
        w.fused(f"{key}.self_attn.in_proj", f"{hf_key}.self_attn", d)
        w.linear(f"{key}.self_attn.out_proj", f"{hf_key}.self_attn.out_proj", d, d)
        _norm(w, f"{key}.norm2", f"{hf_key}.self_attn_layer_norm", d)
        w.linear(f"{key}.linear1", f"{hf_key}.fc1", config.decoder_ffn_dim, d)
        w.linear(f"{key}.linear2", f"{hf_key}.fc2", d, config.decoder_ffn_dim)
        _norm(w, f"{key}.norm3", f"{hf_key}.final_layer_norm", d)
    _norm(w, "transformer.decoder.norm", "model.decoder.layer_norm", d)
    _mlp(w, "transformer.decoder.ref_point_head", "model.decoder.reference_points_head", [2 * d, d, d])
    # bbox_embed: one MLP shared by every decoder layer (dec_pred_bbox_embed_share), also transformer.decoder's
    _mlp(w, "bbox_embed.0", "bbox_embed.0", [d, d, d, 4])
    for n in range(config.decoder_layers):
        for prefix in ([] if n == 0 else ["bbox_embed"]) + ["transformer.decoder.bbox_embed"]:
            for layer in range(3):
                for part in ("weight", "bias"):
                    w.out[f"{prefix}.{n}.layers.{layer}.{part}"] = w.out[f"bbox_embed.0.layers.{layer}.{part}"]
    left = sorted(k for k in w.hf if not k.startswith(SWIN + "swin.layernorm"))  # transformers 5's unused Swin norm
    assert not left, f"Hugging Face tensors without an original key: {left[:5]}"
    return w.out


def write_cfg(path: Path, cfg: dict) -> Path:
    """A ``.cfg.py`` in the released files' form: one ``name = literal`` line per setting."""
    path.write_text("".join(f"{key} = {value!r}\n" for key, value in cfg.items()))
    return path


def save_tiny_original_grounding_dino(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """``(hf_folder, checkpoint, bert_folder)``: the same seeded weights as a Hugging Face folder and as original
    files (``grounding-dino/tiny_ogc.pth`` + ``tiny_ogc.cfg.py``, ``bert-base-uncased/``) under ``root``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, GroundingDinoImageProcessor, GroundingDinoProcessor

    hf_folder = save_tiny_grounding_dino(root / "hf" / "tiny-gdino-4", seed, **SHAPE)
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)  # the released 800 px processor, as load_original builds it
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer).save_pretrained(hf_folder)
    config = AutoConfig.from_pretrained(hf_folder)
    checkpoint = root / "grounding-dino" / "tiny_ogc.pth"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": original_layout(load_file(str(hf_folder / "model.safetensors")), config)}, checkpoint)
    write_cfg(checkpoint.with_name("tiny_ogc.cfg.py"), tiny_cfg(config))
    bert = root / "bert-base-uncased"
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "config.json").write_text(json.dumps(config.text_config.to_dict()))
    (bert / "vocab.txt").write_text("\n".join(GROUNDING_VOCAB) + "\n")
    return hf_folder, checkpoint, bert
