"""vcd protocol end to end on tiny models (CPU, seeded, a real motion module): a 2 subjects x 2 prompts x 2 seeds x
2 settings plan killed mid-job and resumed (nothing lost, nothing run twice), the same plan on a local Ray cluster
with 2 workers (the same table), each stage's outputs, and the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from devtools import tiny_diffusers, tiny_encoders
from devtools.protocol_plans import photos, write_plan
from vcd_core import embedding_io
from vcd_diffusers import cli
from vcd_diffusers.protocol import RayTasks, connect_ray, load_plan, run_protocol, write_report
from vcd_diffusers.protocol import runner
from vcd_diffusers.protocol.runner import run_video, train_identity
from vcd_diffusers.video_io import read_frames, write_video

# ComfyUI only writes the tiny checkpoint here; what is tested is the same on every host. One torch thread, as
# in each Ray worker (one CPU per task), so both give bit-identical scores.
pytestmark = [pytest.mark.host_independent, pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]  # diffusers 0.42's

REPO = Path(__file__).resolve().parents[1]
STOP_AT = 5  # the run in flight when the job is killed: runs 0-4 finished before
# A job in another process whose runner stops inside run STOP_AT (its videos written, its record not yet) and says so.
GATED_JOB = """
import sys, time
from pathlib import Path
from vcd_diffusers.protocol import load_plan, run_protocol
from vcd_diffusers.protocol.runner import run_video, train_identity
plan, out, stop_at = load_plan(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def runner(spec, folder):
    scores = run_video(spec, folder)
    if spec.id == stop_at:
        (out / "in-flight").write_text(str(folder))
        time.sleep(600)
    return scores
run_protocol(plan, out, runner, train_identity)
"""


@pytest.fixture(scope="module")
def plan_file(inproc, tmp_path_factory) -> Path:
    """Tiny model files, an embedding (subject a), photos + masks to train one (subject b), references, the plan."""
    root = tmp_path_factory.mktemp("protocol")
    files = tiny_diffusers.tiny_files(root / "models", inproc.tiny)
    tiny_encoders.save_tiny_dino(root / "models" / "dino")
    tiny_encoders.save_tiny_clip(root / "models" / "clip", Path(os.environ["COMFYUI_DIR"]) / "comfy" / "sd1_tokenizer")
    embedding_io.write_embedding(root, "a", embedding_io.Embedding(torch.randn(4, 768, generator=torch.Generator()
                                                                               .manual_seed(1)) * 0.02))
    photos(root / "photos" / "b", 2, size=64)
    (root / "masks" / "b").mkdir(parents=True)
    for i in range(2):
        mask = np.zeros((64, 64), np.uint8)
        mask[12:52, 16:48] = 255
        Image.fromarray(mask).save(root / "masks" / "b" / f"{i}.png")
    photos(root / "refs" / "a", 1, size=64, offset=4)
    photos(root / "refs" / "b", 2, size=64, offset=1)
    models = {"checkpoint": files.checkpoint, "motion_module": files.motion_module, "config_dir": files.config_dir,
              "dino": root / "models" / "dino", "clip": root / "models" / "clip"}
    return write_plan(root, {
        "prompts": ["a photo of {identity} on a beach", "{identity} reading in a cafe"],
        "seeds": [0, 1],
        "models": {k: str(Path(v).relative_to(root)) for k, v in models.items()},
        "defaults": {"frames": 4, "width": 32, "height": 32, "steps": 1, "cfg": 1.0, "face_steps": 1,
                     "tiled_steps": 1, "tile_size": 64, "tile_overlap": 16, "train_steps": 2,
                     "train_resolution": 64},
        "subjects": [{"name": "a", "class_word": "woman", "embedding": "a.safetensors", "references": "refs/a"},
                     {"name": "b", "class_word": "man", "photos": "photos/b", "masks": "masks/b",
                      "references": "refs/b"}],
        "settings": [{"stage": "t2v"}, {"stage": "tiled"}],
    })


def finished_files(out: Path) -> list[Path]:
    """Run records and trained identity files."""
    return [*(out / "runs").glob("*.json"), *(p for p in (out / "identities").rglob("*") if p.is_file())]


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def resumed(plan_file, tmp_path_factory):
    """The job killed (SIGKILL) in another process while run STOP_AT is in flight, then resumed here."""
    plan = load_plan(plan_file)
    out = tmp_path_factory.mktemp("killed")
    job = subprocess.Popen([sys.executable, "-c", GATED_JOB, str(plan_file), str(out), plan.runs[STOP_AT].id],
                           env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not (out / "in-flight").exists():
        if job.poll() is not None or time.time() > deadline:
            job.kill()
            pytest.fail(f"the job ended or hung before run {STOP_AT}:\n{job.communicate()[0].decode()[-3000:]}")
        time.sleep(0.2)
    in_flight = Path((out / "in-flight").read_text())
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    before = {p.name: p.read_bytes() for p in finished_files(out)}
    calls = {"runs": [], "identities": []}

    def runner(spec, folder):
        calls["runs"].append(spec.id)
        return run_video(spec, folder)

    def trainer(spec, folder):
        calls["identities"].append(spec.id)
        return train_identity(spec, folder)

    records = run_protocol(plan, out, runner, trainer)
    return dict(plan=plan, out=out, records=records, calls=calls, before=before, child=job.pid, in_flight=in_flight)


@pytest.fixture(scope="module")
def on_ray(plan_file, tmp_path_factory):
    """The same plan as Ray tasks on a local cluster with 2 workers (started once for this module)."""
    import ray

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # workers start here, where vcd_diffusers is not
    connect_ray(workers=2)
    try:
        out = tmp_path_factory.mktemp("ray")
        plan = load_plan(plan_file)
        started = time.time()
        records = run_protocol(plan, out, run_video, train_identity, RayTasks())
        yield dict(plan=plan, out=out, records=records, seconds=time.time() - started)
    finally:
        ray.shutdown()
        os.chdir(here)


def test_kill_and_resume_loses_nothing_and_runs_nothing_twice(resumed):
    plan, out, records, calls = resumed["plan"], resumed["out"], resumed["records"], resumed["calls"]
    ids = [r.id for r in plan.runs]
    finished_before = sorted(name for name in resumed["before"] if name.endswith(".json"))
    assert finished_before == sorted(f"{i}.json" for i in ids[:STOP_AT])  # the run in flight left no record
    assert resumed["in_flight"].name.startswith(f".{ids[STOP_AT]}.partial-") and not resumed["in_flight"].exists()
    assert calls == {"runs": ids[STOP_AT:], "identities": []}  # the identity trained before the kill is kept
    assert {name: data for name, data in resumed["before"].items()} == {
        p.name: p.read_bytes() for p in finished_files(out) if p.name in resumed["before"]}  # untouched
    assert [r["id"] for r in records] == ids
    assert [r["pid"] for r in records] == [resumed["child"]] * STOP_AT + [os.getpid()] * (len(ids) - STOP_AT)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([*ids, *(f"{i}.json" for i in ids)])
    for record in records:
        assert set(record["scores"]) >= {"dino", "clip_i", "clip_t", "temporal_consistency", "motion"}
        assert all(isinstance(v, float) for v in record["scores"].values())


def test_ray_gives_the_same_table(resumed, on_ray):
    ray_records, records = on_ray["records"], resumed["records"]
    assert [r["id"] for r in ray_records] == [r["id"] for r in records]
    assert [r["scores"] for r in ray_records] == [r["scores"] for r in records]
    workers = {r["pid"] for r in ray_records}
    assert os.getpid() not in workers and 1 <= len(workers) <= 2
    ours = write_report(resumed["plan"], records, resumed["out"])
    theirs = write_report(on_ray["plan"], ray_records, on_ray["out"])
    for kind in ("tables", "summary", "markdown", "chart"):
        assert ours[kind].read_bytes() == theirs[kind].read_bytes(), kind
    print(f"Ray: {len(ray_records)} runs on {len(workers)} workers in {on_ray['seconds']:.1f} s")


def test_each_stage_writes_its_video_and_scores(resumed):
    plan, out, records = resumed["plan"], resumed["out"], resumed["records"]
    tiled = next(i for i, r in enumerate(plan.runs) if r.options["stage"] == "tiled" and r.subject.name == "b")
    names = [Path(p).name for p in records[tiled]["outputs"]]
    assert names == ["face.mp4", "scores.json", "t2v.mp4", "tiled.mp4", "warnings.txt"]
    folder = out / "runs" / plan.runs[tiled].id
    assert read_frames(folder / "t2v.mp4").shape == (4, 32, 32, 3)
    assert read_frames(folder / "tiled.mp4").shape == (4, 64, 64, 3)  # Tiled VCD upscales 2x
    assert "Face VCD: no face in any frame" in (folder / "warnings.txt").read_text()  # random weights draw no face
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["prompt"] == "a photo of man on a beach" and len(scores["per_frame_dino"]) == 4
    assert scores["dino"] == records[tiled]["scores"]["dino"]
    t2v = [Path(p).name for p in records[tiled - 1]["outputs"]]
    assert t2v == ["scores.json", "t2v.mp4"] and plan.runs[tiled - 1].options["stage"] == "t2v"
    identity = plan.identities[0]
    trained = embedding_io.read_embedding(out / "identities" / identity.id / "identity.safetensors")
    assert (trained.tokens, trained.width) == (4, 768) and trained.metadata["steps"] == "2"
    assert trained.metadata["class_word"] == "man"


def test_an_upscale_model_runs_before_tiled_vcd(plan_file, tmp_path, monkeypatch):
    """A plan naming an upscale_model: its tiled run refines the ESRGAN output (the same run without it: the same
    T2V and Face VCD frames, another tiled video). The frames are compared as the runner writes them: x264 does not
    encode a 32x32 clip to the same bytes twice (its macroblock tree reads memory it never set at 2x2 macroblocks)."""
    text = plan_file.read_text()
    upscaler = tiny_diffusers.save_tiny_esrgan(plan_file.parent / "models" / "tiny_esrgan.pth", scale=2)
    with_model = plan_file.with_name("upscaled.toml")
    with_model.write_text(text.replace("[models]\n", f"[models]\nupscale_model = \"{upscaler.relative_to(plan_file.parent)}\"\n"))
    written = {}

    def spy(frames, path):
        written[Path(path).stem] = frames.clone()
        return write_video(frames, path)

    monkeypatch.setattr(runner, "write_video", spy)
    videos = []
    for path in (plan_file, with_model):
        spec = next(r for r in load_plan(path).runs if r.options["stage"] == "tiled" and r.subject.name == "a")
        folder = tmp_path / path.stem
        folder.mkdir()
        run_video(spec, folder)
        assert sorted(p.name for p in folder.glob("*.mp4")) == ["face.mp4", "t2v.mp4", "tiled.mp4"]
        videos.append(dict(written))
    plain, upscaled = videos
    assert torch.equal(plain["t2v"], upscaled["t2v"]) and torch.equal(plain["face"], upscaled["face"])
    assert upscaled["tiled"].shape == plain["tiled"].shape == (4, 64, 64, 3)
    assert not torch.allclose(plain["tiled"], upscaled["tiled"], atol=1 / 255)


def test_command_dry_run_report_and_bad_plan(resumed, plan_file, tmp_path, capsys):
    out = resumed["out"]
    assert cli.main(["protocol", str(plan_file), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "16 runs (16 finished), 1 identities to train from photos" and len(lines) == 17
    assert all(line.startswith("  done  ") for line in lines[1:])
    (out / "summary.md").unlink()
    assert cli.main(["protocol", str(plan_file), "--out", str(out), "--report-only", "--quiet"]) == 0
    assert "## Table 3: stages" in (out / "summary.md").read_text()
    assert cli.main(["protocol", str(plan_file), "--out", str(out), "--quiet"]) == 0  # all finished: runs nothing
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out / 'summary.png'}"
    assert [json.loads((out / "runs" / f"{r.id}.json").read_text())["pid"] for r in resumed["plan"].runs] == [
        r["pid"] for r in resumed["records"]]
    assert cli.main(["protocol", str(plan_file), "--out", str(out), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    bad = plan_file.read_text().replace("stage = \"tiled\"", "stage = \"upscale\"")
    (plan_file.parent / "bad.toml").write_text(bad)
    assert cli.main(["protocol", str(plan_file.parent / "bad.toml"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"vcd protocol: error: {plan_file.parent / 'bad.toml'}: settings[1] "
                                               "('stage upscale'): stage = 'upscale' must be one of t2v, face, tiled "
                                               "(how far the pipeline goes: t2v, face (+Face VCD), tiled (+Tiled VCD))")
