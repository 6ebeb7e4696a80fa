"""vcd_core.text_encoder on its own: the placeholder lookup, an SD1.5 CLIP state dict as a CLIPTextModel, prompt
tokens laid out as ComfyUI lays them, and the conditioning checked against the same model with the identity's rows
appended to its token table (a route that shares no code with ours)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from vcd_core.text_encoder import (MARKER, MAX_LENGTH, IdentityTextEncoder, PlaceholderEmbedding,
                                   clip_text_model_from_state_dict, text_transformer)

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

TOKENIZER = Path(__file__).parents[1] / "vcd_diffusers" / "configs" / "tokenizer"
VOCAB, WIDTH, HEADS = 49408, 32, 4
PROMPTS = ["a photo of {identity} woman", "{identity}", "close up of a man in a red coat", ""]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER), local_files_only=True, model_max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def clip():
    """A seeded 3-layer CLIP text model with the real vocabulary (what an SD1.5 checkpoint holds, 32 wide)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=3,
                            num_attention_heads=HEADS, max_position_embeddings=MAX_LENGTH, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(config).eval().requires_grad_(False)


def checkpoint_keys(model) -> dict[str, torch.Tensor]:
    """The model's weights as an SD1.5 checkpoint names them (``cond_stage_model.transformer.text_model.*``)."""
    nested = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in model.state_dict().items()}
    return {f"cond_stage_model.transformer.{k}": v.clone() for k, v in nested.items()}


@pytest.fixture()
def encoder(clip, tokenizer):
    return IdentityTextEncoder(copy.deepcopy(clip), tokenizer)


def appended(clip, vectors: torch.Tensor):
    """The reference: the same model whose token table has the identity's rows appended."""
    model = copy.deepcopy(clip)
    text = text_transformer(model)
    table = text.embeddings.token_embedding.weight
    text.embeddings.token_embedding = torch.nn.Embedding.from_pretrained(torch.cat([table, vectors]))
    return model


def test_placeholder_lookup_reads_vectors_past_the_vocabulary():
    table = torch.arange(12.0).reshape(4, 3)
    lookup = PlaceholderEmbedding(table)
    ids = torch.tensor([[0, 3, 4, 5, 1]])
    vectors = torch.tensor([[100.0, 101, 102], [200, 201, 202]])
    lookup.vectors = (vectors,)
    assert torch.equal(lookup(ids)[0], torch.stack([table[0], table[3], vectors[0], vectors[1], table[1]]))
    assert torch.equal(lookup(torch.tensor([[2, 0]])), table[[2, 0]][None])  # no placeholder in the prompt
    lookup.vectors = ()
    assert torch.equal(lookup(torch.tensor([[1, 2]])), table[[1, 2]][None])
    assert torch.equal(lookup(torch.tensor([[4, 1]])), table[[3, 1]][None])  # no vectors set: the last row, no error
    assert list(lookup.parameters()) == [] and "table" not in lookup.state_dict()  # frozen, never saved


def test_placeholder_gradient_reaches_only_its_own_rows():
    lookup = PlaceholderEmbedding(torch.randn(5, 2))
    vectors = torch.zeros(3, 2, requires_grad=True)
    lookup.vectors = (vectors,)
    lookup(torch.tensor([[0, 6, 1, 5]])).sum().backward()
    assert torch.equal(vectors.grad, torch.tensor([[1.0, 1], [1, 1], [0, 0]]))


def test_half_precision_vectors_are_read_in_the_table_dtype():
    lookup = PlaceholderEmbedding(torch.randn(4, 2, dtype=torch.float64))
    lookup.vectors = (torch.ones(1, 2, dtype=torch.float16),)
    out = lookup(torch.tensor([[4, 0]]))
    assert out.dtype == torch.float64 and torch.equal(out[0, 0], torch.ones(2, dtype=torch.float64))


def test_a_checkpoint_clip_loads_with_its_sizes_and_outputs(clip):
    loaded = clip_text_model_from_state_dict(checkpoint_keys(clip), num_heads=HEADS)
    config = loaded.config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.max_position_embeddings) == (VOCAB, WIDTH, 37, 3, MAX_LENGTH)
    assert (config.hidden_act, config.eos_token_id, config.bos_token_id) == ("quick_gelu", 49407, 49406)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    ids = torch.tensor([[49406, 320, 1125, 49407, 49407]])
    torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, clip(input_ids=ids).last_hidden_state,
                               rtol=0, atol=0)
    other_prefix = {k.replace("cond_stage_model.transformer.", "te."): v for k, v in checkpoint_keys(clip).items()}
    other_prefix["unrelated.text_model.weight"] = torch.zeros(1)  # another model's keys are not read
    torch.testing.assert_close(clip_text_model_from_state_dict(other_prefix, num_heads=HEADS)(input_ids=ids)
                               .pooler_output, clip(input_ids=ids).pooler_output, rtol=0, atol=0)


