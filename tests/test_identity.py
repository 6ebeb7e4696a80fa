"""ID module: the text path matches ComfyUI's CLIP, training moves only the new rows, the masked loss,
the round trip through core CLIPTextEncode, loading the authors' files, and bad inputs."""

import re
import shutil

import numpy as np
import pytest
import skimage.data
import torch

from vcd_core import embedding_io, identity
from vcd_core.text_encoder import MARKER

PROMPTS = ["a photo of a woman", "Portrait of an astronaut, smiling, 4k", "", "close up of a man in a red coat"]


@pytest.fixture(scope="module")
def photos():
    photo = torch.from_numpy(skimage.data.astronaut().copy()).float() / 255
    return torch.stack([photo, photo.flip(1), photo.roll(40, dims=0)])  # [3, 512, 512, 3]


@pytest.fixture()
def embeddings_dir(inproc, tmp_path, monkeypatch):
    """models/embeddings pointed at an empty temp folder for this test."""
    import folder_paths

    folder = tmp_path / "embeddings"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings",
                        ([str(folder)], folder_paths.supported_pt_extensions))
    return folder


def text_path(inproc, clip):
    with torch.inference_mode(False):
        return inproc.pack.nodes.comfy_models.text_encoder_from_clip(clip, torch.device("cpu"))


def train(inproc, clip, images, model=None, **overrides):
    options = dict(name="astro", class_word="woman", tokens=4, steps=3, learning_rate=1e-2, batch_size=2, seed=0,
                   augment=True, overwrite=False, resolution=64)
    options.update(overrides)
    model, vae = model or inproc.tiny.tiny_model(0), inproc.tiny.tiny_vae(0)
    with torch.inference_mode():
        return inproc.pack.nodes.identity.VCDTrainIdentity.execute(model, clip, vae, images, **options)


@pytest.mark.parametrize("clip_skip", [None, -2])
def test_text_path_matches_comfyui_clip(inproc, clip_skip):
    clip = inproc.tiny.tiny_clip(0).clone()
    if clip_skip is not None:
        clip.clip_layer(clip_skip)
    text = text_path(inproc, clip)
    ours = text(torch.zeros(0, 768), PROMPTS)
    for prompt, cond in zip(PROMPTS, ours):
        core = clip.encode_from_tokens(clip.tokenize(prompt))
        torch.testing.assert_close(cond[None], core, atol=1e-5, rtol=1e-5)
    other = text_path(inproc, inproc.tiny.tiny_clip(1))(torch.zeros(0, 768), PROMPTS[:1])
    assert not torch.allclose(other, ours[:1], atol=1e-3)  # the weights come from the CLIP, not a default


