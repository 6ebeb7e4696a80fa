"""Tiny seeded DINO (ViT) and CLIP models saved as local Hugging Face folders, for evaluation tests.

Same classes and folder layout as dino-vits16 / clip-vit-base-patch32, random weights. The CLIP
tokenizer files are the real CLIP-L vocabulary that ComfyUI ships in comfy/sd1_tokenizer.
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
