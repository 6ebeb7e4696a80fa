"""Issue 13 item 4: the ComfyUI nodes and the diffusers library give the same result for the same inputs where
both do the same thing: the prior's noise for a seed, the tile blend every model call, Face VCD's crop / noise
mask / paste, and identity training (vectors, losses and the file's metadata) on the same checkpoint."""

import json

import pytest
import skimage.data
import torch

import vcd_diffusers
from vcd_core import identity
from vcd_diffusers import face as library_face
from vcd_diffusers import pipeline, tiled


# one torch thread (conftest); diffusers 0.42 hands numpy 2 a tensor in its schedulers (their warning)
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

@pytest.mark.parametrize("frames, gamma, seed", [(8, 0.1, 3), (5, 0.0, 0), (3, 1.0, 2**40)])
def test_the_library_starts_from_the_nodes_noise(inproc, tiny_models, monkeypatch, frames, gamma, seed):
    """VCD 3D Gaussian Noise for a latent [F, 4, 8, 8] is what the library's T2V sampling starts from."""
    node = inproc.pack.nodes.noise.VCDNoise(seed, gamma).generate_noise({"samples": torch.zeros(frames, 4, 8, 8)})
    used = []
    real = pipeline.initial_noise
    monkeypatch.setattr(pipeline, "initial_noise", lambda *args: used.append(real(*args)) or used[-1])
    settings = pipeline.Sampling(steps=1, cfg=1.0, sampler="euler", gamma=gamma, seed=seed)
    vcd_diffusers.generate(tiny_models, "a photo of a woman", frames=frames, height=64, width=64, settings=settings)
    assert len(used) == 1 and torch.equal(used[0], node)


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A stand-in model call that looks at neighbours (so the tile edges matter) and is non-linear."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    channels = x.shape[1]
    out = torch.nn.functional.conv2d(x, kernel.expand(channels, 1, 3, 3), padding=1, groups=channels)
    return out + 0.1 * x ** 2