def test_train_round_trip_through_core_clip_text_encode(inproc, embeddings_dir, photos):
    out = train(inproc, inproc.tiny.tiny_clip(0), photos)
    snippet, curve, trained = out.result
    assert snippet == "embedding:astro woman" and curve.shape[0] == 1 and curve.shape[-1] == 3
    path = embeddings_dir / "vcd" / "astro.safetensors"
    on_disk = embedding_io.read_embedding(path)
    assert torch.equal(on_disk.vectors, trained.vectors) and on_disk.vectors.shape == (4, 768)
    assert on_disk.metadata["class_word"] == "woman" and on_disk.metadata["tokens"] == "4"
    assert len(on_disk.metadata["base_model_hash"]) == 16 and 10_000 < path.stat().st_size < 20_000

    clip = inproc.tiny.tiny_clip(0, (str(embeddings_dir),))
    core = clip.encode_from_tokens(clip.tokenize("a photo of embedding:astro woman"))
    ours = text_path(inproc, clip)(on_disk.vectors, [f"a photo of {MARKER} woman"])
    torch.testing.assert_close(ours, core, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # the identity output, wired straight into VCD Identity Text Encode
        [[direct, extras]] = inproc.pack.nodes.identity.VCDIdentityEncode.execute(
            clip, trained, f"a photo of {MARKER} woman").result[0]
    torch.testing.assert_close(direct, core, atol=1e-5, rtol=1e-5)
    [[core_cond, core_extras]] = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of embedding:astro woman"))
    assert set(extras) == set(core_extras) == {"pooled_output"}  # what core CLIPTextEncode gives
    torch.testing.assert_close(extras["pooled_output"], core_extras["pooled_output"], atol=1e-5, rtol=1e-5)
    assert extras["pooled_output"].shape == (1, 768)


def test_identity_encode_matches_core_under_clip_skip(inproc, embeddings_dir):
    """Clip skip changes the conditioning's layer, never the pooled output's (core pools the last layer)."""
    vectors = torch.randn(3, 768, generator=torch.Generator().manual_seed(4)) * 0.02
    embedding_io.write_embedding(embeddings_dir, "ann", embedding_io.Embedding(vectors))
    clip = inproc.tiny.tiny_clip(0, (str(embeddings_dir),)).clone()
    clip.clip_layer(-2)
    [[core, core_extras]] = clip.encode_from_tokens_scheduled(clip.tokenize("embedding:ann at the beach"))
    with torch.inference_mode():
        [[cond, extras]] = inproc.pack.nodes.identity.VCDIdentityEncode.execute(
            clip, embedding_io.Embedding(vectors), f"{MARKER} at the beach").result[0]
    torch.testing.assert_close(cond, core, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extras["pooled_output"], core_extras["pooled_output"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("text, message", [("a photo of a man", "where the person goes"),
                                           ("{identity} " + "word " * 80, "longer than 75 tokens")])
def test_identity_encode_names_bad_text(inproc, text, message):
    with pytest.raises(ValueError, match=f"text: .*{message}"), torch.inference_mode():
        inproc.pack.nodes.identity.VCDIdentityEncode.execute(
            inproc.tiny.tiny_clip(0), embedding_io.Embedding(torch.zeros(4, 768)), text)


def test_training_changes_only_the_new_rows(inproc, embeddings_dir, photos):
    clip, model = inproc.tiny.tiny_clip(0), inproc.tiny.tiny_model(0)
    unet_before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    clip_before = {k: v.clone() for k, v in clip.cond_stage_model.state_dict().items()}
    trained = train(inproc, clip, photos, steps=4, name="rows").result[2]
    for k, v in model.model.diffusion_model.state_dict().items():
        assert torch.equal(v, unet_before[k]), k
    for k, v in clip.cond_stage_model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    text = text_path(inproc, clip)
    start = identity.init_vectors(text.word_vector, 4)
    assert (trained.vectors - start).abs().amax() > 1e-4  # the new rows did move
    table = clip.cond_stage_model.clip_l.transformer.get_input_embeddings().weight
    assert torch.equal(text.lookup.table, table)


def test_rare_token_initialisation(inproc):
    text = text_path(inproc, inproc.tiny.tiny_clip(0))
    start = identity.init_vectors(text.word_vector, 5)
    table = text.lookup.table
    ids = {w: text.token_ids(w) for w in ("ktn", "pll", "ucd")}
    assert len(ids["pll"]) == 1 and len(ids["ktn"]) == 2  # BPE splits "ktn": its vector is the mean of both rows
    torch.testing.assert_close(start[0], table[ids["ktn"]].mean(0))
    assert torch.equal(start[1], table[ids["pll"][0]]) and torch.equal(start[2], start[3])
    assert torch.equal(start[4], start[0])  # cycled for more than four tokens


@pytest.fixture(scope="module")
def tiny_training(inproc, photos):
    """The real training inputs on the tiny model: denoiser, text path, cached latents, masks, prompts."""
    nodes = inproc.pack.nodes.comfy_models
    model, clip, vae = inproc.tiny.tiny_model(0), inproc.tiny.tiny_clip(0), inproc.tiny.tiny_vae(0)
    masks = torch.zeros(photos.shape[:3])
    masks[:, 40:300, 120:380] = 1  # a box around the astronaut's head and shoulders
    views = identity.make_views(list(photos.movedim(-1, 1)), list(masks), 64, 4, True, seed=0)
    with torch.inference_mode():
        latents = nodes.encode_views(vae, views.pixels, model)
    with nodes.denoiser(model) as (denoise, alphas):  # the tests run outside inference mode
        text = nodes.text_encoder_from_clip(clip, torch.device("cpu"))
        latents = latents.clone()
        lmasks = identity.latent_masks(views.masks.clone(), latents.shape[-2:])
        yield dict(denoise=denoise, alphas=alphas, text=text, latents=latents, masks=lmasks,
                   prompts=views.prompts("woman"), start=identity.init_vectors(text.word_vector, 4))


def fixed_loss(parts, vectors, draws=8):
    """The masked loss on a fixed set of views, timesteps and noise (no randomness between calls)."""
    g = torch.Generator().manual_seed(123)
    index = torch.arange(draws) % parts["latents"].shape[0]
    x0, mask = parts["latents"][index], parts["masks"][index]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(100, 900, (draws,), generator=g)
    a = parts["alphas"][t][:, None, None, None]
    with torch.no_grad():
        context = parts["text"](vectors, [parts["prompts"][i] for i in index.tolist()])
        return float(identity.masked_mse(parts["denoise"](a.sqrt() * x0 + (1 - a).sqrt() * noise, t, context), noise, mask))


def test_masked_loss_falls_on_the_tiny_model(tiny_training):
    p = tiny_training
    with torch.inference_mode(False):
        before = fixed_loss(p, p["start"])
        config = identity.TrainConfig(steps=40, learning_rate=5e-2, batch_size=4, seed=1)
        result = identity.train_identity(p["text"], p["denoise"], p["latents"], p["masks"], p["prompts"], p["start"],
                                         p["alphas"], config)
        after = fixed_loss(p, result.vectors)
    assert len(result.losses) == 40 and all(torch.isfinite(torch.tensor(result.losses)))
    assert after < before * 0.97, (before, after)


def test_background_gets_no_gradient(tiny_training):
    """Change the prediction outside the mask only: the loss and the vectors' gradient stay identical."""
    p = tiny_training
    x0, mask = p["latents"][:2], p["masks"][:2].round()
    assert 0 < mask.mean() < 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 700])
    bump = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)) * (1 - mask)

    def grad(extra):
        with torch.inference_mode(False):
            vectors = p["start"].clone().requires_grad_(True)
            context = p["text"](vectors, p["prompts"][:2])
            pred = p["denoise"](x0 + 0.5 * noise, t, context) + extra
            loss = identity.masked_mse(pred, noise, mask)
            loss.backward()
            return loss.detach(), vectors.grad

    (loss_a, grad_a), (loss_b, grad_b) = grad(0), grad(bump)
    assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b) and grad_a.abs().sum() > 0
    pred = torch.zeros(x0.shape, requires_grad=True)
    identity.masked_mse(pred, noise, mask).backward()
    assert torch.all(pred.grad[(mask == 0).expand_as(pred)] == 0) and pred.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradient(inproc, tiny_training):
    p = tiny_training
    blocks = inproc.pack.nodes.comfy_models.checkpointed_blocks(inproc.tiny.tiny_model(0))
    assert {type(b).__name__ for b in blocks} == {"ResBlock", "SpatialTransformer"}
    x0, mask = p["latents"][:2], p["masks"][:2]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))

    def grad():
        with torch.inference_mode(False):
            vectors = p["start"].clone().requires_grad_(True)
            pred = p["denoise"](x0 + noise, torch.tensor([200, 600]), p["text"](vectors, p["prompts"][:2]))
            identity.masked_mse(pred, noise, mask).backward()
            return vectors.grad

    plain = grad()
    with identity.gradient_checkpointing(blocks):
        assert all("forward" in b.__dict__ for b in blocks)
        checkpointed = grad()
    assert not any("forward" in b.__dict__ for b in blocks)  # the model is left as it was
    torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-8)
    assert plain.abs().sum() > 0


