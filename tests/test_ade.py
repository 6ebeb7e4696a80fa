"""The pack under the real AnimateDiff-Evolved (../shared/vendor) on a real server, on a seeded random
full-width SD1.5 checkpoint and motion modules (devtools.ade_models): the motion module runs inside our
sampling calls, our noise passes through ADE (or a warning says why not), context windows and tiles."""

from __future__ import annotations

import json

import pytest
import safetensors
import safetensors.torch
import skimage.data
import torch
from PIL import Image

from devtools import graphs
from devtools.host import ade_available
from devtools.node_texts import NodeTexts
from vcd_core import noise_prior

pytestmark = pytest.mark.skipif(not ade_available(), reason="needs the real AnimateDiff-Evolved in ../shared/vendor")

SAMPLING = dict(steps=1, cfg=1.0, sampler_name="euler", scheduler="normal", seed=7)
CONTEXT = {"context_length": 8, "context_overlap": 2}
SHORT_CONTEXT = {"context_length": 4, "context_overlap": 1}  # 2 windows over 6 frames: fewer UNet calls than 8/2
TEMPORAL_LAYERS = {"v2": 21, "v1": 20}  # v1 has no middle-block module
VAE = ["tiny", 2]
FACE = dict(crop_factor=3.0, guide_size=64, max_size=64, denoise=0.8, gamma=0.0, feather=5, crop_mode="union",
            detector="opencv_haar")


@pytest.fixture(scope="module")
def models(ade_models) -> dict[str, str]:
    return {"checkpoint": ade_models["checkpoint"].name, "v2": ade_models["motion_v2"].name,
            "v1": ade_models["motion_v1"].name}


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def ade_model(models: dict, version: str = "v2", *, context: dict | None = None, settings: dict | None = None,
              probe: str | None = None, skip_sampling: bool = False) -> tuple[dict, list]:
    """Checkpoint -> Use Evolved Sampling with a motion module (+ context options, sample settings)
    [-> sampling probe], two prompts and a VAE (``VAE``); returns the nodes and the MODEL link to sample with.

    The VAE is the test pack's tiny SD1.5-format one: the full-width VAE would cost more CPU time than the
    sampling these tests are about (the shipped graphs run with the checkpoint's own)."""
    graph = {
        "ckpt": node("CheckpointLoaderSimple", ckpt_name=models["checkpoint"]),
        "tiny": node("VCDTestTinyCheckpoint", seed=0),
        "mm": node("ADE_LoadAnimateDiffModel", model_name=models[version]),
        "apply": node("ADE_ApplyAnimateDiffModelSimple", motion_model=["mm", 0]),
        "ade": node("ADE_UseEvolvedSampling", model=["ckpt", 0], beta_schedule="autoselect", m_models=["apply", 0]),
        "pos": node("CLIPTextEncode", clip=["ckpt", 1], text="a photo of a woman smiling"),
        "neg": node("CLIPTextEncode", clip=["ckpt", 1], text=""),
    }
    if context:
        graph["ctx"] = node("ADE_StandardStaticContextOptions", **context)
        graph["ade"]["inputs"]["context_options"] = ["ctx", 0]
    if settings:
        graph["ss"] = node("ADE_AnimateDiffSamplingSettings", **{"batch_offset": 0, "noise_type": "default",
                                                                  "seed_gen": "comfy", "seed_offset": 0, **settings})
        graph["ade"]["inputs"]["sample_settings"] = ["ss", 0]
    model = ["ade", 0]
    if probe:
        graph[f"probe_{probe}"] = node("VCDTestSamplingProbe", model=model, tag=probe, skip_sampling=skip_sampling)
        model = [f"probe_{probe}", 0]
    return graph, model


def with_probe(graph: dict, tag: str, skip_sampling: bool = False) -> dict:
    """A shipped graph with a sampling probe right after its Use Evolved Sampling (every MODEL user rewired)."""
    [ade] = [nid for nid, n in graph.items() if n["class_type"] == "ADE_UseEvolvedSampling"]
    for n in graph.values():
        for name, value in n["inputs"].items():
            if value == [ade, 0]:
                n["inputs"][name] = ["probe", 0]
    graph["probe"] = node("VCDTestSamplingProbe", model=[ade, 0], tag=tag, skip_sampling=skip_sampling)
    return graph


