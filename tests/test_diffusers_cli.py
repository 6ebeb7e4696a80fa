"""The ``vcd`` command end to end on tiny models (CPU, seeded, a real motion module): train-id -> generate ->
refine-face -> upscale -> evaluate, with the files an artist opens; --help examples; the console script; outputs
never overwritten unless asked; bad inputs as one-line errors naming what to fix."""

import csv
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from devtools import tiny_encoders
from vcd_core import embedding_io
from vcd_diffusers import cli
from vcd_diffusers.loading import CONFIGS

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("train-id", "generate", "refine-face", "upscale", "evaluate")


# one torch thread (conftest); diffusers 0.42 hands numpy 2 a tensor in its schedulers (their warning)
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

@pytest.fixture()
def vcd(capsys):
    """``vcd(*args)`` -> (exit code, stdout, stderr) of the command run in this process."""

    def run(*args):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:  # argparse's usage errors, as the console script exits
            code = exit.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def models_args(tiny_files, motion=True):
    return ["--checkpoint", tiny_files.checkpoint, *(["--motion-module", tiny_files.motion_module] if motion else []),
            "--config-dir", tiny_files.config_dir, "--device", "cpu"]


def save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def one_photo(folder: Path) -> Path:
    return save_png(np.zeros((64, 64, 3), np.uint8), folder / "p" / "a.png")


def tensors_file(path: Path) -> Path:
    torch.save({"weight": torch.zeros(2, 2)}, path)
    return path


def read_png_frames(folder: Path) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))) for p in sorted(folder.glob("*.png"))])


@pytest.mark.host_independent
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert exited.value.code == 0 and "examples:" in text and f"vcd {command}" in text.split("examples:")[1]