def test_augmented_views_carry_masks_and_prefixes(photos):
    masks = torch.zeros(photos.shape[:3])
    masks[:, 100:200, 100:200] = 1
    views = identity.make_views(list(photos.movedim(-1, 1)), list(masks), 64, 12, True, seed=0)
    assert views.pixels.shape == (36, 3, 64, 64) and views.masks.shape == (36, 1, 64, 64)
    prefixes = set(views.prefixes)
    assert "" in prefixes and prefixes & set(identity.ZOOM_OUT_PREFIXES) and prefixes & set(identity.ZOOM_IN_PREFIXES)
    for pixels, mask, prefix in zip(views.pixels, views.masks, views.prefixes):
        if prefix in identity.ZOOM_OUT_PREFIXES:  # shrunk onto mid grey: the corners are grey and unmasked
            assert torch.allclose(pixels[:, 0, 0], torch.full((3,), 0.5), atol=0.02) and mask[0, 0, 0] == 0
    plain = identity.make_views(list(photos.movedim(-1, 1)), [None] * 3, 64, 12, False, seed=0)
    assert plain.pixels.shape[0] == 3 and plain.prefixes == ["", "", ""] and bool((plain.masks == 1).all())
    assert views.prompts("man")[0].endswith(f"photo of a {MARKER} man")


def test_interrupt_mid_training_leaves_no_file(inproc, embeddings_dir, photos, monkeypatch):
    """Cancel pressed after the first training step: the node stops at the next step and writes nothing."""
    import comfy.model_management
    import comfy.utils

    steps_seen = []

    def hook(value, total, preview, node_id=None):
        steps_seen.append(value)
        comfy.model_management.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            train(inproc, inproc.tiny.tiny_clip(0), photos, steps=50, name="stopped")
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert steps_seen == [1]  # training ran one step, then stopped
    assert not [path for path in embeddings_dir.rglob("*") if not path.is_dir()]  # no file, not even a temp one


@pytest.mark.parametrize("case, overrides, message", [
    ("no images", dict(images=torch.zeros(0, 64, 64, 3)), "images"),
    ("mask count", dict(masks=torch.ones(2, 512, 512)), "one mask per image"),
    ("mask size", dict(masks=torch.ones(3, 64, 64)), "size"),
    ("dot-dot name", dict(name="../evil"), "not allowed"),
    ("path name", dict(name="sub/evil"), "not allowed"),
    ("newline name", dict(name="astro\n"), "not allowed"),
    ("steps 0", dict(steps=0), "steps"),
    ("all masks empty", dict(masks=torch.zeros(3, 512, 512)), "every mask is empty"),
])
def test_bad_training_inputs_write_nothing(inproc, embeddings_dir, photos, case, overrides, message):
    images = overrides.pop("images", photos)
    with pytest.raises(ValueError, match=message):
        train(inproc, inproc.tiny.tiny_clip(0), images, **overrides)
    assert not any(embeddings_dir.rglob("*")), case


def test_photos_with_empty_masks_are_left_out(inproc, embeddings_dir, photos):
    masks = torch.zeros(photos.shape[:3])
    masks[0, 40:300, 120:380] = 1
    masks[2, 40:300, 120:380] = 1
    saved = train(inproc, inproc.tiny.tiny_clip(0), photos, masks=masks, steps=1, name="two").result[2]
    assert saved.metadata["references"] == "2"


def test_grey_and_rgba_photos_train_like_rgb(inproc, embeddings_dir, photos):
    small = photos[:2, ::8, ::8].contiguous()  # 64 px
    rgb = train(inproc, inproc.tiny.tiny_clip(0), small, steps=1, name="rgb").result[2].vectors
    rgba = torch.cat([small, torch.rand(*small.shape[:-1], 1, generator=torch.Generator().manual_seed(0))], dim=-1)
    assert torch.equal(train(inproc, inproc.tiny.tiny_clip(0), rgba, steps=1, name="rgba").result[2].vectors, rgb)
    grey = small.mean(dim=-1, keepdim=True)
    assert torch.equal(train(inproc, inproc.tiny.tiny_clip(0), grey, steps=1, name="grey").result[2].vectors,
                       train(inproc, inproc.tiny.tiny_clip(0), grey.expand(-1, -1, -1, 3), steps=1, name="grey3").result[2].vectors)


