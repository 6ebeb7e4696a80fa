"""README promises checked in-process on the tiny SD1.5 model: what the refine nodes hand the sampler,
the schedule they read, a wired face MASK, no network, and the refusal of unsafe or broken files."""

from __future__ import annotations

import pickle
import socket

import pytest
import skimage.data
import torch


@pytest.fixture(scope="module")
def frames():
    photo = torch.from_numpy(skimage.data.astronaut()[:256, 96:352].copy()).float() / 255
    return torch.stack([photo.roll(2 * i, dims=1) for i in range(6)])


@pytest.fixture()
def sampler_calls(monkeypatch):
    """Every comfy.sample.sample_custom call (it still samples): its noise, latent and sigmas."""
    import comfy.sample

    calls, real = [], comfy.sample.sample_custom

    def spy(model, noise, cfg, sampler, sigmas, positive, negative, latent, **kwargs):
        calls.append(dict(noise=noise.clone(), latent=latent.clone(), sigmas=sigmas.clone(), model=model))
        return real(model, noise, cfg, sampler, sigmas, positive, negative, latent, **kwargs)

    monkeypatch.setattr(comfy.sample, "sample_custom", spy)
    return calls


def lag_correlation(noise: torch.Tensor, lag: int) -> float:
    flat = noise.reshape(noise.shape[0], -1)
    return float(torch.nn.functional.cosine_similarity(flat[:-lag], flat[lag:], dim=1).mean())


def test_face_refine_samples_every_frame_in_one_call(face_refine, frames, sampler_calls):
    face_refine(frames)
    [call] = sampler_calls
    assert call["latent"].shape[0] == frames.shape[0]


@pytest.mark.parametrize("gamma", [0.0, 0.8])
def test_face_refine_noise_follows_gamma(face_refine, frames, sampler_calls, gamma):
    face_refine(frames, gamma=gamma)
    noise = sampler_calls[0]["noise"]
    assert lag_correlation(noise, 1) == pytest.approx(gamma, abs=0.12)
    assert lag_correlation(noise, 2) == pytest.approx(gamma**2, abs=0.12)


def test_face_refine_with_a_wired_mask_refines_only_that_mask(face_refine, frames):
    mask = torch.zeros(frames.shape[:3])
    mask[:, 150:200, 150:200] = 1  # a "face" where the detector would not look: lower right
    image, paste_mask, _, _, _ = face_refine(frames, mask=mask, feather=0)
    assert torch.equal(paste_mask > 0, mask > 0)
    changed = (image - frames).abs().amax(dim=-1) > 0
    assert changed.any() and not changed[mask == 0].any()


def test_refine_sigmas_follow_an_object_patched_model_sampling(parts, frames, sampler_calls, face_refine):
    """AnimateDiff-Evolved swaps model_sampling as an object patch; the refine must sample on that schedule."""
    import comfy.model_sampling
    from vcd.nodes.sampling import partial_sigmas

    class Discrete(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass

    patched = parts["model"].clone()
    sampling = Discrete(None)
    sampling._register_schedule(beta_schedule="sqrt_linear", linear_start=0.00085, linear_end=0.012)
    patched.add_object_patch("model_sampling", sampling)
    face_refine(frames, model=patched, denoise=0.8)
    used = sampler_calls[0]["sigmas"]
    plain = partial_sigmas(parts["model"], "normal", 2, 0.8)
    assert used[0] == pytest.approx(float(partial_sigmas(patched, "normal", 2, 0.8)[0]))
    assert used[0] > plain[0] * 1.3  # sqrt_linear's sigma_max is 25.1 vs SD1.5's 14.6


def test_tiled_refine_shows_the_model_one_tile_at_a_time(parts):
    seen = []
    model = parts["model"].clone()

    def unet_wrapper(apply_model, args):
        seen.append(tuple(args["input"].shape))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(unet_wrapper)
    image = torch.rand(3, 128, 192, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = parts["nodes"].tiled.VCDTiledRefine.execute(
            model, parts["positive"], parts["negative"], parts["vae"], image, tile_size=64, overlap=16,
            tile_batch=1, denoise=0.5, gamma=0.1, **parts["sampling"]).result[0]
    assert out.shape == image.shape
    assert seen and all(shape[-2:] == (8, 8) for shape in seen), set(seen)
    # 16x24 latent, 8-latent tiles with 2 overlap: 3 x 4 tiles; cond and uncond may share a call.
    assert len(seen) % 12 == 0


def test_nodes_reach_no_network(face_refine, frames, monkeypatch):
    def refuse(self, address, *args):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            raise AssertionError(f"network access to {address}")
        return real_connect(self, address, *args)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a[0]))
    image, _, _, _, _ = face_refine(frames[:2])
    assert torch.isfinite(image).all()


