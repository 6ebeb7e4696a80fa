"""Tiny seeded models saved the way users have the real ones, for tests and the demo.

DINO (ViT or DINOv2) and CLIP as Hugging Face folders (like dino-vits16 / clip-vit-base-patch32; the CLIP
tokenizer files are the real CLIP-L vocabulary that ComfyUI ships in comfy/sd1_tokenizer),
GroundingDINO as a Hugging Face folder with a tiny BERT vocabulary, and SAM as an original
``.pth`` checkpoint. Same classes and layouts as the real models, random weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

SMALL = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)


def save_tiny_dino(folder: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    ViTModel(ViTConfig(image_size=32, patch_size=8, **SMALL), add_pooling_layer=False).save_pretrained(folder)
    return folder


def save_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    """A DINOv2 (like facebook/dinov2-small) as a Hugging Face folder: no pooling layer, layer-scaled blocks."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, mlp_ratio=2, **SMALL)).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, **SMALL),
        vision_config=dict(image_size=32, patch_size=8, **SMALL),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


GROUNDING_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "person", "face", "man", "woman", "cat"]


def save_tiny_grounding_dino(folder: Path, seed: int = 0, num_feature_levels: int = 3,
                             depths: tuple[int, ...] = (1, 1, 1, 1), num_heads: tuple[int, ...] = (1, 1, 1, 1)) -> Path:
    """A transformers GroundingDINO (Swin + BERT, 2 decoder layers) with its processor, in ``folder``."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    backbone = SwinConfig(embed_dim=16, depths=list(depths), num_heads=list(num_heads), window_size=4, image_size=64,
                          out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(GROUNDING_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10,
        num_feature_levels=num_feature_levels, encoder_n_points=2, decoder_n_points=2, max_text_len=32)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(GROUNDING_VOCAB) + "\n")
    tokenizer = BertTokenizer(str(vocab), model_max_length=32)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def save_tiny_sam(path: Path, seed: int = 0) -> Path:
    """An original-layout SAM checkpoint (``torch.save`` of the state dict) with a 2-block, 32-wide encoder."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_build_sam(32, 2, 2, [1]).state_dict(), path)
    return path


def save_tiny_arcface(path: Path, seed: int = 0, input_size: int = 112) -> Path:
    """An ONNX face-recognition model shaped like insightface's (``[N, 3, 112, 112]`` -> ``[N, 16]``)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, 8), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * (input_size // 8) ** 2, 16)).eval()
    return export_onnx(net, (1, 3, input_size, input_size), path)


def export_onnx(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """``module`` as an ONNX file with a dynamic batch axis (the TorchScript exporter: no onnxscript needed)."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.zeros(input_shape),), str(path), dynamo=False, input_names=["input.1"],
                          output_names=["embedding"], dynamic_axes={"input.1": {0: "batch"}})
    return path