def test_other_model_families_are_refused(inproc, embeddings_dir, photos):
    from types import SimpleNamespace

    import comfy.model_base

    with pytest.raises(ValueError, match="clip: .*SD1.5"):
        train(inproc, SimpleNamespace(cond_stage_model=SimpleNamespace(clip_g=None)), photos)
    model = inproc.tiny.tiny_model(0)
    model.model.model_type = comfy.model_base.ModelType.V_PREDICTION
    try:
        with pytest.raises(ValueError, match="model: .*epsilon"):
            train(inproc, inproc.tiny.tiny_clip(0), photos)
    finally:
        model.model.model_type = comfy.model_base.ModelType.EPS
    assert not any(embeddings_dir.rglob("*"))


def test_an_inpainting_checkpoint_is_refused_before_training(inproc, embeddings_dir, photos, monkeypatch):
    """An SD1.5 inpainting MODEL predicts epsilon too, but its UNet takes the mask and masked image as well
    (ComfyUI's ``concat_keys``): it would fail inside the UNet at step 1."""
    model = inproc.tiny.tiny_model(0)
    monkeypatch.setattr(model.model, "concat_keys", ("mask", "masked_image"), raising=False)
    with pytest.raises(ValueError, match=r"^model: this is an inpainting checkpoint \(its UNet also takes a mask "
                                         r"and a masked image\); train the identity on the regular SD1.5 checkpoint"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, model=model)
    assert not any(embeddings_dir.rglob("*"))


def test_model_family_is_checked_before_any_view_is_encoded(inproc, embeddings_dir, photos, monkeypatch):
    import comfy.model_base

    vae, model = inproc.tiny.tiny_vae(0), inproc.tiny.tiny_model(0)
    encoded = []
    real_encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: encoded.append(tuple(pixels.shape)) or real_encode(pixels))
    monkeypatch.setattr(model.model, "model_type", comfy.model_base.ModelType.V_PREDICTION)
    with pytest.raises(ValueError, match="model: .*epsilon"):
        train(inproc, inproc.tiny.tiny_clip(0), photos)
    assert encoded == []  # refused before the minutes of VAE work on real photos


def test_a_diverged_run_is_refused_and_writes_nothing(inproc, embeddings_dir, photos, monkeypatch):
    """A NaN in the UNet (a broken checkpoint, an fp16 overflow) makes NaN vectors: stop, say so, write nothing."""
    weight = inproc.tiny.tiny_model(0).model.diffusion_model.out[-1].weight
    monkeypatch.setattr(weight, "data", torch.full_like(weight, float("nan")))
    with pytest.raises(ValueError, match="step 1 of 3.*nothing is saved.*learning_rate"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=3, name="diverged")
    assert not any(embeddings_dir.rglob("*.safetensors"))


def test_training_stops_at_the_first_step_with_non_finite_vectors():
    """The pure loop stops at the step the vectors stop being finite, naming it (not 200 steps later)."""
    calls = []

    def denoise(x_t, t, context):
        calls.append(1)
        return x_t * 0 + context.mean() * (float("nan") if len(calls) >= 2 else 1.0)

    def encode_text(vectors, prompts):
        return vectors.mean(0).expand(len(prompts), 77, -1)

    latents, masks = torch.zeros(2, 4, 8, 8), torch.ones(2, 1, 8, 8)
    with pytest.raises(ValueError, match="diverged at step 2 of 50"):
        identity.train_identity(encode_text, denoise, latents, masks, ["a", "b"], torch.zeros(4, 16),
                                identity.sd_alphas_cumprod(), identity.TrainConfig(steps=50, batch_size=1))
    assert len(calls) == 2


def loop_vectors(masks, **config):
    """The training loop on a tiny pure denoiser whose prediction depends on the vectors."""
    def denoise(x_t, t, context):
        return x_t * context.mean(dim=(1, 2))[:, None, None, None] + context[:, :4, :1, None]

    def encode_text(vectors, prompts):
        return vectors.mean(0).expand(len(prompts), 77, -1)

    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    options = dict(steps=5, batch_size=2, learning_rate=0.05, seed=1, **config)
    return identity.train_identity(encode_text, denoise, latents, masks, ["a", "b", "c"], torch.full((2, 8), 0.5),
                                   identity.sd_alphas_cumprod(), identity.TrainConfig(**options)).vectors


def test_the_loop_uses_the_masks_the_unmasked_share_and_the_noise_offset():
    """Each part of the recipe changes the result: masks, the 5% of samples trained unmasked, the noise offset."""
    half, ones = torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8)
    half[..., :4] = 1
    masked = loop_vectors(half, full_mask_probability=0.0)
    assert torch.equal(loop_vectors(half, full_mask_probability=0.0), masked)  # deterministic per seed
    assert not torch.allclose(loop_vectors(ones, full_mask_probability=0.0), masked)
    assert torch.equal(loop_vectors(half, full_mask_probability=1.0), loop_vectors(ones, full_mask_probability=1.0))
    assert not torch.allclose(loop_vectors(half, full_mask_probability=0.0, noise_offset=0.0), masked)


