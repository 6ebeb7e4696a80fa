"""Shared fixtures: the ComfyUI tree (in-process), a real ComfyUI server, and paths.

``scripts/test.sh`` sets COMFYUI_DIR; running pytest by hand needs it too (``source scripts/env.sh``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
# ComfyUI's top-level modules (nodes, server, folder_paths, comfy...) must win over the repo's folders.
if COMFYUI_DIR:
    sys.path.insert(0, COMFYUI_DIR)
sys.path.append(str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _require_comfyui() -> str:
    if not COMFYUI_DIR or not Path(COMFYUI_DIR, "main.py").is_file():
        pytest.fail("COMFYUI_DIR is not set to a ComfyUI tree: run the suite with scripts/test.sh", pytrace=False)
    return COMFYUI_DIR


@pytest.fixture(scope="session")
def inproc() -> SimpleNamespace:
    """ComfyUI imported in this process on the CPU, with this pack and the tiny-model test pack."""
    from devtools.inproc import load_comfy

    return load_comfy(_require_comfyui())


@pytest.fixture(scope="session")
def parts(inproc) -> dict:
    """The tiny SD1.5 MODEL, prompt conds and VAE for the refine nodes, the pack's nodes, and short ``sampling`` settings."""
    model, clip, vae = inproc.tiny.tiny_model(0), inproc.tiny.tiny_clip(0), inproc.tiny.tiny_vae(0)
    positive = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a woman"))
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    sampling = dict(steps=2, cfg=4.0, sampler_name="euler", scheduler="normal", seed=3)
    return dict(model=model, positive=positive, negative=negative, vae=vae, nodes=inproc.pack.nodes, sampling=sampling)


@pytest.fixture(scope="session")
def face_refine(parts):
    """``face_refine(image, model=None, **overrides)``: VCD Face Refine's five outputs on the tiny model (union crop, Haar)."""

    import torch

    def run(image, model=None, **overrides):
        options = dict(crop_factor=3.0, guide_size=64, max_size=128, denoise=0.8, gamma=0.0, feather=5,
                       crop_mode="union", detector="opencv_haar", **parts["sampling"])
        options.update(overrides)
        with torch.inference_mode():
            return parts["nodes"].face.VCDFaceRefine.execute(
                model or parts["model"], parts["positive"], parts["negative"], parts["vae"], image, **options).result

    return run


@pytest.fixture(scope="session")
def ade_models() -> dict[str, Path] | None:
    """With the real AnimateDiff-Evolved beside the clone: the seeded random full-width SD1.5 checkpoint and
    motion modules (``devtools.ade_models``; built once, cached outside the clone). None without it."""
    from devtools.host import ade_available

    if not ade_available():
        return None
    from devtools.ade_models import ensure_models

    return ensure_models(_require_comfyui(), sys.executable)


@pytest.fixture(scope="session")
def host(tmp_path_factory, ade_models):
    """One real ComfyUI server for the whole session (fails loudly if a pack does not import), with
    AnimateDiff-Evolved and its test models when ../shared is there."""
    from devtools.ade_models import link_models
    from devtools.host import ComfyHost

    from devtools.graphs import provide_test_identity

    server = ComfyHost(_require_comfyui(), tmp_path_factory.mktemp("comfyui"), python=sys.executable)
    provide_test_identity(server.models_dir)  # the identities shrunk shipped graphs pick (graphs.TEST_IDENTITIES)
    if ade_models is not None:
        link_models(server.models_dir, ade_models)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shipped(ade_models):
    """Make a shipped API graph runnable here: with the real AnimateDiff-Evolved, its ADE nodes kept on the
    seeded full-width models (graphs.shrink_keeping_ade); without it, on the tiny models minus ADE (graphs.tinyize)."""
    from devtools import graphs

    def make(name: str, frames: int = 8) -> dict:
        graph = graphs.load_api(name)
        if ade_models is None:
            return graphs.tinyize(graph, frames=frames)
        return graphs.shrink_keeping_ade(graph, ade_models["checkpoint"].name, ade_models["motion_v2"].name, frames=frames)

    return make


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the clone (docs, the authors' files); absent in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not beside this clone")
    return SHARED


@pytest.fixture(scope="session")
def frontend(host, tmp_path_factory):
    """ComfyUI's real web frontend, the one the host serves, in headless Chromium: one page for the session."""
    from devtools.frontend import BrowserMissing, Frontend

    try:
        page = Frontend(host.url, tmp_path_factory.mktemp("browser"))
    except BrowserMissing as missing:
        if os.environ.get("VCD_REQUIRE_BROWSER") == "1":  # CI: a missing browser is a failure, not a skip
            pytest.fail(f"{missing} (VCD_REQUIRE_BROWSER=1)", pytrace=False)
        pytest.skip(f"{missing} (the real-frontend tests need it)")
    yield page
    page.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep what a person may want to look at (screenshots): $VCD_ARTIFACTS, or
    out/test-artifacts/<ComfyUI version>/ in the clone (git-ignored)."""
    version_file = Path(_require_comfyui(), "comfyui_version.py")
    version = re.search(r'__version__ = "([^"]+)"', version_file.read_text()) if version_file.is_file() else None
    folder = Path(os.environ.get("VCD_ARTIFACTS") or REPO / "out" / "test-artifacts" / (version[1] if version else "custom"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models on a
    shared CPU run several times faster without the second thread's synchronisation."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_files(inproc, tmp_path_factory):
    """The diffusers library's tiny model files (devtools.tiny_diffusers): configs, an original-layout checkpoint
    ComfyUI saved from the tiny MODEL / CLIP / VAE (.safetensors and .ckpt) and a motion module."""
    from devtools import tiny_diffusers

    return tiny_diffusers.tiny_files(tmp_path_factory.getbasetemp() / "vcd_diffusers", inproc.tiny)


@pytest.fixture(scope="session")
def tiny_models(tiny_files):
    """``tiny_files`` loaded by the library (CPU, float32), shared: tests must not change them."""
    from devtools import tiny_diffusers

    return tiny_diffusers.tiny_models(tiny_files)


@pytest.fixture(scope="session")
def read_video():
    """Read a saved video: ``(codec, RGB frames as PIL images)``; mp4 through PyAV (what ComfyUI's video nodes use),
    animated WEBP/GIF/PNG through Pillow (codec None)."""
    from PIL import Image, ImageSequence

    def read(path: Path) -> tuple[str | None, list]:
        if path.suffix == ".mp4":
            import av

            with av.open(str(path)) as container:
                codec = container.streams.video[0].codec_context.name
                return codec, [frame.to_image() for frame in container.decode(video=0)]
        with Image.open(path) as animation:
            return None, [frame.convert("RGB").copy() for frame in ImageSequence.Iterator(animation)]

    return read


def pytest_configure(config):
    config.addinivalue_line("markers", "host_independent: never touches ComfyUI (pure vcd_core / library code); "
                            "scripts/test.sh runs it on its first host only")


def pytest_collection_modifyitems(config, items):
    """Under mutmut (scripts/mutate.sh) run only in-process tests: a server process cannot load mutants.
    With VCD_SKIP_HOST_INDEPENDENT=1 (scripts/test.sh, every host after the first) leave out the tests that
    give the same result on any host: they ran already."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        items[:] = [item for item in items if "host" not in getattr(item, "fixturenames", ())]
    if os.environ.get("VCD_SKIP_HOST_INDEPENDENT") == "1":
        done = [item for item in items if item.get_closest_marker("host_independent")]
        if done:
            config.hook.pytest_deselected(items=done)
            items[:] = [item for item in items if not item.get_closest_marker("host_independent")]
