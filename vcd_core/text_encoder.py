"""A differentiable CLIP text path for identity training: transformers' CLIPTextModel with N placeholder tokens.

ComfyUI's CLIP text model cannot be back-propagated through, so training runs the same
weights in ``transformers.CLIPTextModel``. The placeholder tokens get ids past the end of
the vocabulary; a small embedding module looks them up in the trainable ``vectors`` and every
other id in the frozen table. Prompts are tokenized the way ComfyUI does for SD1.5 (start
token, text, end token, padded with the end token to 77), so the conditioning matches core
``CLIPTextEncode`` given ``embedding:NAME`` in place of the placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["MARKER", "PlaceholderEmbedding", "IdentityTextEncoder", "clip_text_model_from_state_dict"]

MARKER = "{identity}"  # where the identity tokens go in a prompt template
MAX_LENGTH = 77


class PlaceholderEmbedding(nn.Module):
    """Token lookup in a frozen ``table``; ids ``>= len(table)`` read row ``id - len(table)`` of ``vectors``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table.detach(), persistent=False)
        # Set per call: ([N, D],) or (). A tuple, so that nn.Module never registers a Parameter put here.
        self.vectors: tuple[torch.Tensor, ...] = ()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        vocab = self.table.shape[0]
        frozen = self.table[input_ids.clamp(max=vocab - 1)]
        if not self.vectors or not bool((input_ids >= vocab).any()):
            return frozen
        vectors = self.vectors[0]
        extra = vectors.to(frozen.dtype)[(input_ids - vocab).clamp(min=0, max=vectors.shape[0] - 1)]
        return torch.where((input_ids >= vocab)[..., None], extra, frozen)


def clip_text_model_from_state_dict(state_dict: Mapping[str, torch.Tensor], num_heads: int = 12):
    """A ``transformers.CLIPTextModel`` holding an SD1.5 CLIP-L state dict (``text_model.`` keys; any prefix).

    Sizes are read from the weights; the head count is not in them (12 for CLIP-L).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    marker = "text_model."
    prefix = next((k[: k.index(marker)] for k in state_dict if marker in k), None)
    if prefix is None:
        raise ValueError("the CLIP weights have no 'text_model.' keys: this is not a CLIP text encoder")
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix + marker)}
    token_table = weights["text_model.embeddings.token_embedding.weight"]
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))}
    config = CLIPTextConfig(
        vocab_size=token_table.shape[0],
        hidden_size=token_table.shape[1],
        intermediate_size=weights["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(layers),
        num_attention_heads=num_heads,
        max_position_embeddings=weights["text_model.embeddings.position_embedding.weight"].shape[0],
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    model = CLIPTextModel(config)
    # transformers 4 nests the modules under ``text_model``; transformers 5 does not.
    nested = any(k.startswith(marker) for k in model.state_dict())
    weights = {(k if nested else k[len(marker):]): v for k, v in weights.items()}
    missing, _ = model.load_state_dict({k: v.detach().clone().float() for k, v in weights.items()}, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing:
        raise ValueError(f"the CLIP weights lack {len(missing)} tensors, e.g. {missing[0]}")
    return model.eval().requires_grad_(False)


def text_transformer(model: nn.Module) -> nn.Module:
    """The module holding embeddings / encoder / final_layer_norm (``model.text_model`` in transformers 4)."""
    return getattr(model, "text_model", model)


class IdentityTextEncoder:
    """Prompt templates with ``{identity}`` -> conditioning ``[B, 77, D]``, differentiable in the identity vectors.

    ``layer_idx`` mirrors ComfyUI's clip skip (``CLIPSetLastLayer``): ``None`` is the last
    layer, ``-2`` the one before; the final layer norm is applied either way, as ComfyUI does
    for SD1.5.
    """

    def __init__(self, model: nn.Module, tokenizer, layer_idx: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.layer_idx = layer_idx
        text = text_transformer(model)
        self.lookup = PlaceholderEmbedding(text.embeddings.token_embedding.weight)
        text.embeddings.token_embedding = self.lookup
        self.vocab = self.lookup.table.shape[0]
        self.start, self.end = tokenizer.bos_token_id, tokenizer.eos_token_id

    @property
    def width(self) -> int:
        return int(self.lookup.table.shape[1])

    def token_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []

    def word_vector(self, word: str) -> torch.Tensor:
        """The embedding of a word: its token row, or the mean of its rows when BPE splits it."""
        ids = self.token_ids(word)
        if not ids:
            raise ValueError(f"the word {word!r} has no tokens")
        return self.lookup.table[ids].float().mean(0)

    def tokenize(self, template: str, tokens: int) -> torch.Tensor:
        """Ids ``[77]`` of a prompt; an ``{identity}`` in it becomes ``tokens`` placeholder ids."""
        if template.count(MARKER) > 1:
            raise ValueError(f"the prompt {template!r} holds {MARKER} more than once")
        before, _, after = template.partition(MARKER)
        placeholders = range(self.vocab, self.vocab + tokens) if MARKER in template else ()
        ids = [self.start, *self.token_ids(before), *placeholders, *self.token_ids(after), self.end]
        if len(ids) > MAX_LENGTH:
            raise ValueError(f"the prompt {template!r} is longer than {MAX_LENGTH - 2} tokens")
        return torch.tensor(ids + [self.end] * (MAX_LENGTH - len(ids)))

    def __call__(self, vectors: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Conditioning ``[len(prompts), 77, D]`` with ``vectors`` ``[N, D]`` as the identity tokens."""
        return self.encode(vectors, prompts)[0]

    def encode(self, vectors: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning ``[B, 77, D]`` and the pooled output ``[B, D]``: the last layer's end-token state after the
        final layer norm, whatever the clip skip, unprojected (ComfyUI's ``pooled_output`` for SD1.5)."""
        device = self.lookup.table.device
        input_ids = torch.stack([self.tokenize(p, vectors.shape[0]) for p in prompts]).to(device)
        self.lookup.vectors = (vectors,)
        try:
            out = self.model(input_ids=input_ids, output_hidden_states=self.layer_idx is not None)
        finally:
            self.lookup.vectors = ()
        pooled = out.pooler_output  # at the first end token: the placeholders' ids lie past the vocabulary
        if self.layer_idx is None:
            return out.last_hidden_state, pooled
        # hidden_states[0] is the embedding output; ComfyUI's layer i (0-based) is hidden_states[i + 1].
        layers = len(out.hidden_states) - 1
        index = self.layer_idx % layers
        return text_transformer(self.model).final_layer_norm(out.hidden_states[index + 1]), pooled

    def to(self, device: torch.device | str) -> "IdentityTextEncoder":
        self.model.to(device)
        return self
