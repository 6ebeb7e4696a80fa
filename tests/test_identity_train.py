"""vcd_core.identity's training loop and bookkeeping on their own: each step replayed from the seed by an
independent loop (draws, noised latents, masked loss, AdamW), mixed precision, divergence, and the checks, hashes
and metadata the nodes and the library build on."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from vcd_core import __version__, identity
from vcd_core.embedding_io import fingerprint
from vcd_core.identity import TrainConfig, TrainingDiverged, train_identity

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

V, C, H = 3, 4, 4  # views, latent channels, latent size
WIDTH = 5


class Stub:
    """A text encoder and a denoiser small enough to replay: the context is the identity vectors' sum plus the
    caption's number, the prediction a matmul of the noised latent scaled by the context (so autocast shows)."""

    def __init__(self):
        self.seen = []
        self.weight = torch.eye(C * H * H) * 0.9

    def encode_text(self, vectors: torch.Tensor, prompts) -> torch.Tensor:
        self.seen.append({"vectors": vectors.detach().clone(), "prompts": list(prompts)})
        number = torch.tensor([float(p[1:]) for p in prompts])
        return vectors.sum(0)[None, None, :] + number[:, None, None]

    def denoise(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.seen[-1].update(x=x.detach().clone(), t=t.clone(), autocast=torch.is_autocast_enabled("cpu"),
                             autocast_dtype=torch.get_autocast_dtype("cpu"))
        return (x.flatten(1) @ self.weight).reshape(x.shape) * context.mean(dim=(1, 2))[:, None, None, None]


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(V, C, H, H, generator=generator)
    masks = (torch.rand(V, 1, H, H, generator=generator) > 0.4).float()
    masks[:, :, 0, 0] = 1.0  # never empty
    return latents, masks, [f"p{i}" for i in range(V)], torch.randn(2, WIDTH, generator=generator) * 0.1


CONFIG = TrainConfig(steps=5, learning_rate=0.05, batch_size=2, weight_decay=0.3, betas=(0.8, 0.95),
                     noise_offset=0.1, full_mask_probability=0.5, seed=3)


def reference_loss(pred, noise, mask):
    mask = mask.expand_as(pred)
    return torch.stack([((p - n) * m).pow(2).sum() / m.sum() for p, n, m in zip(pred, noise, mask)]).mean()


def test_each_step_is_the_papers_step_replayed_from_the_seed():
    latents, masks, prompts, start = inputs()
    alphas = identity.sd_alphas_cumprod().double()  # any dtype: the loop works in float32
    stub, calls = Stub(), []
    result = train_identity(stub.encode_text, stub.denoise, latents, masks, prompts, start, alphas, CONFIG,
                            lambda step, loss: calls.append((step, loss)))

    generator = torch.Generator().manual_seed(CONFIG.seed)
    vectors = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.AdamW([vectors], lr=0.05, betas=(0.8, 0.95), weight_decay=0.3)
    replay = Stub()
    drawn_views, whole = set(), []
    for step, seen in enumerate(stub.seen):
        index = torch.randint(0, V, (2,), generator=generator)
        full = torch.rand(2, generator=generator) < 0.5
        mask = torch.where(full[:, None, None, None], 1.0, masks[index])
        noise = torch.randn(2, C, H, H, generator=generator) + 0.1 * torch.randn(2, C, 1, 1, generator=generator)
        t = torch.randint(0, 1000, (2,), generator=generator)
        a = alphas.float()[t][:, None, None, None]
        x_t = a.sqrt() * latents[index] + (1 - a).sqrt() * noise
        assert seen["prompts"] == [f"p{i}" for i in index.tolist()] and torch.equal(seen["t"], t)
        assert seen["x"].dtype == torch.float32 and not seen["autocast"]
        torch.testing.assert_close(seen["x"], x_t, rtol=0, atol=1e-6)
        torch.testing.assert_close(seen["vectors"], vectors.detach(), rtol=0, atol=1e-6)
        loss = reference_loss(replay.denoise(x_t, t, replay.encode_text(vectors, seen["prompts"])), noise, mask)
        assert result.losses[step] == pytest.approx(float(loss.detach()), rel=1e-5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        drawn_views.update(index.tolist())
        whole += full.tolist()
    assert len(stub.seen) == 5 and drawn_views == {0, 1, 2} and any(whole) and not all(whole)
    torch.testing.assert_close(result.vectors, vectors.detach(), rtol=0, atol=1e-6)
    assert calls == list(enumerate(result.losses)) and result.vectors.device.type == "cpu"
    assert not torch.allclose(result.vectors, start, atol=1e-3) and torch.equal(start, inputs()[3])  # start kept


def test_mixed_precision_encodes_and_denoises_under_autocast():
    latents, masks, prompts, start = inputs()
    for dtype in (torch.float16, torch.bfloat16):
        stub = Stub()
        result = train_identity(stub.encode_text, stub.denoise, latents, masks, prompts, start,
                                identity.sd_alphas_cumprod(), TrainConfig(steps=3, batch_size=2, autocast_dtype=dtype))
        assert all(s["autocast"] and s["autocast_dtype"] == dtype for s in stub.seen)
        assert result.vectors.dtype == torch.float32 and bool(torch.isfinite(result.vectors).all())
        assert not torch.equal(result.vectors, start) and all(math.isfinite(x) for x in result.losses)


def test_vectors_that_stop_being_finite_stop_training_with_what_to_do():
    latents, masks, prompts, start = inputs()
    stub = Stub()

    def exploding(x, t, context):
        return stub.denoise(x, t, context) * torch.where(context.mean() > 1e9, math.inf, 1e30)

    calls = []
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 1 of 4: the identity vectors are no longer "
                                               r"finite \(NaN/inf\), so the run stopped and nothing is saved\. Lower "
                                               r"learning_rate \(now 1000000\.0\) or check the model and photos\.$"):
        train_identity(stub.encode_text, exploding, latents, masks, prompts, start, identity.sd_alphas_cumprod(),
                       TrainConfig(steps=4, batch_size=1, learning_rate=1e6), lambda s, l: calls.append(s))
    assert calls == [] and issubclass(TrainingDiverged, ValueError)


@pytest.mark.parametrize("cut, message", [
    (lambda l, m, p: (l, m, p[:2]), "3 latents, 3 masks and 2 prompts: counts differ"),
    (lambda l, m, p: (l, m[:2], p), "3 latents, 2 masks and 3 prompts: counts differ"),
])
def test_views_masks_and_prompts_must_agree(cut, message):
    latents, masks, prompts, start = inputs()
    stub = Stub()
    latents, masks, prompts = cut(latents, masks, prompts)
    with pytest.raises(ValueError, match=f"^{message}$"):
        train_identity(stub.encode_text, stub.denoise, latents, masks, prompts, start, identity.sd_alphas_cumprod(),
                       TrainConfig(steps=1))
    assert stub.seen == []


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "steps must be at least 1, got 0"),
    (dict(batch_size=0), "batch_size must be at least 1, got 0"),
    (dict(learning_rate=0.0), "learning_rate must be positive, got 0.0"),
    (dict(learning_rate=-1e-3), "learning_rate must be positive, got -0.001"),
    (dict(learning_rate=math.nan), "learning_rate must be positive, got nan"),
])
def test_train_config_refuses_what_cannot_train(change, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TrainConfig(**change)
    assert TrainConfig(steps=1, batch_size=1, learning_rate=1e-9).steps == 1  # the smallest that train


def test_the_papers_recipe_is_the_default():
    config = TrainConfig()
    assert (config.steps, config.learning_rate, config.batch_size, config.weight_decay, config.betas,
            config.noise_offset, config.full_mask_probability, config.seed, config.autocast_dtype) == (
        200, 1e-3, 4, 1e-2, (0.9, 0.999), 0.1, 0.05, 0, None)


def test_init_vectors_cycle_the_rare_words():
    asked = []

    def word_vector(word):
        asked.append(word)
        return torch.full((3,), float(len(asked)), dtype=torch.float64)

    vectors = identity.init_vectors(word_vector, 5)
    assert asked == ["ktn", "pll", "ucd", "ucd", "ktn"] and vectors.dtype == torch.float32
    assert torch.equal(vectors[:, 0], torch.arange(1.0, 6.0))
    assert identity.init_vectors(lambda w: torch.ones(2), 1).shape == (1, 2)
    with pytest.raises(ValueError, match=r"^tokens must be at least 1, got 0$"):
        identity.init_vectors(word_vector, 0)


def test_masked_mse_divides_by_the_mask_area_even_when_it_is_small():
    pred, target = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    mask = torch.full((2, 1, 2, 2), 0.01)
    mask[1] = 0.0
    loss = identity.masked_mse(pred.half(), target, mask)
    # sample 0: sum((1 * 0.01)^2) over 12 values / (0.01 * 12); sample 1: an empty mask counts 0, never NaN
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx((12 * 1e-4 / 0.12 + 0.0) / 2, rel=1e-6)


def test_autocast_for_picks_bf16_where_cuda_has_it(monkeypatch):
    assert identity.autocast_for(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert identity.autocast_for(torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert identity.autocast_for(torch.device("cuda:0")) == torch.float16


def test_make_views_refuses_what_it_cannot_crop():
    photo = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match=r"^no reference images: give at least one photo of the subject$"):
        identity.make_views([], [], 8, 1, False, 0)
    with pytest.raises(ValueError, match=r"^1 masks for 2 images: give one mask per image \(or none\)$"):
        identity.make_views([photo, photo], [None], 8, 1, False, 0)
    with pytest.raises(ValueError, match=r"^mask 1 is \(8, 6\) but image 1 is \(8, 8\): masks must match their "
                                         r"images' size$"):
        identity.make_views([photo, photo], [None, torch.ones(8, 6)], 8, 1, False, 0)


def test_usable_references_leave_out_photos_whose_mask_is_empty():
    images = [torch.rand(6, 4, 3), torch.rand(6, 4, 3), torch.rand(6, 4, 3)]
    photos, masks, left_out = identity.usable_references(images, None)
    assert [p.shape for p in photos] == [(3, 6, 4)] * 3 and masks == [None] * 3 and left_out == []
    assert torch.equal(photos[1], images[1].movedim(-1, 0))
    given = torch.ones(3, 6, 4, dtype=torch.uint8)
    given[1] = 0
    photos, masks, left_out = identity.usable_references(images, given)
    assert left_out == [1] and len(photos) == 2 and torch.equal(photos[1], images[2].movedim(-1, 0))
    assert all(m.dtype == torch.float32 for m in masks)
    one, one_mask, _ = identity.usable_references(images[:1], torch.ones(6, 4))  # one [H, W] mask for one photo
    assert len(one) == len(one_mask) == 1


@pytest.mark.parametrize("masks, message", [
    (torch.ones(2, 6, 4), r"^masks: 2 masks for 3 images; give one mask per image\.$"),
    (torch.ones(3, 6, 5), r"^masks are 5x6 but the images are 4x6: masks must match their images' size\.$"),
    (torch.ones(3, 6, 4).index_put_((torch.tensor([2]), torch.tensor([0]), torch.tensor([1])), torch.tensor(float("inf"))),
     r"^masks: mask\(s\) \[2\] hold NaN or infinite values: check the node that made them \(a mask is 0 to 1\)\.$"),
    (torch.zeros(3, 6, 4), r"^masks: every mask is empty, so there is nothing to learn; check the segmentation prompt "
                           r"or set Prompt Segment's if_none to 'full'\.$"),
])
def test_usable_references_refuse_masks_that_do_not_fit(masks, message):
    with pytest.raises(ValueError, match=message):
        identity.usable_references([torch.rand(6, 4, 3)] * 3, masks)


def test_photos_hash_tells_photos_masks_and_sizes_apart():
    generator = torch.Generator().manual_seed(0)
    photos = torch.rand(2, 6, 4, 3, generator=generator)
    masks = torch.ones(2, 6, 4)
    base = identity.photos_hash(photos, masks)
    assert base == identity.photos_hash(photos.clone(), masks.clone()) == identity.photos_hash(list(photos), list(masks))
    changed = photos.clone()
    changed[1, 0, 0, 0] += 0.5
    assert identity.photos_hash(changed, masks) != base
    assert identity.photos_hash(photos, None) != base and identity.photos_hash(photos, masks * 0) != base
    assert identity.photos_hash(photos.reshape(2, 4, 6, 3), masks) != base  # same values, other size
    mixed = [photos[0], torch.rand(8, 4, 3, generator=generator)]
    assert identity.photos_hash(mixed, None) != identity.photos_hash(mixed[::-1], None)
    assert len(base) == len(identity.photos_hash(mixed, None)) > 8
    # the format existing identity files carry: each batch's size, then its values (one tensor for a batch)
    assert base == fingerprint(str((2, 6, 4, 3)), photos, str((2, 6, 4)), masks)
    assert identity.photos_hash(mixed, None) == fingerprint(str((6, 4, 3)), mixed[0], str((8, 4, 3)), mixed[1])


def test_a_training_request_and_its_file_metadata():
    config = TrainConfig(steps=7, learning_rate=2e-3, batch_size=3, seed=11)
    request = identity.training_request(4, "woman", config, True, 512, "photoshash", "modelhash")
    assert request == {"tokens": "4", "class_word": "woman", "steps": "7", "learning_rate": "0.002",
                       "batch_size": "3", "seed": "11", "augment": "True", "resolution": "512",
                       "photos_hash": "photoshash", "base_model_hash": "modelhash"}
    assert tuple(request)[:len(identity.SETTINGS)] == identity.SETTINGS
    losses = [0.1, 1 / 3, 2.5e-7]
    metadata = identity.file_metadata(request, "mona", 3, losses)
    assert metadata == {"format": "vcd-identity/1", **request, "references": "3", "vcd_version": __version__,
                        "prompt": "embedding:mona woman", "losses": json.dumps(losses)}
    assert json.loads(metadata["losses"]) == losses  # exact round trip
    assert identity.snippet("mona", "") == "embedding:mona"


def cut_out(size: int = 40, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo as Load Image gives a cut-out PNG: a person (noise) in an ellipse, the transparent rest one ``fill``
    colour; and its alpha (1 on the person). Load Image's MASK is ``1 - alpha``."""
    generator = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    alpha = ((x / 0.5) ** 2 + ((y - 0.3) / 0.8) ** 2 <= 1).float()  # a figure standing in the middle, cut at the bottom
    photo = torch.rand(size, size, 3, generator=generator) * alpha[..., None] + fill * (1 - alpha[..., None])
    return photo, alpha


def test_a_cut_outs_transparent_background_as_the_mask_is_refused():
    """Load Image's mask of a cut-out is 1 on the transparent fill: training there would learn a flat colour, so
    it is refused naming the mask and the fix; the same mask inverted (the person) is taken."""
    photo, alpha = cut_out(fill=0.0)
    other, other_alpha = cut_out(fill=1.0)
    with pytest.raises(ValueError, match=r"^masks: under mask\(s\) \[1\] the photo is one flat colour, so there is "
                                         r"no subject to learn: a mask from Load Image is 1 where the PNG is "
                                         r"transparent .*put an InvertMask between them"):
        identity.usable_references([other, photo], torch.stack([other_alpha, 1 - alpha]))
    photos, masks, _ = identity.usable_references([photo, other], torch.stack([alpha, other_alpha]))
    assert len(photos) == 2


@pytest.mark.parametrize("spread, share, masked, flat", [
    (1 / 128, 1.0, 0.5, True),  # PNG-exact fill, or within two 8-bit levels of it
    (3 / 255, 1.0, 0.5, False),  # beyond: colours that vary
    (0.0, 0.95, 0.5, True),  # a few anti-aliased pixels of the person's edge under the mask
    (0.0, 0.94, 0.5, False),
    (0.0, 1.0, 0.009, False),  # under 1% of the photo: too little to say
    (0.0, 1.0, 0.01, True),
])
def test_a_flat_colour_is_told_by_spread_share_and_size(spread, share, masked, flat):
    pixels = 10_000
    under = round(pixels * masked)  # the first ``under`` pixels are masked
    outliers = round(under * (1 - share))
    image = torch.rand(pixels, 1, 3, generator=torch.Generator().manual_seed(0))  # unmasked: anything
    image[:under] = 0.5
    image[:under // 2, 0, 0] += spread  # half the masked pixels off the others by ``spread``
    image[:outliers] = 0.9  # and a few far off
    mask = torch.zeros(pixels, 1)
    mask[:under] = 1
    assert identity.flat_under_mask(image, mask) is flat
    assert identity.flat_under_mask(image, mask * 0.99) is flat  # fully masked: 0.99 and up
    assert identity.flat_under_mask(image, mask * 0.98) is False


def test_the_border_ring_and_the_middle_of_a_mask():
    """The ring is 5% of the shorter side (at least one pixel) all round, the middle the central half of each side."""
    for (height, width), edge in (((40, 60), 2), ((20, 44), 1), ((10, 12), 1)):
        ring = torch.ones(height, width)
        ring[edge:height - edge, edge:width - edge] = 0
        middle = torch.zeros(height, width)
        middle[height // 4:height - height // 4, width // 4:width - width // 4] = 1
        assert identity.border_and_middle(ring) == (1.0, 0.0)
        assert identity.border_and_middle(middle) == (0.0, 1.0)
        assert identity.border_and_middle(torch.ones(height, width, dtype=torch.uint8)) == (1.0, 1.0)


@pytest.mark.parametrize("border, middle, background", [
    (0.5, 0.0, False), (0.51, 0.0, True),  # most of the border
    (1.0, 0.75, False), (1.0, 0.74, True),  # and clearly less of the middle
])
def test_what_looks_like_the_background(border, middle, background):
    assert identity.looks_like_background(border, middle) is background


def test_masks_that_look_like_the_background_are_named():
    """The background around a figure; a person, or a face that fills the frame, is not it."""
    _, alpha = cut_out()
    frame_filling = torch.ones(40, 40)
    frame_filling[:6, :6] = 0
    assert identity.background_like(torch.stack([alpha, 1 - alpha, frame_filling, torch.ones(40, 40),
                                                 torch.zeros(40, 40)])) == [1]
    assert identity.background_warning(["a.png", "b.png"]) == (
        "the masks of ['a.png', 'b.png'] cover the photo's edges far more than its middle, like the background "
        "around a person, and training learns what they cover: invert them if so (in ComfyUI, Load Image's mask is "
        "1 where the PNG is transparent: put an InvertMask after it).")
