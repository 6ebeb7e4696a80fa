"""The ID module on diffusers: ``vcd_core.identity``'s training loop (the one VCD Train Identity runs) with the
checkpoint's diffusers UNet and CLIP text model. Same views, same loss, same file metadata, so a file trained
here records the same request (settings, photos hash, base model hash) as the node's for the same inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vcd_core import embedding_io, identity

from .loading import Models
from .pipeline import check_frames, encode_frames

__all__ = ["TrainedIdentity", "base_model_hash", "train_identity"]

CHECKPOINTED_BLOCKS = ("ResnetBlock2D", "Transformer2DModel")  # diffusers' memory-heavy UNet blocks


@dataclass
class TrainedIdentity:
    """The trained ``embedding`` (vectors + metadata) and the photos left out (their masks were empty)."""

    embedding: embedding_io.Embedding
    left_out: list[int]


def base_model_hash(models: Models) -> str:
    """A short hash of the weights training sees: the UNet's input conv and the CLIP token table (what VCD Train
    Identity hashes for a MODEL and CLIP without LoRAs)."""
    return embedding_io.fingerprint(models.unet.conv_in.weight, models.text.lookup.table)


def train_identity(models: Models, photos: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] | None = None, *,
                   name: str, class_word: str = "man", tokens: int = 4,
                   config: identity.TrainConfig = identity.TrainConfig(), resolution: int = 512,
                   augment: bool = True, gradient_checkpointing: bool = True,
                   callback: Callable[[int, float], None] | None = None) -> TrainedIdentity:
    """Learn ``tokens`` identity vectors from ``photos`` (``[H, W, C]`` each, any size) and their subject
    ``masks`` (``[H, W]``, None: whole photos); ``name`` is the file's, for the prompt snippet it records.
    ``callback(step, loss)`` runs after every step. Mixed precision under autocast on CUDA; fp32 elsewhere."""
    embedding_io.check_name(name)
    if models.dtype != torch.float32:
        raise ValueError(f"training needs the models in float32 (got {models.dtype}); mixed precision comes from "
                         "autocast on CUDA. Load them with dtype=torch.float32.")
    images = [check_frames(photo[None], f"photo {i}")[0] for i, photo in enumerate(photos)]
    class_word = class_word.strip()
    kept, kept_masks, left_out = identity.usable_references(images, masks)
    request = identity.training_request(tokens, class_word, config, augment, resolution,
                                        identity.photos_hash(images, masks), base_model_hash(models))
    views = identity.make_views(kept, kept_masks, resolution, identity.VIEWS_PER_IMAGE, augment, config.seed)
    latents = encode_frames(models, views.pixels.movedim(1, -1)).float()
    latent_masks = identity.latent_masks(views.masks, latents.shape[-2:]).to(models.device)
    unet = models.unet.to(models.device)
    config = dataclasses.replace(config, autocast_dtype=identity.autocast_for(models.device))
    start = identity.init_vectors(models.text.word_vector, tokens)

    def denoise(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return unet(x_t, t, encoder_hidden_states=context).sample.float()

    blocks = [m for m in unet.modules() if type(m).__name__ in CHECKPOINTED_BLOCKS] if gradient_checkpointing else []
    with torch.enable_grad(), identity.gradient_checkpointing(blocks):
        result = identity.train_identity(models.text, denoise, latents, latent_masks, views.prompts(class_word), start,
                                         identity.sd_alphas_cumprod(), config, callback)
    metadata = identity.file_metadata(request, name, len(kept), result.losses)
    return TrainedIdentity(embedding_io.Embedding(result.vectors, metadata), left_out)