def test_non_finite_vectors_are_never_written(tmp_path):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="vectors are not finite"):
            embedding_io.write_embedding(tmp_path, "bad", embedding_io.Embedding(torch.full((4, 768), bad)))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def unet_calls():
    """``unet_calls(model)``: a list that grows by one at each call of the MODEL's UNet (hooks removed after the test)."""
    handles = []

    def watch(model) -> list[int]:
        calls: list[int] = []
        handles.append(model.model.diffusion_model.register_forward_hook(lambda *_: calls.append(1)))
        return calls

    yield watch
    for handle in handles:
        handle.remove()


def test_the_same_request_again_reuses_the_file(inproc, embeddings_dir, photos, monkeypatch, caplog, unet_calls):
    """Queued again (after a restart, say), the same photos, settings and base model reuse the file: no step runs,
    no view is encoded, the same vectors and loss curve come out, the node says so and the file is untouched."""
    first = train(inproc, inproc.tiny.tiny_clip(0), photos, steps=2, name="again")
    path = embeddings_dir / "vcd" / "again.safetensors"
    on_disk, stamp = path.read_bytes(), path.stat().st_mtime_ns
    calls, encoded = unet_calls(inproc.tiny.tiny_model(0)), []
    vae = inproc.tiny.tiny_vae(0)
    monkeypatch.setattr(vae, "encode", lambda pixels: encoded.append(1))
    with caplog.at_level("INFO", logger="vcd"):
        second = train(inproc, inproc.tiny.tiny_clip(0), photos, steps=2, name="again")
    assert calls == [] and encoded == []
    assert torch.equal(second.result[2].vectors, first.result[2].vectors) and second.result[0] == first.result[0]
    assert torch.equal(second.result[1], first.result[1])  # the curve, redrawn from the recorded losses
    assert "reused" in " ".join(second.ui.as_dict()["text"]) and "reused" in caplog.text
    assert path.read_bytes() == on_disk and path.stat().st_mtime_ns == stamp


def lora_like(model):
    """A clone of ``model`` with a weight patch on one UNet layer, as a LoRA loader makes it."""
    patched = model.clone()
    weight = model.model.diffusion_model.out[2].weight
    patched.add_patches({"diffusion_model.out.2.weight": (torch.full_like(weight, 0.01),)}, 1.0)
    return patched


@pytest.mark.parametrize("change, named", [
    (dict(seed=5), "seed 0 in the file, 5 now"),
    (dict(steps=2), "steps 1 in the file, 2 now"),
    (dict(class_word="man"), "class_word woman in the file, man now"),
    (dict(photos=lambda p: p.flip(2)), "the photos or their masks"),
    (dict(masks=torch.ones(3, 512, 512)), "the photos or their masks"),
    (dict(model=lambda inproc: inproc.tiny.tiny_model(1)), "the base model"),
    (dict(model=lambda inproc: lora_like(inproc.tiny.tiny_model(0))), "the base model"),
])
def test_a_different_request_with_the_same_name_is_refused(inproc, embeddings_dir, photos, change, named):
    """Same name, other photos, settings or base model (LoRAs included): refused naming the difference, the file
    untouched; with overwrite on it is trained again and replaced."""
    train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="taken")
    path = embeddings_dir / "vcd" / "taken.safetensors"
    first = path.read_bytes()
    change = dict(change)
    images = change.pop("photos", lambda p: p)(photos)
    if "model" in change:
        change["model"] = change["model"](inproc)
    options = dict(steps=1, name="taken") | change
    with pytest.raises(FileExistsError, match=f"taken.safetensors exists and was trained from a different request "
                                              f"\\(.*{re.escape(named)}.*pick another name or turn overwrite on"):
        train(inproc, inproc.tiny.tiny_clip(0), images, **options)
    assert path.read_bytes() == first
    train(inproc, inproc.tiny.tiny_clip(0), images, **options, overwrite=True)
    assert path.read_bytes() != first and sorted(p.name for p in path.parent.iterdir()) == ["taken.safetensors"]


def test_a_file_from_before_photo_hashes_is_refused_not_reused(inproc, embeddings_dir, photos):
    """A file written by an older version records no photos: it still loads, but a request is never matched to it."""
    (embeddings_dir / "vcd").mkdir()
    old = embedding_io.Embedding(torch.ones(4, 768), {"format": "vcd-identity/1", "tokens": "4", "steps": "1"})
    embedding_io.write_embedding(embeddings_dir / "vcd", "old", old)
    with pytest.raises(FileExistsError, match=r"photos or their masks \(the file has no record of them\)"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="old")
    assert load(inproc, "vcd/old.safetensors").result[1].tokens == 4