def records(host, tag: str) -> list[dict]:
    """The sampling calls the probe ``tag`` recorded, in order (record + the noise it saw)."""
    folder = host.output_dir / "vcd_probe"
    found = []
    for index in range(len(list(folder.glob(f"{tag}-*.safetensors")))):
        with safetensors.safe_open(str(folder / f"{tag}-{index}.safetensors"), "pt") as f:
            found.append({**json.loads(f.metadata()["record"]), "noise": f.get_tensor("noise")})
    return found


def saved(host, name: str) -> torch.Tensor:
    return safetensors.torch.load_file(str(host.output_dir / "vcd_tensors" / f"{name}.safetensors"))["images"]


def write_clip(host, name: str, frames: int, size: tuple[int, int] | None = None) -> str:
    """An animated lossless WEBP in the input folder: the astronaut's face drifting right one pixel a frame."""
    photo = Image.fromarray(skimage.data.astronaut()[:256, 96:352])
    clip = [photo.rotate(0, translate=(i, 0)) for i in range(frames)]
    if size:
        clip = [frame.resize(size, Image.BILINEAR) for frame in clip]
    clip[0].save(host.input_dir / name, save_all=True, append_images=clip[1:], lossless=True)
    return name


def run_ok(host, graph: dict):
    result = host.run(graph)
    assert result.ok, result.describe()
    return result


def assert_temporal_layers_ran(record: dict, version: str, video_length: int, unet_batch: int) -> None:
    """Every UNet call of the sampling call ran every temporal layer, on whole clips of ``video_length``."""
    unet, temporal = record["unet_batches"], record["temporal_calls"]
    assert unet and set(unet) == {unet_batch}, unet
    assert len(temporal) == TEMPORAL_LAYERS[version] * len(unet)
    assert {length for _, length, _ in temporal} == {video_length}
    # v1 modules run with ADE's GroupNorm over all frames of a clip; v2 without it.
    assert {swapped for _, _, swapped in temporal} == {version == "v1"}


# --- T2V: the shipped graph, the motion module inside the sampling call, our noise through ADE ---

def t2v_to_latent(models: dict, prefix: str) -> dict:
    """The shipped T2V graph (ADE kept, 8 frames, 1 step) saving its sampled LATENT instead of decoding it."""
    graph = graphs.shrink_keeping_ade(graphs.load_api("t2v_vcd"), models["checkpoint"], models["v2"], frames=8)
    for nid in [nid for nid, n in graph.items() if n["class_type"] in ("VAEDecode", "CreateVideo", "SaveVideo")]:
        del graph[nid]
    graph["save"] = node("SaveLatent", samples=["12", 0], filename_prefix=f"vcd_ade/{prefix}")
    return graph


def latent(host, prefix: str) -> torch.Tensor:
    [path] = host.output_dir.glob(f"vcd_ade/{prefix}_0*.latent")  # {prefix}_00001_.latent
    return safetensors.torch.load_file(str(path))["latent_tensor"]


def test_t2v_noise_reaches_the_sampler_unchanged_and_the_motion_module_runs_inside(host, models):
    with NodeTexts(host.url) as texts:
        run_ok(host, with_probe(t2v_to_latent(models, "t2v"), "t2v_default"))
    [call] = records(host, "t2v_default")
    expected = noise_prior.correlated_noise_like(torch.zeros(8, 4, 8, 8), 0.1, 42)
    assert torch.equal(call["noise"], expected)
    assert_temporal_layers_ran(call, "v2", video_length=8, unet_batch=16)  # cfg 8: cond + uncond frames
    assert texts.of("8") == []  # default sample settings: no warning

    # The same graph and ADE beta schedule without the motion module: the temporal layers change the result.
    still = t2v_to_latent(models, "t2v_no_motion")
    del still["4"]["inputs"]["m_models"]
    still["4"]["inputs"]["beta_schedule"] = "sqrt_linear (AnimateDiff)"  # what autoselect picks for the module
    run_ok(host, still)
    moving, fixed = latent(host, "t2v"), latent(host, "t2v_no_motion")
    assert moving.shape == fixed.shape == (8, 4, 8, 8) and torch.isfinite(moving).all()
    assert (moving - fixed).abs().mean() > 0.1 * fixed.abs().mean()