def test_sizes_come_from_the_weights_and_heads_default_to_clip_l():
    """Another vocabulary, width, depth and context than CLIP-L's: each read from the tensors; 12 heads unless told."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(1)
    other = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=24, intermediate_size=30, num_hidden_layers=1,
                                         num_attention_heads=12, max_position_embeddings=80)).eval()
    loaded = clip_text_model_from_state_dict(checkpoint_keys(other))
    config = loaded.config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
            config.max_position_embeddings, config.num_attention_heads) == (1000, 24, 30, 1, 80, 12)
    ids = torch.tensor([[5, 999, 7]])
    torch.testing.assert_close(loaded(input_ids=ids).last_hidden_state, other(input_ids=ids).last_hidden_state,
                               rtol=0, atol=1e-6)


def test_a_half_precision_checkpoint_loads_in_float32(clip):
    half = {k: v.half() for k, v in checkpoint_keys(clip).items()}
    loaded = clip_text_model_from_state_dict(half, num_heads=HEADS)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_what_is_not_a_clip_text_encoder_is_refused(clip):
    with pytest.raises(ValueError, match=r"^the CLIP weights have no 'text_model.' keys: this is not a CLIP text "
                                         r"encoder$"):
        clip_text_model_from_state_dict({"model.diffusion_model.x": torch.zeros(1)})
    keys = checkpoint_keys(clip)
    del keys["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    with pytest.raises(ValueError, match=r"^the CLIP weights lack 1 tensors, e.g. "
                                         r"(text_model\.)?final_layer_norm\.weight$"):
        clip_text_model_from_state_dict(keys, num_heads=HEADS)


def test_prompts_are_laid_out_as_comfyui_does(encoder, tokenizer):
    words = tokenizer("a photo of", add_special_tokens=False)["input_ids"]
    after = tokenizer(" woman", add_special_tokens=False)["input_ids"]
    ids = encoder.tokenize("a photo of {identity} woman", 4).tolist()
    assert ids[:len(words) + 6 + len(after)] == [49406, *words, *range(VOCAB, VOCAB + 4), *after, 49407]
    assert len(ids) == MAX_LENGTH and set(ids[len(words) + 6 + len(after):]) == {49407}  # padded with the end
    assert int(encoder.tokenize("a photo of a woman", 4).max()) == 49407  # no {identity}: no placeholder ids
    assert encoder.tokenize("", 4).tolist() == [49406] + [49407] * (MAX_LENGTH - 1)
    assert encoder.tokenize(MARKER, 2).tolist()[:4] == [49406, VOCAB, VOCAB + 1, 49407]
    assert encoder.token_ids("   ") == [] and encoder.width == WIDTH


def test_prompt_limits(encoder):
    longest = " ".join(["photo"] * (MAX_LENGTH - 2))
    assert encoder.tokenize(longest, 0)[-1] == 49407  # 75 words fit beside the start and end tokens
    with pytest.raises(ValueError, match=r"^the prompt 'photo .*' is longer than 75 tokens$"):
        encoder.tokenize(longest + " photo", 0)
    with pytest.raises(ValueError, match=r"is longer than 75 tokens"):
        encoder.tokenize(" ".join(["photo"] * (MAX_LENGTH - 5)) + " {identity}", 4)
    with pytest.raises(ValueError, match=r"^the prompt '\{identity\} and \{identity\}' holds \{identity\} more "
                                         r"than once$"):
        encoder.tokenize("{identity} and {identity}", 4)


def test_word_vector_is_the_mean_of_its_rows(encoder, tokenizer):
    table = encoder.lookup.table
    one = tokenizer("woman", add_special_tokens=False)["input_ids"]
    split = tokenizer("ktnpllucd", add_special_tokens=False)["input_ids"]
    assert len(one) == 1 and len(split) > 1
    assert torch.equal(encoder.word_vector("woman"), table[one[0]])
    torch.testing.assert_close(encoder.word_vector("ktnpllucd"), table[split].mean(0), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^the word ' ' has no tokens$"):
        encoder.word_vector(" ")


@pytest.mark.parametrize("layer_idx", [None, -2, 0])
def test_conditioning_equals_the_model_with_the_identity_appended(clip, tokenizer, layer_idx):
    encoder = IdentityTextEncoder(copy.deepcopy(clip), tokenizer, layer_idx=layer_idx)
    vectors = torch.randn(4, WIDTH, generator=torch.Generator().manual_seed(3))
    cond, pooled = encoder.encode(vectors, PROMPTS)
    reference = appended(clip, vectors)
    ids = torch.stack([encoder.tokenize(p, 4) for p in PROMPTS])
    out = reference(input_ids=ids, output_hidden_states=True)
    if layer_idx is None:
        expected = out.last_hidden_state
    else:
        expected = text_transformer(reference).final_layer_norm(out.hidden_states[layer_idx % 3 + 1])
    torch.testing.assert_close(cond, expected, rtol=1e-5, atol=1e-5)
    first_end = (ids == 49407).int().argmax(-1)
    torch.testing.assert_close(pooled, out.last_hidden_state[torch.arange(len(PROMPTS)), first_end], rtol=1e-5,
                               atol=1e-5)  # the last layer's end token, whatever the clip skip
    assert torch.equal(encoder(vectors, PROMPTS), cond)
    if layer_idx is not None:
        assert not torch.allclose(cond, out.last_hidden_state, atol=1e-3)  # the clip skip changed something


def test_conditioning_is_differentiable_in_the_vectors_and_forgets_them(encoder):
    vectors = torch.zeros(4, WIDTH, requires_grad=True)
    encoder(vectors, ["a photo of {identity} woman"]).square().sum().backward()
    assert vectors.grad is not None and bool((vectors.grad.abs().sum(1) > 0).all())
    assert encoder.lookup.vectors == ()
    with pytest.raises(ValueError, match="more than once"):
        encoder(vectors, ["{identity} {identity}"])
    assert encoder.lookup.vectors == ()


def test_the_vectors_are_cleared_when_the_model_fails(encoder):
    def broken(**_):
        assert encoder.lookup.vectors != ()
        raise RuntimeError("out of memory")

    encoder.model = broken
    with pytest.raises(RuntimeError, match="out of memory"):
        encoder(torch.zeros(4, WIDTH), ["{identity}"])
    assert encoder.lookup.vectors == ()


def test_to_moves_the_model(encoder):
    moved = []
    encoder.model.to = lambda device: moved.append(device)
    assert encoder.to("meta") is encoder and moved == ["meta"]