def test_training_leaves_the_model_and_clip_as_they_were(inproc, embeddings_dir, photos):
    """Train Identity borrows the MODEL other nodes share. Made under inference mode as a checkpoint loader makes it,
    with a LoRA-style patch, and sampled once: after training it holds the very same weight tensors with the same
    requires_grad, dtype, device and patches, the CLIP's too, and a KSampler on it gives what it gave before."""
    import nodes as core

    with torch.inference_mode():
        model = lora_like(inproc.tiny.tiny_model.__wrapped__(0))
    clip = inproc.tiny.tiny_clip(0)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a woman"))

    def sample():
        with torch.inference_mode():
            return core.KSampler().sample(model, 7, 1, 4.0, "euler", "normal", cond, cond,
                                          {"samples": torch.zeros(1, 4, 8, 8)})[0]["samples"]

    def state(patcher):
        tensors = {**dict(patcher.model.named_parameters()), **dict(patcher.model.named_buffers())}
        return ({n: (id(t), t.requires_grad, t.is_inference(), t.dtype, t.device) for n, t in tensors.items()},
                sorted(patcher.patches), patcher.patches_uuid, sorted(patcher.object_patches), patcher.model.training)

    sampled = sample()  # loaded (and patched) the way ComfyUI loads it for sampling
    before, clip_before = state(model), state(clip.patcher)
    train(inproc, clip, photos, model=model, steps=2, name="borrowed")
    after = state(model)
    assert after[1:] == before[1:] and state(clip.patcher) == clip_before
    assert [n for n in before[0] if after[0][n] != before[0][n]] == []
    assert torch.equal(sample(), sampled)


def test_training_shows_its_loss_curve_and_time_left_while_it_runs(inproc, embeddings_dir, photos, monkeypatch):
    """The loss curve goes out as the node's live preview (a PNG the size of the loss_curve output) with the running
    loss and time left as text at the first and last step, and between them once every PREVIEW_SECONDS."""
    import comfy.utils

    node, bar, texts = inproc.pack.nodes.identity, [], []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        bar.append((value, total, preview)))
    monkeypatch.setattr(node, "send_progress_text", lambda node_id, text: texts.append(text))
    monkeypatch.setattr(node, "PREVIEW_SECONDS", float("inf"))  # only the first and the last step
    curve = train(inproc, inproc.tiny.tiny_clip(0), photos, steps=4, name="live").result[1]
    assert [value for value, total, _ in bar] == [1, 2, 3, 4] and {total for _, total, _ in bar} == {4}
    previews = [(value, preview) for value, _, preview in bar if preview is not None]
    assert [value for value, _ in previews] == [1, 4]
    kind, image, max_size = previews[-1][1]
    assert kind == "PNG" and max_size > 0
    assert torch.equal(torch.from_numpy(np.asarray(image).copy()), (curve[0] * 255).round().to(torch.uint8))
    assert [text.split()[:2] for text in texts] == [["step", "1/4"], ["step", "4/4"]]
    assert all(re.search(r"loss \d+\.\d{4} .* about \d+ (s|min \d\d s|h \d\d min) left$", text) for text in texts), texts
    assert texts[-1].endswith("about 0 s left")

    bar.clear()
    monkeypatch.setattr(node, "PREVIEW_SECONDS", 0.0)  # as when each step takes longer than the interval
    train(inproc, inproc.tiny.tiny_clip(0), photos, steps=3, name="live_slow")
    assert [value for value, _, preview in bar if preview is not None] == [1, 2, 3]


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (0.2, "1 s"), (59, "59 s"), (60, "1 min 00 s"),
                                           (185, "3 min 05 s"), (3600, "1 h 00 min"), (3725, "1 h 02 min")])
def test_time_left_reads_as_a_countdown(inproc, seconds, text):
    assert inproc.pack.nodes.identity.duration(seconds) == text


@pytest.mark.parametrize("other", ["mona.pt", "authors/deep/mona.bin", "mona", "Mona.safetensors", "vcd/old/mona.safetensors"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_name_another_file_answers_to_is_refused(inproc, embeddings_dir, photos, other, overwrite):
    """ComfyUI resolves embedding:NAME in every folder under models/embeddings, in an order that changes between
    starts: with the authors' mona.pt there, our vcd/mona would load only sometimes. Refused, naming the file."""
    path = embeddings_dir / other
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"the authors' file")
    with pytest.raises(FileExistsError, match=f"name: .*{other}.* embedding:mona"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="mona", overwrite=overwrite)
    assert [p for p in embeddings_dir.rglob("*") if p.is_file()] == [path] and path.read_bytes() == b"the authors' file"


def test_a_clash_in_another_embeddings_folder_is_refused(inproc, embeddings_dir, photos, tmp_path, monkeypatch):
    import folder_paths

    extra = tmp_path / "extra_embeddings"
    (extra / "sd15").mkdir(parents=True)
    (extra / "sd15" / "ann.pt").write_bytes(b"")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings",
                        ([str(embeddings_dir), str(extra)], folder_paths.supported_pt_extensions))
    with pytest.raises(FileExistsError, match="sd15/ann.pt"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="ann")
    (embeddings_dir / "an.pt.old").write_bytes(b"")  # ann.pt and an.pt.old do not answer to embedding:an
    assert train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="an").result[0] == "embedding:an woman"


def test_a_clash_that_appears_while_training_is_refused_before_writing(inproc, embeddings_dir, photos, monkeypatch):
    import comfy.utils

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda *a, **k: (embeddings_dir / "late.pt").write_bytes(b""))
    with pytest.raises(FileExistsError, match="late.pt"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=2, name="late")
    assert not (embeddings_dir / "vcd" / "late.safetensors").exists()


def load(inproc, embedding, class_word="", clip=None):
    with torch.inference_mode():
        return inproc.pack.nodes.identity.VCDLoadIdentity.execute(embedding, class_word, clip)