@pytest.mark.host_independent
def test_the_console_script_and_package_data_are_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    module, _, function = project["project"]["scripts"]["vcd"].partition(":")
    assert (module, function) == ("vcd_diffusers.cli", "main") and cli.main.__name__ == "main"
    setuptools = project["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "vcd_diffusers").rglob("__init__.py")}
    assert {"vcd_core"} | packages <= set(setuptools["packages"])  # every package of the library is installed
    shipped = {str(p.relative_to(CONFIGS.parent)) for p in CONFIGS.rglob("*") if p.is_file()}
    patterns = setuptools["package-data"]["vcd_diffusers"]
    assert all(any(Path(f).match(p) for p in patterns) for f in shipped) and len(shipped) == 10
    assert any("diffusers" in d for d in project["project"]["optional-dependencies"]["diffusers"])


@pytest.mark.host_independent
def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "vcd_diffusers", "generate", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--motion-module" in done.stdout and "examples:" in done.stdout


def test_train_generate_refine_upscale_evaluate(vcd, tiny_files, tmp_path, read_video):
    photo = skimage.data.astronaut()
    for i, picture in enumerate((photo, photo[:, ::-1], np.roll(photo, 40, axis=0))):
        save_png(np.ascontiguousarray(picture), tmp_path / "photos" / f"astro{i}.png")
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[40:300, 120:380] = 255
        save_png(mask, tmp_path / "masks" / f"astro{i}.png")
    identity_file = tmp_path / "ids" / "astro.safetensors"
    code, out, err = vcd("train-id", tmp_path / "photos", "--masks", tmp_path / "masks", *models_args(tiny_files, motion=False),
                         "--class-word", "woman", "--steps", 3, "--batch-size", 2, "--lr", 1e-2, "--resolution", 64,
                         "--out", identity_file, "--losses", tmp_path / "ids" / "losses.csv")
    assert code == 0, err
    trained = embedding_io.read_embedding(identity_file)
    assert (trained.tokens, trained.width) == (4, 768) and trained.metadata["prompt"] == "embedding:astro woman"
    assert trained.metadata["references"] == "3" and len((tmp_path / "ids" / "losses.csv").read_text().split()) == 4
    assert "train-id" in err and "embedding:astro woman" in out and "warning" not in out

    prompt = ["--identity", identity_file, "--prompt", "a photo of {identity} woman"]
    code, out, err = vcd("generate", *models_args(tiny_files), *prompt, "--frames", 8, "--width", 64, "--height", 64,
                         "--steps", 3, "--out", tmp_path / "t2v.mp4", "--frames-dir", tmp_path / "t2v")
    assert code == 0, err
    codec, mp4_frames = read_video(tmp_path / "t2v.mp4")
    assert codec == "h264" and len(mp4_frames) == 8 and mp4_frames[0].size == (64, 64) and "generate" in err
    t2v = read_png_frames(tmp_path / "t2v")
    assert t2v.shape == (8, 64, 64, 3) and (t2v[1:].float() - t2v[:-1].float()).abs().mean() > 0

    face = np.zeros((64, 64), np.uint8)
    face[20:44, 24:40] = 255
    code, out, err = vcd("refine-face", tmp_path / "t2v", *models_args(tiny_files), *prompt, "--mask",
                         save_png(face, tmp_path / "face.png"), "--guide-size", 64, "--steps", 2,
                         "--out", tmp_path / "face.webp", "--frames-dir", tmp_path / "face")
    assert code == 0, err
    refined = read_png_frames(tmp_path / "face")
    _, webp_frames = read_video(tmp_path / "face.webp")
    assert torch.equal(torch.stack([torch.from_numpy(np.array(f)) for f in webp_frames]), refined)  # lossless
    outside = torch.from_numpy(face == 0)
    assert torch.equal(refined[:, outside], t2v[:, outside]) and not torch.equal(refined, t2v)

    code, out, err = vcd("upscale", tmp_path / "face", *models_args(tiny_files), *prompt, "--tile-size", 64,
                         "--overlap", 16, "--steps", 2, "--out", tmp_path / "up.mp4")
    assert code == 0, err
    codec, upscaled = read_video(tmp_path / "up.mp4")
    assert codec == "h264" and len(upscaled) == 8 and upscaled[0].size == (128, 128)

    dino = tiny_encoders.save_tiny_dino(tmp_path / "dino")
    clip = tiny_encoders.save_tiny_clip(tmp_path / "clip", CONFIGS / "tokenizer")
    code, out, err = vcd("evaluate", tmp_path / "t2v.mp4", tmp_path / "up.mp4", "--references", tmp_path / "photos",
                         "--prompt", "a photo of {identity} woman", "--dino", dino, "--clip", clip,
                         "--out", tmp_path / "scores.csv")
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert [Path(r["video"]).name for r in rows] == ["t2v.mp4", "up.mp4"]
    for row in rows:
        assert row["prompt"] == "a photo of woman" and row["frames"] == "8"
        assert all(-1 <= float(row[m]) <= 1 for m in ("dino", "clip_i", "clip_t", "temporal_consistency"))
        assert float(row["motion"]) > 0


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    """A tiny seeded GroundingDINO folder (transformers) and SAM checkpoint (original layout)."""
    root = tmp_path_factory.mktemp("segmenters")
    return tiny_encoders.save_tiny_grounding_dino(root / "gdino"), tiny_encoders.save_tiny_sam(root / "sam.pth")


def test_train_id_segments_the_photos_as_prompt_segment_does(vcd, tiny_files, segmenters, tmp_path):
    """--segment masks each photo with GroundingDINO + SAM through vcd_core.segment (VCD Prompt Segment's calls),
    saves the masks by photo name, and trains on them: the same vectors as training again with --masks on them."""
    from vcd_core import segment

    photo = skimage.data.astronaut()[::4, ::4]
    for i, picture in enumerate((photo, photo[:, ::-1], np.roll(photo, 20, axis=0))):
        save_png(np.ascontiguousarray(picture), tmp_path / "photos" / f"p{i}.png")
    dino, sam = segmenters
    train = ["--class-word", "woman", "--steps", 2, "--batch-size", 2, "--resolution", 64, "--no-augment"]
    code, out, err = vcd("train-id", tmp_path / "photos", "--segment", "person", "--grounding-dino", dino, "--sam", sam,
                         "--box-threshold", 0, "--text-threshold", 0, "--save-masks", tmp_path / "masks",
                         *models_args(tiny_files, motion=False), *train, "--out", tmp_path / "seg.safetensors")
    assert code == 0, err
    assert "segmented 'person' in 3 of 3 photos" in out
    saved = read_png_frames(tmp_path / "masks")[..., 0].float() / 255
    model, processor = segment.load_grounding_dino(dino)
    predictor = segment.load_sam(sam)
    photos = torch.stack([torch.from_numpy(np.array(Image.open(tmp_path / "photos" / f"p{i}.png"))).float() / 255
                          for i in range(3)])
    wanted, missed = segment.prompt_masks(photos, lambda px: segment.detect(model, processor, px, "person", 0, 0),
                                          lambda px, boxes: segment.segment_boxes(predictor, px, boxes))
    assert missed == [] and torch.equal(saved, wanted)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["p0.png", "p1.png", "p2.png"]

    code, _, err = vcd("train-id", tmp_path / "photos", "--masks", tmp_path / "masks",
                       *models_args(tiny_files, motion=False), *train, "--out", tmp_path / "masked.safetensors")
    assert code == 0, err
    segmented = embedding_io.read_embedding(tmp_path / "seg.safetensors")
    masked = embedding_io.read_embedding(tmp_path / "masked.safetensors")
    assert torch.equal(segmented.vectors, masked.vectors)
    assert segmented.metadata["photos_hash"] == masked.metadata["photos_hash"]  # it hashes the masks too

    code, _, err = vcd("train-id", tmp_path / "photos", "--segment", "person", "--grounding-dino", dino, "--sam", sam,
                       "--box-threshold", 1, "--save-masks", tmp_path / "masks", *models_args(tiny_files, motion=False),
                       *train, "--out", tmp_path / "none.safetensors")
    assert code == 2 and re.search(r"--save-masks: .*p0.png exists; masks are never replaced", err), err
    assert not (tmp_path / "none.safetensors").exists()
    code, _, err = vcd("train-id", tmp_path / "photos", "--segment", "person", "--grounding-dino", dino, "--sam", sam,
                       "--save-masks", tmp_path / "photos", "--overwrite", *models_args(tiny_files, motion=False),
                       *train, "--out", tmp_path / "seg.safetensors")  # the masks would replace the photos
    assert code == 2 and re.search(r"--save-masks: .*p0.png is one of the photos; save the masks in another folder",
                                   err), err


def test_upscale_with_a_model_runs_it_before_resizing_and_refining(vcd, tiny_files, tmp_path, monkeypatch):
    """--upscale-model: each frame through the ESRGAN file (4x), then resized to --scale (2x), then Tiled VCD."""
    from devtools.tiny_diffusers import save_tiny_esrgan
    from vcd_diffusers import tiled
    from vcd_diffusers.upscaler import load_upscale_model, upscale_with_model

    frames = torch.rand(2, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    for i, frame in enumerate(frames):
        save_png((frame * 255).round().byte().numpy(), tmp_path / "clip" / f"frame_{i:05d}.png")
    model_file = save_tiny_esrgan(tmp_path / "tiny_esrgan.pth")
    refined = []
    monkeypatch.setattr(tiled, "tiled_refine", lambda models, frames, *args, **kw: refined.append(frames) or frames)
    code, _, err = vcd("upscale", tmp_path / "clip", *models_args(tiny_files), "--prompt", "x", "--upscale-model",
                       model_file, "--out", tmp_path / "up.webp")
    assert code == 0, err
    read = read_png_frames(tmp_path / "clip").float() / 255
    wanted = tiled.resize_to(upscale_with_model(load_upscale_model(model_file), read), 64, 96)
    assert len(refined) == 1 and torch.equal(refined[0], wanted)
    assert not torch.allclose(wanted, tiled.resize_to(read, 64, 96), atol=0.05)  # not the bicubic resize


def test_upscalers_in_their_release_layouts_load_and_damaged_ones_are_named(tmp_path):
    """RealESRGAN's and SwinIR's releases keep the weights under params_ema / params: the same model loads."""
    from safetensors.torch import save_file

    from devtools.tiny_diffusers import save_tiny_esrgan
    from vcd_diffusers.upscaler import load_upscale_model, upscale_with_model

    plain = save_tiny_esrgan(tmp_path / "plain.pth")
    state = torch.load(plain, weights_only=True)
    frames = torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    want = upscale_with_model(load_upscale_model(plain), frames)
    torch.save({"params_ema": state}, tmp_path / "RealESRGAN_x4plus.pth")
    torch.save({"params": state}, tmp_path / "released.pth")
    save_file(state, str(tmp_path / "4x.safetensors"))
    for name in ("RealESRGAN_x4plus.pth", "released.pth", "4x.safetensors"):
        assert torch.equal(upscale_with_model(load_upscale_model(tmp_path / name), frames), want), name
    cut = {k: (v[:1] if k == "model.0.weight" else v) for k, v in state.items()}  # a known layout that does not fit
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"^upscale model: cut\.pth looks like an upscaler but does not load \(\w+: "
                                         r".*\); copy it again\.$"):
        load_upscale_model(tmp_path / "cut.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^upscale model: empty\.pth is not a readable checkpoint \(EOFError\)\. "
                                         r"Copy it again, or use a \.safetensors version of it\.$"):
        load_upscale_model(tmp_path / "empty.pth")


def test_existing_outputs_are_refused_before_any_work(vcd, tiny_files, tmp_path, monkeypatch):
    taken = tmp_path / "taken.webp"
    taken.write_bytes(b"an artist's file")
    monkeypatch.setattr(cli, "load_models", lambda args: pytest.fail("models were loaded before the output check"))
    code, _, err = vcd("generate", *models_args(tiny_files), "--prompt", "a photo", "--out", taken)
    assert code == 2 and "taken.webp already exists" in err and taken.read_bytes() == b"an artist's file"
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "frame_00000.png").write_bytes(b"x")
    code, _, err = vcd("generate", *models_args(tiny_files), "--prompt", "a photo", "--out", tmp_path / "new.webp",
                       "--frames-dir", tmp_path / "frames")
    assert code == 2 and "frame_00000.png already exists" in err and not (tmp_path / "new.webp").exists()