def test_non_default_sample_settings_replace_the_noise_and_the_artist_is_warned(host, models):
    graph = t2v_to_latent(models, "t2v_offset")
    graph["ss"] = node("ADE_AnimateDiffSamplingSettings", batch_offset=0, noise_type="default", seed_gen="comfy",
                       seed_offset=1)
    graph["4"]["inputs"]["sample_settings"] = ["ss", 0]
    with NodeTexts(host.url) as texts:
        run_ok(host, with_probe(graph, "t2v_offset", skip_sampling=True))
    [call] = records(host, "t2v_offset")
    # ADE draws its own noise from seed + seed_offset (comfy's generator): the 3D prior is gone.
    assert torch.equal(call["noise"], torch.randn((8, 4, 8, 8), generator=torch.Generator().manual_seed(43)))
    [warning] = texts.of("8")
    assert "seed_offset=1 replaces it" in warning and "gamma 0.1" in warning
    assert "VCD 3D Gaussian Noise: AnimateDiff-Evolved's Sample Settings" in host.log_tail(200_000)


@pytest.mark.parametrize("kind", ["VCDFaceRefine", "VCDTiledRefine"])
def test_refine_nodes_warn_when_sample_settings_discard_their_prior(host, models, kind):
    graph, model = ade_model(models, settings={"seed_offset": 1}, probe=f"warn_{kind}", skip_sampling=True)
    graph["clip"] = node("LoadImage", image=write_clip(host, "warn.webp", 2, (64, 64)))
    inputs = dict(model=model, positive=["pos", 0], negative=["neg", 0], vae=VAE, image=["clip", 0],
                  **SAMPLING, gamma=0.1)
    if kind == "VCDFaceRefine":
        graph["full"] = node("SolidMask", value=1.0, width=64, height=64)
        graph["refine"] = node(kind, **{**FACE, **inputs, "mask": ["full", 0]})
    else:
        graph["refine"] = node(kind, **inputs, denoise=0.2, tile_size=64, overlap=16, tile_batch=1)
    graph["save"] = node("VCDTestSaveImageTensor", images=["refine", 0], name=f"warn_{kind}")
    with NodeTexts(host.url) as texts:
        run_ok(host, graph)
    [warning] = texts.of("refine")
    assert warning.startswith(("VCD Face Refine:", "VCD Tiled Refine:")) and "seed_offset=1" in warning


# --- Face Refine and Tiled Refine on an ADE MODEL ---

def face_refine_graph(host, models, version: str, frames: int, *, context: dict | None, tag: str) -> dict:
    graph, model = ade_model(models, version, context=context, probe=tag)
    graph["clip"] = node("LoadImage", image=write_clip(host, f"face_{frames}.webp", frames))
    graph["face"] = node("VCDFaceRefine", model=model, positive=["pos", 0], negative=["neg", 0], vae=VAE,
                         image=["clip", 0], **FACE, **SAMPLING)
    graph["save"] = node("VCDTestSaveImageTensor", images=["face", 0], name=tag)
    return graph