def test_load_identity_reads_ours_and_checks_width(inproc, embeddings_dir):
    (embeddings_dir / "vcd").mkdir()
    embedding_io.write_embedding(embeddings_dir / "vcd", "ann", embedding_io.Embedding(torch.ones(4, 768), {"class_word": "woman"}))
    out = load(inproc, "vcd/ann.safetensors", clip=inproc.tiny.tiny_clip(0))
    assert out.result[0] == "embedding:vcd/ann woman" and out.result[1].tokens == 4
    assert load(inproc, "vcd/ann.safetensors", class_word="person").result[0] == "embedding:vcd/ann person"
    embedding_io.write_embedding(embeddings_dir, "wide", embedding_io.Embedding(torch.ones(4, 1024)))
    with pytest.raises(ValueError, match="1024-wide"):
        load(inproc, "wide.safetensors")
    with pytest.raises(FileNotFoundError, match="embedding"):
        load(inproc, "missing.pt")


def test_a_name_core_prompts_cannot_carry_is_warned_about(inproc, embeddings_dir, caplog):
    """Core's prompt parser splits 'embedding:my face' at the space (and reads brackets as weights), so the snippet
    would silently lose the identity: Load Identity says so and suggests a name; a plain name gets no warning."""
    written = embedding_io.write_embedding(embeddings_dir, "ann", embedding_io.Embedding(torch.ones(4, 768)))
    shutil.copy(written, embeddings_dir / "my face.safetensors")  # renamed by hand: the pack never writes such names
    clip = inproc.tiny.tiny_clip(0, embedding_directory=(str(embeddings_dir),))
    with caplog.at_level("WARNING"):
        out = load(inproc, "my face.safetensors", class_word="woman")
        clip.tokenize(out.result[0])  # what core CLIPTextEncode does with the snippet
    assert out.result[0] == "embedding:my face woman"
    assert re.search(r"embedding:my( face woman)? does not exist, ignoring", caplog.text)  # core loses the identity
    assert ("VCD Load Identity: the file name 'my face' holds a space or one of ( ) , : \\, which a core prompt "
            "cannot carry after 'embedding:' (core would ignore the identity): rename the file (e.g. 'my_face') or "
            "use the identity output with VCD Identity Text Encode.") in caplog.text
    assert out.ui.as_dict()["text"][0].startswith("VCD Load Identity: the file name 'my face'")
    caplog.clear()
    with caplog.at_level("WARNING"):
        plain = load(inproc, "ann.safetensors", class_word="woman")
    assert "VCD Load Identity" not in caplog.text and plain.ui.as_dict()["text"][0].startswith("embedding:ann woman")


@pytest.mark.parametrize("name, tokens", [("ironman", 4), ("mona", 4), ("emotion-smile", None)])
def test_load_identity_reads_the_authors_files(inproc, embeddings_dir, shared_dir, name, tokens):
    shutil.copy(shared_dir / "data" / "magic-me-embeddings" / f"{name}.pt", embeddings_dir)
    out = load(inproc, f"{name}.pt", class_word="man", clip=inproc.tiny.tiny_clip(0))
    assert out.result[0] == f"embedding:{name} man" and out.result[1].width == 768
    if tokens is not None:
        assert out.result[1].tokens == tokens


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_training_keeps_fp32_vectors(tiny_training, dtype):
    """The CUDA route (autocast; fp16 with loss scaling), exercised on the CPU: finite, fp32 rows that move."""
    p = tiny_training
    with torch.inference_mode(False):
        config = identity.TrainConfig(steps=3, learning_rate=1e-2, batch_size=2, seed=0, autocast_dtype=dtype)
        result = identity.train_identity(p["text"], p["denoise"], p["latents"], p["masks"], p["prompts"], p["start"],
                                         p["alphas"], config)
    assert result.vectors.dtype == torch.float32 and all(torch.isfinite(torch.tensor(result.losses)))
    assert (result.vectors - p["start"]).abs().amax() > 1e-4


def test_masked_mse_in_half_precision_at_1024_px_is_finite_and_exact():
    """A 1024 px view is a 128x128x4 latent: 65,536 mask entries overflow an fp16 sum (max 65,504)."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 128, 128, generator=g), torch.randn(2, 4, 128, 128, generator=g)
    mask = torch.ones(2, 1, 128, 128)
    mask[1, :, :64] = 0
    loss = identity.masked_mse(pred.half(), target.half(), mask)
    squared = ((pred.half().float() - target.half().float()) * mask) ** 2
    expected = squared.flatten(1).sum(1) / torch.tensor([65536.0, 32768.0])
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-6, atol=0)


def test_an_unwritable_embeddings_folder_is_refused_before_training(inproc, tmp_path, monkeypatch, photos, unet_calls):
    """models/embeddings cannot hold files (here a plain file stands where its parent folder should be; a read-only
    disk is the same to the check): refused naming the folder before any step runs, not after the training."""
    import folder_paths

    (tmp_path / "disk").write_text("not a folder")
    folder = tmp_path / "disk" / "embeddings"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings", ([str(folder)], {".safetensors"}))
    model = inproc.tiny.tiny_model(0)
    calls = unet_calls(model)
    with pytest.raises(PermissionError, match=rf"name: cannot write to {re.escape(str(folder / 'vcd'))} .*nothing "
                                              "was started; make that folder writable"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, model=model, steps=1, name="nowhere")
    assert calls == []


@pytest.fixture()
def output_dir(inproc, tmp_path, monkeypatch):
    """ComfyUI's output folder pointed at an empty temp folder for this test."""
    import folder_paths

    folder = tmp_path / "output"
    folder.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(folder))
    return folder