def test_overwrite_replaces_the_output(vcd, tiny_files, tmp_path):
    taken = tmp_path / "taken.webp"
    taken.write_bytes(b"old")
    code, _, err = vcd("generate", *models_args(tiny_files), "--prompt", "a photo", "--frames", 2, "--width", 64,
                       "--height", 64, "--steps", 1, "--out", taken, "--overwrite", "--quiet")
    assert code == 0, err
    assert Image.open(taken).n_frames == 2 and "generate" not in err  # --quiet: no bar


def mixed_sizes(folder):
    save_png(np.zeros((64, 64, 3), np.uint8), folder / "a.png")
    save_png(np.zeros((72, 64, 3), np.uint8), folder / "b.png")
    return folder


def long_clip(folder, frames: int = 33):
    for i in range(frames):
        save_png(np.zeros((64, 64, 3), np.uint8), folder / f"{i:03d}.png")
    return folder


def a_file(path):
    path.write_text("a file where a folder should be")
    return path


def wide_identity(tmp_path):
    return embedding_io.write_embedding(tmp_path, "sdxl_face", embedding_io.Embedding(torch.zeros(4, 1280)))


@pytest.mark.parametrize("case, args, message", [
    ("missing checkpoint", lambda f, t: ["generate", "--checkpoint", t / "none.safetensors", "--motion-module",
                                         f.motion_module, "--config-dir", f.config_dir, "--prompt", "x", "--out",
                                         t / "o.webp"],
     r"vcd generate: error: checkpoint: no file at .*none.safetensors; check the path."),
    ("missing motion module", lambda f, t: ["generate", "--checkpoint", f.checkpoint, "--config-dir", f.config_dir,
                                            "--motion-module", t / "mm.ckpt", "--prompt", "x", "--out", t / "o.webp"],
     r"vcd generate: error: motion module: no file at .*mm.ckpt"),
    ("wide identity", lambda f, t: ["generate", *models_args(f), "--identity", wide_identity(t), "--prompt",
                                    "a {identity}", "--out", t / "o.webp"],
     r"identity: sdxl_face.safetensors holds 4 vectors 1280 wide, but this checkpoint's text encoder takes 768"),
    ("prompt without marker", lambda f, t: ["generate", *models_args(f), "--identity", embedding_io.write_embedding(
        t, "me", embedding_io.Embedding(torch.zeros(4, 768))), "--prompt", "a photo", "--out", t / "o.webp"],
     r"prompt: write \{identity\} where the person goes"),
    ("too many frames", lambda f, t: ["generate", *models_args(f), "--prompt", "x", "--frames", 40, "--out",
                                      t / "o.webp"], r"frames must be 1 to 32 \(the motion module's position"),
    ("long clip to refine", lambda f, t: ["refine-face", long_clip(t / "in"), *models_args(f), "--prompt", "x",
                                          "--out", t / "o.webp"],
     r"vcd refine-face: error: frames must be 1 to 32 \(the motion module's position encoding covers 32; got 33\); "
     r"split a longer clip, or refine it in ComfyUI with AnimateDiff-Evolved's context windows\.$"),
    ("long clip to upscale", lambda f, t: ["upscale", long_clip(t / "in"), *models_args(f), "--prompt", "x",
                                           "--out", t / "o.webp"], r"vcd upscale: error: frames must be 1 to 32 .*got 33"),
    ("odd size", lambda f, t: ["generate", *models_args(f), "--prompt", "x", "--width", 60, "--out", t / "o.webp"],
     r"height and width must be positive multiples of 8 \(got 60x512\)"),
    ("video suffix", lambda f, t: ["generate", *models_args(f), "--prompt", "x", "--out", t / "o.avi"],
     r"out: o.avi must end in .mp4, .webp, .gif"),
    ("odd mp4", lambda f, t: ["refine-face", save_png(np.zeros((63, 64, 3), np.uint8), t / "f.png"), *models_args(f),
                              "--prompt", "x", "--out", t / "o.mp4"],
     r"out: h264 mp4 needs an even width and height \(the frames are 64x63\); name the output .webp instead"),
    ("mixed frame sizes", lambda f, t: ["refine-face", mixed_sizes(t / "in"), *models_args(f), "--prompt", "x",
                                        "--out", t / "o.webp"],
     r"input: the images in .*in have mixed sizes \[\(64, 64\), \(72, 64\)\]; every frame needs one size"),
    ("karras ddim", lambda f, t: ["generate", *models_args(f), "--prompt", "x", "--sampler", "ddim", "--karras",
                                  "--out", t / "o.webp"], r"karras sigmas work with euler and dpmpp_2m, not ddim"),
    ("denoise", lambda f, t: ["refine-face", t, *models_args(f), "--prompt", "x", "--denoise", 0, "--out",
                              t / "o.webp"], r"denoise must be in \(0, 1\]"),
    ("missing input", lambda f, t: ["upscale", t / "clip.mp4", *models_args(f), "--prompt", "x", "--out",
                                    t / "o.webp"], r"vcd upscale: error: input: no file or folder at .*clip.mp4"),
    ("tile size", lambda f, t: ["upscale", save_png(np.zeros((64, 64, 3), np.uint8), t / "f.png"), *models_args(f),
                                "--prompt", "x", "--tile-size", 60, "--out", t / "o.webp"],
     r"tile_size must be a multiple of 8 and at least 64 px \(got 60\)"),
    ("identity suffix", lambda f, t: ["train-id", t, *models_args(f, motion=False), "--out", t / "me.pt"],
     r"--out: me.pt must end in .safetensors"),
    ("unwritable out", lambda f, t: ["train-id", one_photo(t), *models_args(f, motion=False), "--out",
                                     a_file(t / "disk") / "me.safetensors"],
     r"vcd train-id: error: --out: .*disk is a file, not a folder, so nothing was started; give a folder\.$"),
    ("no photos", lambda f, t: ["train-id", t, *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"photos: .* holds no images"),
    ("missing mask", lambda f, t: ["train-id", save_png(np.zeros((64, 64, 3), np.uint8), t / "p" / "a.png"),
                                   "--masks", t, *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"--masks: no mask for a.png in .* \(expected a.png\)"),
    ("segment without sam", lambda f, t: ["train-id", one_photo(t), "--segment", "woman", "--grounding-dino", t,
                                          *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"--sam: --segment needs a SAM checkpoint\.$"),
    ("segment missing model", lambda f, t: ["train-id", one_photo(t), "--segment", "woman", "--grounding-dino", t / "gd",
                                            "--sam", t, *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"--grounding-dino: --segment needs a GroundingDINO folder or .pth; nothing at .*gd\.$"),
    ("sam without segment", lambda f, t: ["train-id", one_photo(t), "--sam", t, *models_args(f, motion=False), "--out",
                                          t / "me.safetensors"], r"--sam is used with --segment PROMPT"),
    ("threshold without segment", lambda f, t: ["train-id", one_photo(t), "--box-threshold", 0.5,
                                                *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"--box-threshold is used with --segment PROMPT"),
    ("empty segment prompt", lambda f, t: ["train-id", one_photo(t), "--segment", " ", *models_args(f, motion=False), "--out",
                                           t / "me.safetensors"], r"--segment: say what to segment"),
    ("threshold", lambda f, t: ["train-id", one_photo(t), "--segment", "woman", "--grounding-dino", t, "--sam", t,
                                "--box-threshold", 2, *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"--box-threshold must be in \[0, 1\] \(got 2.0\)"),
    ("masks and segment", lambda f, t: ["train-id", t, "--masks", t, "--segment", "woman",
                                        *models_args(f, motion=False), "--out", t / "me.safetensors"],
     r"argument --segment: not allowed with argument --masks"),
    ("mask of another size", lambda f, t: ["refine-face", save_png(np.zeros((64, 64, 3), np.uint8), t / "f.png"),
                                           "--mask", save_png(np.zeros((32, 48), np.uint8), t / "m.png"),
                                           "--checkpoint", t / "no.safetensors", "--motion-module", t / "no.ckpt",
                                           "--prompt", "x", "--out", t / "o.webp"],
     r"vcd refine-face: error: --mask is 48x32 but the frames are 64x64: resize the mask to the frames\.$"),
    ("missing upscale model", lambda f, t: ["upscale", one_photo(t), *models_args(f), "--prompt", "x",
                                            "--upscale-model", t / "4x.pth", "--out", t / "o.webp"],
     r"upscale model: no file at .*4x.pth; check the path"),
    ("not an upscaler", lambda f, t: ["upscale", one_photo(t), *models_args(f), "--prompt", "x", "--upscale-model",
                                      tensors_file(t / "junk.pth"), "--out", t / "o.webp"],
     r"upscale model: junk.pth is no upscaler architecture spandrel knows; give an ESRGAN-type model"),
    ("no references", lambda f, t: ["evaluate", t / "v.webp", "--references", t, "--prompt", "x", "--dino", t,
                                    "--clip", t], r"references: no reference images in"),
])
def test_bad_inputs_are_one_line_errors(vcd, tiny_files, tmp_path, case, args, message):
    code, out, err = vcd(*args(tiny_files, tmp_path))
    assert code == 2 and "Traceback" not in err and re.search(message, err), err


def test_train_id_warns_when_the_masks_look_like_the_background(vcd, tiny_files, tmp_path):
    """A mask covering all but a box in the middle (an inverted subject mask) trains, with a warning naming it."""
    save_png(skimage.data.astronaut()[::8, ::8].copy(), tmp_path / "photos" / "astro.png")
    mask = np.full((64, 64), 255, np.uint8)
    mask[5:40, 15:47] = 0
    save_png(mask, tmp_path / "masks" / "astro.png")
    code, out, err = vcd("train-id", tmp_path / "photos", "--masks", tmp_path / "masks",
                         *models_args(tiny_files, motion=False), "--steps", 1, "--batch-size", 1, "--resolution", 64,
                         "--out", tmp_path / "ids" / "inverted.safetensors")
    assert code == 0, err
    assert "warning: the masks of ['astro.png'] cover the photo's edges far more than its middle" in out


def test_masks_are_found_by_the_photos_name_png_first(tmp_path):
    from vcd_diffusers.commands import mask_for

    for name in ("a.jpg", "a.png", "b[1].webp"):
        (tmp_path / name).write_bytes(b"")
    assert mask_for(Path("photos/a.jpg"), tmp_path) == tmp_path / "a.png"  # what --save-masks wrote
    assert mask_for(Path("b[1].png"), tmp_path) == tmp_path / "b[1].webp"  # glob characters in the name
    with pytest.raises(FileNotFoundError, match=r"^--masks: no mask for c\.jpg in .* \(expected c\.png\)\.$"):
        mask_for(Path("c.jpg"), tmp_path)