@pytest.mark.parametrize("version,frames", [("v2", 34), ("v1", 16)])
def test_face_refine_samples_the_clip_once_with_context_windows(host, models, version, frames):
    """34 frames are more than the v2 module's 32 positions: they run with windows of 8 (v1: 16 frames)."""
    tag = f"face{frames}_{version}"
    run_ok(host, face_refine_graph(host, models, version, frames, context=CONTEXT, tag=tag))
    [call] = records(host, tag)  # ONE sampling call for the whole clip
    assert call["frames"] == frames
    assert_temporal_layers_ran(call, version, video_length=8, unet_batch=8)  # windows of 8 frames (cfg 1)
    assert len(call["unet_batches"]) >= -(-(frames - 2) // 6)  # windows of 8 overlapping by 2 cover the clip
    assert saved(host, tag).shape == (frames, 256, 256, 3)


def test_a_clip_longer_than_the_motion_module_without_windows_gets_ades_error(host, models):
    result = host.run(face_refine_graph(host, models, "v2", 34, context=None, tag="face34_none"))
    error = result.execution_error
    assert not result.ok and error is not None and error["node_type"] == "VCDFaceRefine", result.describe()
    assert "upper limit of 32 frames, but received 34 latents" in error["exception_message"]
    assert records(host, "face34_none") == []


def tiled_refine(model: list, tile_batch: int, tile_size: int = 64, overlap: int = 16) -> dict:
    return node("VCDTiledRefine", model=model, positive=["pos", 0], negative=["neg", 0], vae=VAE,
                image=["clip", 0], tile_size=tile_size, overlap=overlap, denoise=0.5, gamma=0.1,
                tile_batch=tile_batch, **SAMPLING)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_tile_batch_two_equals_one_under_context_windows(host, models, version):
    graph, _ = ade_model(models, version, context=SHORT_CONTEXT)
    graph["clip"] = node("LoadImage", image=write_clip(host, "tiles.webp", 6, (80, 64)))  # 2 tiles of 64, 2 windows
    for tile_batch in (1, 2):
        tag = f"tiles_{version}_{tile_batch}"
        graph[f"probe_{tag}"] = node("VCDTestSamplingProbe", model=["ade", 0], tag=tag, skip_sampling=False)
        graph[f"tiled{tile_batch}"] = tiled_refine([f"probe_{tag}", 0], tile_batch)
        graph[f"save{tile_batch}"] = node("VCDTestSaveImageTensor", images=[f"tiled{tile_batch}", 0], name=tag)
    run_ok(host, graph)
    [one] = records(host, f"tiles_{version}_1")
    [two] = records(host, f"tiles_{version}_2")
    assert_temporal_layers_ran(one, version, video_length=4, unet_batch=4)  # one tile of one window per call
    assert_temporal_layers_ran(two, version, video_length=4, unet_batch=8)  # both tiles of a window per call
    assert len(one["unet_batches"]) == 2 * len(two["unet_batches"]) == 4
    a, b = saved(host, f"tiles_{version}_1"), saved(host, f"tiles_{version}_2")
    assert a.shape == (6, 64, 80, 3) and torch.allclose(a, b, atol=1e-4)


def core_sampling(model: list, positive: list, latent_image: list, *, noise: dict, cfg: float, steps: int,
                  denoise: float) -> dict:
    """Core's custom-sampling chain (euler, normal) as graph nodes; its sampled LATENT is node ``sample``."""
    return {
        "noise": noise,
        "guider": node("CFGGuider", model=model, positive=positive, negative=["neg", 0], cfg=cfg),
        "sampler": node("KSamplerSelect", sampler_name="euler"),
        "sigmas": node("BasicScheduler", model=model, scheduler="normal", steps=steps, denoise=denoise),
        "sample": node("SamplerCustomAdvanced", noise=["noise", 0], guider=["guider", 0], sampler=["sampler", 0],
                       sigmas=["sigmas", 0], latent_image=latent_image),
    }


def test_one_tile_covering_the_frame_equals_the_untiled_refine(host, models):
    """Tiled Refine with one tile against core nodes doing the same refine untiled, both under windows."""
    graph, model = ade_model(models, context=SHORT_CONTEXT)
    graph["clip"] = node("LoadImage", image=write_clip(host, "one_tile.webp", 6, (64, 64)))
    graph["tiled"] = tiled_refine(model, 1, tile_size=64, overlap=0)
    graph.update({
        "enc": node("VAEEncodeTiled", pixels=["clip", 0], vae=VAE, tile_size=64, overlap=0, temporal_size=64,
                    temporal_overlap=8),
        **core_sampling(model, ["pos", 0], ["enc", 0], noise=node("VCD3DGaussianNoise", noise_seed=SAMPLING["seed"],
                        gamma=0.1), cfg=SAMPLING["cfg"], steps=SAMPLING["steps"], denoise=0.5),
        "dec": node("VAEDecodeTiled", samples=["sample", 0], vae=VAE, tile_size=64, overlap=0,
                    temporal_size=64, temporal_overlap=8),
        "save_tiled": node("VCDTestSaveImageTensor", images=["tiled", 0], name="one_tile"),
        "save_core": node("VCDTestSaveImageTensor", images=["dec", 0], name="untiled"),
    })
    run_ok(host, graph)
    tiled, untiled = saved(host, "one_tile"), saved(host, "untiled")
    assert tiled.shape == (6, 64, 64, 3) and torch.equal(tiled, untiled)


# --- Train Identity fed an ADE MODEL ---

def test_train_identity_on_an_ade_model_learns_what_the_checkpoint_model_learns(host, models):
    """ADE's injected motion modules and beta schedule are left out of training: after an ADE sampling run
    (its temporal layers injected), the ADE MODEL gives the very vectors of the checkpoint's own MODEL."""
    graph, model = ade_model(models)
    graph.update({
        "latent": node("EmptyLatentImage", width=64, height=64, batch_size=2),
        **core_sampling(model, ["pos", 0], ["latent", 0], noise=node("RandomNoise", noise_seed=0), cfg=1.0, steps=1,
                        denoise=1.0),
        "frames": node("VAEDecode", samples=["sample", 0], vae=VAE),
        "photo": node("ImageFromBatch", image=["frames", 0], batch_index=0, length=1),  # trained after the ADE run
    })
    train = dict(clip=["ckpt", 1], vae=VAE, images=["photo", 0], class_word="man", tokens=1, steps=1,
                 learning_rate=1e-2, batch_size=1, seed=0, augment=False, overwrite=True, resolution=64,
                 gradient_checkpointing=False)
    graph["train_ade"] = node("VCDTrainIdentity", model=model, name="from_ade_model", **train)
    graph["train_plain"] = node("VCDTrainIdentity", model=["ckpt", 0], name="from_checkpoint_model", **train)
    run_ok(host, graph)
    folder = host.models_dir / "embeddings" / "vcd"
    from_ade, from_checkpoint = (safetensors.torch.load_file(str(folder / f"{name}.safetensors"))["emb_params"]
                                 for name in ("from_ade_model", "from_checkpoint_model"))
    assert torch.isfinite(from_ade).all() and torch.equal(from_ade, from_checkpoint)


# --- Regional identities: conditioning masks sliced per context window ---

def write_column_masks(host, name: str, frames: int, side: int = 64) -> str:
    """An animated lossless WEBP whose frame i is black with a white column at latent column i (8 px wide)."""
    clip = []
    for i in range(frames):
        pixels = torch.zeros(side, side, 3, dtype=torch.uint8)
        pixels[:, 8 * i:8 * i + 8] = 255
        clip.append(Image.fromarray(pixels.numpy()))
    clip[0].save(host.input_dir / name, save_all=True, append_images=clip[1:], lossless=True)
    return name


def test_regional_identity_masks_reach_the_model_sliced_to_each_context_window(host, models):
    """A per-frame region mask and a box, combined with a scene prompt, under ADE's windows (4 of 6 frames)."""
    frames = 6
    graph, model = ade_model(models, context=SHORT_CONTEXT, probe="regional")
    graph.update({
        "latent": node("EmptyLatentImage", width=64, height=64, batch_size=frames),
        "columns": node("LoadImage", image=write_column_masks(host, "columns.webp", frames)),
        "mask": node("ImageToMask", image=["columns", 0], channel="red"),
        "man": node("CLIPTextEncode", clip=["ckpt", 1], text="a photo of a man"),
        "cat": node("CLIPTextEncode", clip=["ckpt", 1], text="a photo of a cat"),
        "region_man": node("VCDRegionalIdentity", conditioning=["man", 0], region="mask", strength=1.0, x=0.0, y=0.0,
                           width=0.5, height=1.0, mask=["mask", 0], latent=["latent", 0]),
        "region_cat": node("VCDRegionalIdentity", conditioning=["cat", 0], region="box", strength=1.0, x=0.5, y=0.0,
                           width=0.5, height=0.5, latent=["latent", 0]),
        "both": node("ConditioningCombine", conditioning_1=["region_man", 0], conditioning_2=["region_cat", 0]),
        "scene": node("ConditioningCombine", conditioning_1=["pos", 0], conditioning_2=["both", 0]),
        **core_sampling(model, ["scene", 0], ["latent", 0], noise=node("RandomNoise", noise_seed=0), cfg=1.0, steps=1,
                        denoise=1.0),
        "save": node("SaveLatent", samples=["sample", 0], filename_prefix="vcd_ade/regional"),
    })
    run_ok(host, graph)
    [call] = records(host, "regional")
    with safetensors.safe_open(str(host.output_dir / "vcd_probe" / "regional-0.safetensors"), "pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    columns = torch.zeros(frames, 8, 8)
    for i in range(frames):
        columns[i, :, i] = 1  # frame i's region is latent column i
    box = torch.zeros(1, 8, 8)
    box[0, :4, 4:] = 1
    windows = [c["window"] for c in call["cond_calls"]]
    assert len(windows) >= 2 and all(len(w) == 4 for w in windows)  # one call per window, not the whole clip
    assert sorted(set(sum(windows, []))) == list(range(frames))
    for c in call["cond_calls"]:
        assert c["frames"] == 4
        positive = [tensors[name] if name else None for name in c["masks"][0]]
        assert sum(m is None for m in positive) == 1  # the scene prompt: the whole frame
        [per_frame] = [m for m in positive if m is not None and m.shape[0] == 4]
        [one_for_all] = [m for m in positive if m is not None and m.shape[0] == 1]
        assert torch.equal(per_frame, columns[c["window"]])  # the window's own frames, in order
        assert torch.equal(one_for_all, box)