def test_a_name_taken_while_training_keeps_the_training(inproc, embeddings_dir, output_dir, photos, monkeypatch):
    """Another run writes vcd/late.safetensors while this one trains: that file is left alone, and the training is
    saved under output/vcd-unsaved/ with an error saying where, not thrown away."""
    import comfy.utils

    other = embeddings_dir / "vcd" / "late.safetensors"

    def hook(value, total, preview, node_id=None):
        if not other.exists():
            embedding_io.write_embedding(other.parent, "late", embedding_io.Embedding(torch.ones(4, 768)))

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    with pytest.raises(FileExistsError, match=r"name: the trained embedding could not be saved as "
                                              r"models/embeddings/vcd/late.safetensors .*The training is kept in "):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=2, name="late")
    assert torch.equal(embedding_io.read_embedding(other).vectors, torch.ones(4, 768))
    [kept] = output_dir.glob("vcd-unsaved/*/late.safetensors")
    saved = embedding_io.read_embedding(kept)
    assert saved.metadata["steps"] == "2" and not torch.equal(saved.vectors, torch.ones(4, 768))
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", None)
    rerun = train(inproc, inproc.tiny.tiny_clip(0), photos, steps=2, name="late2").result[2]
    assert torch.equal(saved.vectors, rerun.vectors)  # what was kept is the training itself


def test_a_full_disk_at_the_end_keeps_the_training(inproc, embeddings_dir, output_dir, photos, monkeypatch):
    """Writing the file fails at the end (disk full): the error names the cause and where the training was kept."""
    import errno

    written = inproc.pack.vcd_core.embedding_io  # the pack's own copy of the module, the one the node calls
    real, failed = written.save_file, []

    def full_once(*args, **kwargs):
        if not failed:
            failed.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(written, "save_file", full_once)
    with pytest.raises(OSError, match=r"could not be saved as models/embeddings/vcd/full.safetensors \(.*No space "
                                      r"left on device\)\. The training is kept in .*vcd-unsaved"):
        train(inproc, inproc.tiny.tiny_clip(0), photos, steps=1, name="full")
    assert not list(embeddings_dir.rglob("*.safetensors"))
    assert len(list(output_dir.glob("vcd-unsaved/*/full.safetensors"))) == 1


@pytest.fixture()
def cut_out_png(inproc, tmp_path, monkeypatch):
    """``cut_out_png(keep_colours)``: the name of an RGBA cut-out of the astronaut in ComfyUI's input folder, as a
    background remover writes it: alpha 1 on an ellipse around her, 0 around; the RGB under the transparent part
    zeroed (most removers) or kept."""
    import folder_paths
    from PIL import Image

    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    photo = skimage.data.astronaut()[::8, ::8]  # 64 px
    y, x = np.mgrid[-1:1:64j, -1:1:64j]
    alpha = ((x / 0.5) ** 2 + ((y - 0.3) / 0.8) ** 2 <= 1).astype(np.uint8) * 255

    def write(keep_colours: bool) -> str:
        rgb = photo if keep_colours else photo * (alpha[..., None] > 0)
        name = f"cut_{keep_colours}.png"
        Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA").save(tmp_path / name)
        return name

    return write


def test_load_images_mask_of_a_cut_out_is_refused_and_its_inverse_trains(inproc, embeddings_dir, cut_out_png):
    """Core Load Image gives a cut-out PNG's MASK as 1 - alpha: the transparent background. Wired straight into
    Train Identity it would train on a flat black fill: refused naming the fix. Inverted (the person) it trains."""
    import nodes

    image, mask = nodes.LoadImage().load_image(cut_out_png(keep_colours=False))
    with pytest.raises(ValueError, match=r"masks: under mask\(s\) \[0\] the photo is one flat colour.*InvertMask"):
        train(inproc, inproc.tiny.tiny_clip(0), image, masks=mask, steps=1, name="cut")
    assert not list(embeddings_dir.rglob("*.safetensors"))
    done = train(inproc, inproc.tiny.tiny_clip(0), image, masks=1 - mask, steps=1, name="cut")
    assert "edges" not in " ".join(done.ui.as_dict()["text"])


def test_a_background_like_mask_trains_with_a_warning(inproc, embeddings_dir, cut_out_png, caplog):
    """The same cut-out with its colours kept under the transparency: the background mask is not one flat colour,
    so it trains, but the node (log and text under it) says the masks look like the background."""
    import nodes

    image, mask = nodes.LoadImage().load_image(cut_out_png(keep_colours=True))
    with caplog.at_level("WARNING", logger="vcd"):
        done = train(inproc, inproc.tiny.tiny_clip(0), image, masks=mask, steps=1, name="background")
    warning = "the masks of [0] cover the photo's edges far more than its middle"
    assert warning in " ".join(done.ui.as_dict()["text"]) and warning in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="vcd"):
        done = train(inproc, inproc.tiny.tiny_clip(0), image, masks=1 - mask, steps=1, name="person")
    assert "edges" not in " ".join(done.ui.as_dict()["text"]) and "edges" not in caplog.text