@pytest.mark.parametrize("tile_size, overlap, tile_batch", [(64, 16, 1), (64, 32, 2), (96, 8, 4)])
def test_tiles_are_blended_as_the_node_blends_them(inproc, tile_size, overlap, tile_batch):
    """The same model call through VCD Tiled Refine's cond-batch wrapper and through the library's tiled denoiser:
    the same blended output, and every call gets whole tiles with all 6 frames."""
    x = torch.randn(6, 4, 24, 20, generator=torch.Generator().manual_seed(0))  # 192 x 160 px frames
    node_calls, library_calls = [], []

    def executor(model, conds, x_in, timestep, model_options):
        node_calls.append(x_in.shape[0])
        return [blurred(x_in), 2 * blurred(x_in)]

    wrapper = inproc.pack.nodes.tiled.tiling_wrapper(tile_size // 8, overlap // 8, tile_batch)
    node = wrapper(executor, None, [[{}], [{}]], x, torch.tensor([1.0] * 6), {})

    def denoiser(x_in, t):
        library_calls.append(x_in.shape[0])
        return blurred(x_in)

    ours = tiled.tiled_denoiser(denoiser, tile_size, overlap, tile_batch)(x, torch.tensor(1.0))
    assert torch.equal(ours, node[0]) and torch.equal(2 * ours, node[1])
    assert node_calls == library_calls and all(n % 6 == 0 for n in library_calls) and len(library_calls) > 1
    assert not torch.equal(ours, blurred(x))  # tiling changed something: the comparison is not vacuous


class FakeVAE:
    """A deterministic stand-in VAE with ComfyUI's interface: 8x average pooling and nearest upsampling."""

    @staticmethod
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1)[:, :3], 8)
        return torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)

    @staticmethod
    def decode(latent: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(latent[:, :3], scale_factor=8, mode="nearest").movedim(1, -1)


def fake_sampling(latent: torch.Tensor, noise_mask: torch.Tensor) -> torch.Tensor:
    """A stand-in sampler that changes the latent only where the noise mask lets it."""
    return latent * (1 - noise_mask) + (1 - latent) * noise_mask


@pytest.fixture(scope="module")
def astronaut_frames():
    photo = torch.from_numpy(skimage.data.astronaut()[:256, 96:352].copy()).float() / 255
    return torch.stack([photo.roll(2 * i, dims=1) for i in range(4)])


@pytest.mark.parametrize("crop_mode, wired_mask", [("union", None), ("per_frame_smoothed", None), ("union", "box"),
                                                   ("union", "wider than its window")])
def test_face_vcd_crops_and_pastes_as_the_node_does(parts, tiny_models, monkeypatch, astronaut_frames, crop_mode,
                                                    wired_mask):
    """VCD Face Refine and the library's refine_face with the same VAE and sampler stand-ins: the same windows,
    crop clip, noise mask, paste mask and frames, pixel for pixel (Haar-detected or wired masks, and a face that
    reaches outside its window: both refine only the part inside and warn)."""
    options = dict(crop_factor=2.0, guide_size=128, max_size=256, feather=5, crop_mode=crop_mode)
    mask = None
    if wired_mask == "box":
        mask = torch.zeros(astronaut_frames.shape[:3])
        mask[:, 30:110, 100:170] = 1
    elif wired_mask:
        astronaut_frames = astronaut_frames[:, 96:160].contiguous()  # 64 x 256 px: windows are at most 64 px
        mask = torch.zeros(astronaut_frames.shape[:3])
        mask[:, 8:56, 4:250] = 1
    node_face = parts["nodes"].face
    monkeypatch.setattr(node_face, "denoise_clip",
                        lambda model, positive, negative, latent, settings, noise_mask: fake_sampling(latent, noise_mask))
    with torch.inference_mode():
        executed = node_face.VCDFaceRefine.execute(
            parts["model"], parts["positive"], parts["negative"], FakeVAE(), astronaut_frames, denoise=0.8, steps=2,
            cfg=8.0, sampler_name="euler", scheduler="normal", seed=0, gamma=0.0, detector="opencv_haar",
            mask=mask, **options)
    node = executed.result

    monkeypatch.setattr(library_face, "encode_frames", lambda tiny_models, frames: FakeVAE.encode(frames))
    monkeypatch.setattr(library_face, "decode_latents", lambda tiny_models, latents: FakeVAE.decode(latents))
    monkeypatch.setattr(library_face, "conditioning", lambda *args: (None, None))
    monkeypatch.setattr(library_face, "sample_clip", lambda tiny_models, shape, positive, negative, settings, latents,
                        noise_mask, callback: fake_sampling(latents, noise_mask))
    ours = vcd_diffusers.refine_face(tiny_models, astronaut_frames, "a photo", masks=mask, **options)
    assert ours.windows is not None and ours.paste_mask.sum() > 0
    for got, want in zip((ours.frames, ours.paste_mask, ours.crop_before, ours.crop_after), node[:4]):
        assert torch.equal(got, want)
    assert not torch.equal(ours.frames, astronaut_frames)
    outside = "reaches outside its crop window in frame(s) [0, 1, 2, 3]"
    assert (outside in (ours.warning or "")) == (outside in str(executed.ui.as_dict() if executed.ui else "")) \
        == (wired_mask == "wider than its window")


@pytest.fixture()
def embeddings_dir(inproc, tmp_path, monkeypatch):
    import folder_paths

    folder = tmp_path / "embeddings"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings", ([str(folder)], folder_paths.supported_pt_extensions))
    return folder


def test_identity_training_matches_the_node_on_the_same_checkpoint(inproc, tiny_models, embeddings_dir):
    """VCD Train Identity on ComfyUI's tiny MODEL / CLIP / VAE and the library on the checkpoint ComfyUI saved from
    them: the same views, loss per step and vectors (to float rounding), and the same request in the file's
    metadata (settings, photos hash, base model hash), so the node would reuse the library's file."""
    photo = torch.from_numpy(skimage.data.astronaut().copy()).float() / 255
    photos = torch.stack([photo, photo.flip(1), photo.roll(40, dims=0)])
    masks = torch.zeros(photos.shape[:3])
    masks[:, 40:300, 120:380] = 1
    masks[2] = 0  # an empty mask: both leave that photo out
    settings = dict(class_word="woman", tokens=4, steps=3, learning_rate=1e-2, batch_size=2, seed=0, augment=True,
                    resolution=64)
    with torch.inference_mode():
        node = inproc.pack.nodes.identity.VCDTrainIdentity.execute(
            inproc.tiny.tiny_model(0), inproc.tiny.tiny_clip(0), inproc.tiny.tiny_vae(0), photos, name="astro",
            overwrite=False, masks=masks, **settings).result[2]
    config = identity.TrainConfig(steps=3, learning_rate=1e-2, batch_size=2, seed=0)
    ours = vcd_diffusers.train_identity(tiny_models, list(photos), list(masks), name="astro", class_word="woman", tokens=4,
                                        config=config, resolution=64, augment=True)
    assert ours.left_out == [2]
    torch.testing.assert_close(ours.embedding.vectors, node.vectors, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours.embedding.vectors, identity.init_vectors(tiny_models.text.word_vector, 4))
    ours_meta, node_meta = dict(ours.embedding.metadata), dict(node.metadata)
    torch.testing.assert_close(torch.tensor(json.loads(ours_meta.pop("losses"))),
                               torch.tensor(json.loads(node_meta.pop("losses"))), atol=1e-5, rtol=1e-4)
    assert ours_meta == node_meta and ours_meta["base_model_hash"] and ours_meta["photos_hash"]
    assert vcd_diffusers.base_model_hash(tiny_models) == inproc.pack.nodes.comfy_models.base_fingerprint(
        inproc.tiny.tiny_model(0), inproc.tiny.tiny_clip(0))


def test_model_upscale_is_comfyuis_upscale_with_model(inproc, tmp_path, monkeypatch):
    """The library's upscaler and ComfyUI's Load Upscale Model + Upscale Image (using Model) on the same seeded
    ESRGAN file: the same frames (a frame under ComfyUI's 512 px tile is one tile; its blend weights cancel)."""
    import folder_paths
    from comfy_extras import nodes_upscale_model

    from devtools.tiny_diffusers import save_tiny_esrgan
    from vcd_diffusers.upscaler import load_upscale_model, upscale_with_model

    path = save_tiny_esrgan(tmp_path / "upscale_models" / "tiny_esrgan.pth")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "upscale_models", ([str(path.parent)], {".pth"}))
    frames = torch.rand(3, 24, 40, 3, generator=torch.Generator().manual_seed(0))
    loaded = nodes_upscale_model.UpscaleModelLoader.execute("tiny_esrgan.pth")
    node = nodes_upscale_model.ImageUpscaleWithModel.execute(loaded.result[0], frames).result[0]
    model = load_upscale_model(path)
    ours = upscale_with_model(model, frames)
    assert model.scale == 4 and ours.shape == node.shape == (3, 96, 160, 3)
    torch.testing.assert_close(ours, node, atol=1e-5, rtol=0)
    assert ours.std() > 0.01 and not torch.allclose(ours[0], ours[1], atol=1e-3)  # the frames matter
