"""vcd_diffusers.loading: the files users have, offline. A checkpoint ComfyUI saved (original single-file layout)
loads into diffusers with the same weights (same outputs as ComfyUI's models), as .safetensors and as .ckpt; a
motion module in AnimateDiff's layout round-trips exactly; the shipped configs have SD1.5's and mm_sd_v15_v2's
layouts; embeddings of all three kinds load; bad files are refused naming the file and what to do."""

import json
from pathlib import Path

import pytest
import torch

from devtools import tiny_diffusers
from vcd_core import embedding_io
from vcd_diffusers import loading, pipeline


# one torch thread (conftest); diffusers 0.42 hands numpy 2 a tensor in its schedulers (their warning)
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

def test_a_checkpoint_comfyui_saved_gives_comfyuis_outputs(inproc, tiny_models):
    unet, clip, vae = inproc.tiny.tiny_model(0).model.diffusion_model, inproc.tiny.tiny_clip(0), inproc.tiny.tiny_vae(0)
    g = torch.Generator().manual_seed(0)
    x, t, context = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([900.0, 20.0]), torch.randn(2, 77, 768, generator=g)
    pixels = torch.rand(2, 64, 64, 3, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(tiny_models.unet(x, t, encoder_hidden_states=context).sample,
                                   unet(x, timesteps=t, context=context), atol=2e-5, rtol=1e-4)
        for prompt in ("a photo of a woman", "close up of a man in a red coat, 4k"):
            torch.testing.assert_close(tiny_models.text(torch.zeros(0, 768), [prompt]),
                                       clip.encode_from_tokens(clip.tokenize(prompt)), atol=2e-5, rtol=1e-4)
        latents = vae.encode(pixels)
        torch.testing.assert_close(pipeline.encode_frames(tiny_models, pixels), latents * 0.18215, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(pipeline.decode_latents(tiny_models, latents * 0.18215), vae.decode(latents).float(),
                                   atol=2e-5, rtol=1e-4)


def test_a_ckpt_file_loads_the_same_weights(tiny_files, tiny_models):
    again = loading.load_models(tiny_files.checkpoint_ckpt, None, tiny_files.config_dir)
    for ours, theirs in ((again.unet, tiny_models.unet), (again.vae, tiny_models.vae),
                         (again.text.model, tiny_models.text.model)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_motion_module_round_trips_in_animatediffs_layout(tiny_files, tiny_models):
    import safetensors.torch

    written = safetensors.torch.load_file(str(tiny_files.motion_module))
    assert all(".temporal_transformer." in k for k in written)
    assert any(".attention_blocks.1.pos_encoder.pe" in k for k in written) and any(".ff_norm." in k for k in written)
    assert all(tiny_diffusers.sinusoid_matches(v) for k, v in written.items() if k.endswith("pos_encoder.pe"))
    seeded = tiny_diffusers.seeded_motion_adapter().state_dict()
    loaded = tiny_models.motion_adapter.state_dict()
    assert loaded.keys() == seeded.keys() and all(torch.equal(loaded[k], seeded[k]) for k in loaded)
    assert tiny_models.max_frames == 32


def test_a_v1_motion_module_has_no_mid_block_and_24_positions(tiny_files, tmp_path):
    import safetensors.torch

    written = safetensors.torch.load_file(str(tiny_files.motion_module))
    v1 = {k: (v[:, :24].contiguous() if k.endswith("pos_encoder.pe") else v) for k, v in written.items()
          if not k.startswith("mid_block.")}
    safetensors.torch.save_file(v1, str(tmp_path / "mm_v1.safetensors"))
    adapter = loading.load_motion_adapter(tmp_path / "mm_v1.safetensors", tiny_files.config_dir)
    assert adapter.config.use_motion_mid_block is False and adapter.config.motion_max_seq_length == 24


def test_shipped_configs_have_sd15s_and_mm_sd_v15_v2s_layouts(inproc):
    """Full-size models on the meta device (no memory): ComfyUI's SD1.5 UNet and VAE saved in the original layout
    convert to exactly the tensors of the shipped configs' models; the shipped motion adapter written back in
    AnimateDiff's layout is mm_sd_v15_v2's list of tensors (devtools.ade_models, the layout AnimateDiff-Evolved
    reads); the text config is CLIP-L's as ComfyUI ships it."""
    import comfy.supported_models
    from comfy.ldm.models.autoencoder import AutoencoderKL as ComfyVAE
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from devtools import ade_models

    configs = {name: json.loads(loading.config_file(None, name).read_text()) for name in
               ("unet", "vae", "text_encoder", "motion_adapter")}
    with torch.device("meta"):
        sd15 = comfy.supported_models.SD15(dict(ade_models.SD15_UNET))
        original = sd15.process_unet_state_dict_for_saving(sd15.get_model({}).diffusion_model.state_dict())
        original.update(sd15.process_vae_state_dict_for_saving(
            ComfyVAE(ddconfig=dict(ade_models.SD15_VAE), embed_dim=4).state_dict()))
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items()}

    assert shapes(convert_ldm_unet_checkpoint(original, unet.config)) == shapes(unet.state_dict())
    assert shapes(convert_ldm_vae_checkpoint(original, vae.config)) == shapes(vae.state_dict())
    assert tiny_diffusers.full_size_motion_layout(configs["motion_adapter"]) == ade_models.motion_module_shapes(2)
    import comfy.sd1_clip

    clip_l = json.loads((Path(comfy.sd1_clip.__file__).parent / "sd1_clip_config.json").read_text())
    assert {k: configs["text_encoder"][k] for k in loading.TEXT_SIZES + ("num_attention_heads",)} == \
        {k: clip_l[k] for k in loading.TEXT_SIZES + ("num_attention_heads",)}


def test_the_shipped_tokenizer_splits_prompts_as_comfyui_does(inproc, tiny_models):
    clip = inproc.tiny.tiny_clip(0)
    for prompt in ("a photo of a woman", "Portrait of an astronaut, smiling, 4k", "ktn pll ucd"):
        ours = tiny_models.text.tokenize(prompt, 0).tolist()
        theirs = [token for token, _ in clip.tokenize(prompt)["l"][0]]
        assert ours == theirs


@pytest.mark.host_independent
def test_identity_embeddings_of_every_kind_load(tmp_path, shared_dir):
    vectors = torch.randn(4, 768, generator=torch.Generator().manual_seed(1))
    ours = embedding_io.write_embedding(tmp_path, "ours", embedding_io.Embedding(vectors, {"class_word": "woman"}))
    torch.save({"string_to_param": {"*": vectors}, "name": "a1111"}, tmp_path / "a1111.pt")
    for path in (ours, tmp_path / "a1111.pt"):
        assert torch.equal(loading.load_identity(path, 768).vectors, vectors)
    authors = shared_dir / "data" / "magic-me-embeddings" / "mona.pt"
    loaded = loading.load_identity(authors, 768)
    assert loaded.tokens == 4 and torch.equal(loaded.vectors, embedding_io.read_embedding(authors).vectors)


@pytest.mark.host_independent
def test_bad_identity_files_are_refused_naming_them(tmp_path):
    wide = embedding_io.write_embedding(tmp_path, "sd2_face", embedding_io.Embedding(torch.zeros(4, 1024)))
    with pytest.raises(ValueError, match=r"sd2_face.safetensors holds 4 vectors 1024 wide, but this checkpoint's "
                                         r"text encoder takes 768-wide tokens"):
        loading.load_identity(wide, 768)
    with pytest.raises(FileNotFoundError, match=r"identity: no embedding at .*missing.pt; train one with `vcd train-id`"):
        loading.load_identity(tmp_path / "missing.pt", 768)


def test_a_missing_config_file_is_named_with_where_it_belongs(tiny_files, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_files.config_dir, tmp_path / "configs")
    (broken / "unet" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"unet config: .*configs/unet/config.json is missing. Put the "
                                                r"diffusers unet/config.json there \(the package ships SD1.5's as "):
        loading.load_models(tiny_files.checkpoint, None, broken)
    (broken / "tokenizer" / "merges.txt").unlink()
    shutil.copy(tiny_files.config_dir / "unet" / "config.json", broken / "unet" / "config.json")
    with pytest.raises(FileNotFoundError, match=r"tokenizer merges config: .*tokenizer/merges.txt is missing"):
        loading.load_models(tiny_files.checkpoint, None, broken)


def write_tensors(path, tensors):
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("case, make, message", [
    ("missing", lambda tmp: tmp / "nothing_here.safetensors", r"checkpoint: no file at .*nothing_here.safetensors"),
    ("sdxl", lambda tmp: write_tensors(tmp / "xl.safetensors", {"conditioner.embedders.1.model.x": torch.zeros(1)}),
     r"xl.safetensors looks like an SDXL checkpoint; vcd needs an SD1.5 checkpoint"),
    ("lora", lambda tmp: write_tensors(tmp / "lora.safetensors", {"lora_unet_down.alpha": torch.zeros(1)}),
     r"lora.safetensors holds no SD1.5 UNet \('model.diffusion_model.\*' keys\)"),
    ("not safetensors", lambda tmp: (tmp / "junk.safetensors").write_bytes(b"not a file") and tmp / "junk.safetensors",
     r"checkpoint: junk.safetensors is not a readable .safetensors file"),
    ("code in pickle", lambda tmp: torch.save({"state_dict": {}, "hook": print}, tmp / "evil.ckpt") or tmp / "evil.ckpt",
     r"checkpoint: evil.ckpt holds more than tensors, so it is not loaded \(a pickle like that can run code\)\. "
     r"Copy it again, or use a .safetensors version of it\.$"),
    ("other suffix", lambda tmp: (tmp / "model.onnx").write_bytes(b"x") and tmp / "model.onnx",
     r"model.onnx is neither .safetensors nor one of .ckpt"),
])
def test_bad_checkpoints_are_refused_naming_the_file(tiny_files, tmp_path, case, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        loading.load_models(make(tmp_path), None, tiny_files.config_dir)


def test_a_checkpoint_of_another_size_does_not_fit_the_configs(tiny_files):
    """The tiny checkpoint with the shipped (full SD1.5) configs: refused, never half-loaded."""
    with pytest.raises(ValueError, match=r"unet: tiny_sd15.safetensors does not fit the unet config \(\d+ tensors "
                                         r"missing .*of another shape"):
        loading.load_models(tiny_files.checkpoint)


def test_a_text_encoder_of_another_size_is_refused(tiny_files, tmp_path):
    import shutil

    configs = shutil.copytree(tiny_files.config_dir, tmp_path / "configs")
    text = configs / "text_encoder" / "config.json"
    text.write_text(json.dumps({**json.loads(text.read_text()), "num_hidden_layers": 12}))
    with pytest.raises(ValueError, match=r"text_encoder: tiny_sd15.safetensors's CLIP is \{.*'num_hidden_layers': 2, "
                                         r".*the text_encoder config says \{.*'num_hidden_layers': 12"):
        loading.load_models(tiny_files.checkpoint, None, configs)


def test_a_file_that_is_no_motion_module_is_refused(tiny_files, tmp_path):
    with pytest.raises(ValueError, match=r"motion module: tiny_sd15.safetensors holds no '\*.motion_modules.\*' tensors"):
        loading.load_motion_adapter(tiny_files.checkpoint, tiny_files.config_dir)
    shipped = tiny_diffusers.motion_module_state_dict(tiny_diffusers.seeded_motion_adapter())
    cut = write_tensors(tmp_path / "cut.safetensors", {k: v for k, v in shipped.items() if "up_blocks.1" not in k})
    with pytest.raises(ValueError, match=r"motion_adapter: cut.safetensors does not fit the motion_adapter config"):
        loading.load_motion_adapter(cut, tiny_files.config_dir)


def test_video_needs_a_motion_module(tiny_files):
    tiny_models = loading.load_models(tiny_files.checkpoint, None, tiny_files.config_dir)
    with pytest.raises(ValueError, match=r"video needs an AnimateDiff motion module .* pass it with --motion-module"):
        pipeline.generate(tiny_models, "a photo", frames=2, height=64, width=64)