class Exploit:
    def __reduce__(self):
        return (print, ("this ran code from a pickle",))


@pytest.mark.parametrize("kind", ["malicious_pickle", "empty_safetensors", "truncated_safetensors", "not_a_file_format"])
def test_unsafe_or_broken_embedding_files_are_refused_naming_the_file(tmp_path, kind, capsys):
    from vcd_core import embedding_io

    path = tmp_path / ("bad.pt" if kind in ("malicious_pickle", "not_a_file_format") else "bad.safetensors")
    if kind == "malicious_pickle":
        path.write_bytes(pickle.dumps({"string_to_param": {"*": Exploit()}}))
    elif kind == "empty_safetensors":
        path.write_bytes(b"")
    elif kind == "truncated_safetensors":
        embedding_io.write_embedding(tmp_path, "good", embedding_io.Embedding(torch.zeros(4, 768)))
        path.write_bytes((tmp_path / "good.safetensors").read_bytes()[:100])
    else:
        path.write_bytes(b"hello, not torch")
    with pytest.raises(ValueError) as refused:
        embedding_io.read_embedding(path)
    message = str(refused.value)
    assert "bad." in message and "weights_only" not in message and "Traceback" not in message
    assert "this ran code" not in capsys.readouterr().out


@pytest.mark.parametrize("vectors", [torch.zeros(0, 768), torch.full((4, 768), float("nan"))])
def test_empty_or_nan_embeddings_are_refused(tmp_path, vectors):
    from safetensors.torch import save_file

    from vcd_core import embedding_io

    save_file({"emb_params": vectors}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match="odd.safetensors"):
        embedding_io.read_embedding(tmp_path / "odd.safetensors")


def test_load_identity_shows_its_metadata(inproc, tmp_path, monkeypatch):
    import folder_paths

    from vcd_core import embedding_io

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "embeddings", ([str(tmp_path)], {".safetensors", ".pt"}))
    metadata = {"class_word": "woman", "steps": "200", "base_model": "abc123"}
    embedding_io.write_embedding(tmp_path, "meta_case", embedding_io.Embedding(torch.randn(4, 768), metadata))
    output = inproc.pack.nodes.identity.VCDLoadIdentity.execute("meta_case.safetensors", "")
    text = " ".join(str(v) for v in output.ui.as_dict()["text"])
    assert output.result[0] == "embedding:meta_case woman"
    for key, value in metadata.items():
        assert f"{key}: {value}" in text
    assert "4 tokens x 768" in text


def test_refine_sampling_sends_live_previews(parts, monkeypatch):
    import comfy.utils
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod
    from vcd.nodes.sampling import SamplingSettings, denoise_clip

    updates = []
    monkeypatch.setattr(latent_preview.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: updates.append(preview))
    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings(denoise=0.8, gamma=0.0, **parts["sampling"])
    with torch.inference_mode():
        denoise_clip(parts["model"], parts["positive"], parts["negative"], latent, settings)
    assert len(updates) == parts["sampling"]["steps"] and all(preview is not None for preview in updates)

