"""vcd protocol plans: a TOML file expanded into runs with stable ids; bad plans name the entry."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from devtools.protocol_plans import photos, write_plan
from vcd_diffusers.protocol import PlanError, load_plan

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


@pytest.fixture
def folder(tmp_path) -> Path:
    """Inputs a plan can name: an embedding, photos, references, model files."""
    for name in ("checkpoint.safetensors", "mm_sd_v15_v2.ckpt"):
        (tmp_path / "models" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / name).write_bytes(b"weights")
    for name in ("dino", "clip"):
        (tmp_path / "models" / name).mkdir()
    (tmp_path / "mona.safetensors").write_bytes(b"embedding bytes")
    photos(tmp_path / "photos" / "ann", 2, size=16)
    photos(tmp_path / "masks" / "ann", 2, size=16)  # any image works as a mask here
    photos(tmp_path / "refs" / "mona", 1, size=16)
    photos(tmp_path / "refs" / "ann", 1, size=16, offset=3)
    return tmp_path


BASE = {
    "prompts": ["a photo of {identity} on a beach", "{identity} in a cafe"],
    "seeds": [0, 1],
    "models": {"checkpoint": "models/checkpoint.safetensors", "motion_module": "models/mm_sd_v15_v2.ckpt",
               "dino": "models/dino", "clip": "models/clip"},
    "defaults": {"steps": 2, "frames": 4},
    "subjects": [
        {"name": "mona", "class_word": "woman", "embedding": "mona.safetensors", "references": "refs/mona"},
        {"name": "ann", "class_word": "woman", "photos": "photos/ann", "masks": "masks/ann", "references": "refs/ann"},
    ],
    "settings": [{"gamma": 0.0}, {"name": "paper", "gamma": 0.1}],
}


def plan_with(folder: Path, change=None, name: str = "plan.toml"):
    data = copy.deepcopy(BASE)
    if change:
        change(data)
    return write_plan(folder, data, name)


def test_expands_subjects_prompts_seeds_settings_in_order(folder):
    plan = load_plan(plan_with(folder))
    assert len(plan.runs) == 2 * 2 * 2 * 2 and len({r.id for r in plan.runs}) == 16
    first = plan.runs[0]
    assert (first.subject.name, first.prompt_index, first.seed, first.setting) == ("mona", 0, 0, "gamma 0.0")
    assert [r.setting for r in plan.runs[:2]] == ["gamma 0.0", "paper"]
    assert first.options["gamma"] == 0.0 and first.options["steps"] == 2 and first.options["stage"] == "tiled"
    assert first.options["cfg"] == 8.0 and first.embedding == str(folder / "mona.safetensors")
    assert first.models["checkpoint"] == str(folder / "models" / "checkpoint.safetensors")
    # ann is trained from photos once (both settings train alike), mona has a file
    assert [i.subject.name for i in plan.identities] == ["ann"] and plan.identities[0].options == {
        "masked": True, "train_steps": 200, "train_resolution": 512}
    assert {r.identity_id for r in plan.runs} == {None, plan.identities[0].id}
    assert all(r.embedding is None for r in plan.runs if r.identity_id)


def test_ids_are_stable_and_follow_what_a_run_computes(folder, tmp_path_factory):
    ids = [r.id for r in load_plan(plan_with(folder)).runs]
    assert [r.id for r in load_plan(plan_with(folder)).runs] == ids
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(folder, moved)
    assert [r.id for r in load_plan(moved / "plan.toml").runs] == ids  # paths as written, not where they are
    more = load_plan(plan_with(folder, lambda d: d.update(seeds=[0, 1, 2]))).runs
    assert set(ids) < {r.id for r in more} and len(more) == 24  # adding a seed keeps every finished run
    (folder / "mona.safetensors").write_bytes(b"another identity")
    changed = [r.id for r in load_plan(plan_with(folder)).runs]
    assert [a == b for a, b in zip(ids, changed)] == [not i.startswith("mona") for i in ids]
    stepped = [r.id for r in load_plan(plan_with(folder, lambda d: d["defaults"].update(steps=3))).runs]
    assert not set(stepped) & set(changed)


def test_an_upscale_model_is_part_of_the_tiled_runs_only(folder):
    (folder / "models" / "4x.pth").write_bytes(b"upscaler")
    stages = [{"stage": "t2v"}, {"stage": "face"}, {"stage": "tiled"}]
    plain = load_plan(plan_with(folder, lambda d: d.update(settings=stages))).runs
    upscaled = load_plan(plan_with(folder, lambda d: (d.update(settings=stages),
                                                      d["models"].update(upscale_model="models/4x.pth")))).runs
    assert [a.id == b.id for a, b in zip(plain, upscaled)] == [r.options["stage"] != "tiled" for r in plain]
    assert all(r.models["upscale_model"] == str(folder / "models" / "4x.pth") for r in upscaled)


def test_training_settings_make_one_identity_each(folder):
    plan = load_plan(plan_with(folder, lambda d: d.update(settings=[{"masked": True}, {"masked": False}])))
    assert [i.options["masked"] for i in plan.identities] == [True, False]
    assert [r.setting for r in plan.runs[:2]] == ["masked true", "masked false"]


@pytest.mark.parametrize("change,message", [
    (lambda d: d["subjects"][1].update(photos="photos/bob"),
     r"subjects\[1\] \('ann'\): photos = 'photos/bob': no folder at .*photos/bob"),
    (lambda d: d["subjects"][0].update(embedding="missing.pt"),
     r"subjects\[0\] \('mona'\): embedding = 'missing.pt': no file at"),
    (lambda d: d["subjects"][0].update(references="refs/nobody"), r"subjects\[0\] \('mona'\): references = "),
    (lambda d: d["settings"][1].update(gama=0.2),
     r"settings\[1\] \('paper'\): unknown key 'gama' \(known: .*\); did you mean 'gamma'\?"),
    (lambda d: d["defaults"].update(stage="upscale"), r"defaults: stage = 'upscale' must be one of t2v, face, tiled"),
    (lambda d: d["settings"][0].update(gamma=1.5), r"settings\[0\] \('gamma 1.5'\): gamma = 1.5 must be in \[0, 1\]"),
    (lambda d: d["settings"][0].update(steps=2.5), r"steps = 2.5 must be an integer"),
    (lambda d: d["settings"][0].update(width=100), r"width = 100 must be a multiple of 8"),
    (lambda d: d["defaults"].update(frames=33), r"defaults: frames = 33 must be in \[1, 32\] \(video length \(up to 32"),
    (lambda d: d["settings"][0].update(masked="no"), r"masked = 'no' must be true or false"),
    (lambda d: d.update(prompts=[]), r"prompts: must be a non-empty list of strings"),
    (lambda d: d.update(seeds=[]), r"seeds: must be a non-empty list of integers"),
    (lambda d: d.update(seeds=[1, 1]), r"seeds: lists \[1\] more than once"),
    (lambda d: d.update(seeds=["1"]), r"seeds\[0\]: must be integers"),
    (lambda d: d.pop("seeds"), r"seeds: missing"),
    (lambda d: d.update(settings=[]), r"settings: must be a non-empty list of tables"),
    (lambda d: d.update(subjects=[]), r"subjects: list at least one subject"),
    (lambda d: d.update(prompts=["a photo of a woman"]), r"prompts\[0\]: must say \{identity\} once"),
    (lambda d: d["subjects"][1].update(name="mona"), r"subjects\[1\] \('mona'\): has the name of an earlier"),
    (lambda d: d["subjects"][0].update(photos="photos/ann"), r"subjects\[0\] \('mona'\): give exactly one of"),
    (lambda d: d["subjects"][0].pop("class_word"), r"subjects\[0\] \('mona'\): needs a class_word"),
    (lambda d: d["subjects"][0].update(refs="refs/mona"), r"subjects\[0\] \('mona'\): unknown key 'refs'"),
    (lambda d: d["settings"].append({"gamma": 0.0, "name": "again"}),
     r"settings\[2\] \('again'\): resolves to the same settings as settings\[0\] \('gamma 0.0'\)"),
    (lambda d: d["settings"].append({"gamma": 0.2, "name": "Paper"}), r"settings\[2\] \('Paper'\): has the name of"),
    (lambda d: d["models"].pop("clip"), r"models: missing clip"),
    (lambda d: d["models"].update(vae="models/dino"), r"models: unknown key 'vae'"),
    (lambda d: d["models"].update(checkpoint="models/sd15.safetensors"), r"models: checkpoint = 'models/sd15"),
    (lambda d: d["subjects"][1].pop("masks"), r"settings\[0\] \('gamma 0.0'\): trains with masked = true, which "
                                              r"needs masks .* for subject 'ann'; or set masked = false"),
    (lambda d: d["subjects"][0].update(masks="masks/ann"), r"subjects\[0\] \('mona'\): masks are for training from"),
    (lambda d: d["subjects"][1].update(masks="refs/ann"),
     r"subjects\[1\] \('ann'\): masks: no mask for 1.png in .*refs/ann \(expected 1.png\)"),
    (lambda d: d.update(subjects=d["subjects"][:1], settings=[{"masked": False}]),
     r"settings\[0\] \('masked false'\): sets masked, which only changes identities trained from photos"),
    (lambda d: d.update(extra=1), r"top level: unknown key 'extra'"),
    (lambda d: (d["models"].update(upscale_model="models/dino"), d["defaults"].update(stage="face")),
     r"models: upscale_model is run only before Tiled VCD, and no settings reach stage = 'tiled'; set stage = "
     r"\"tiled\" in \[defaults\] or a \[\[settings\]\] entry, or remove upscale_model"),
    (lambda d: d["settings"][1].update(tile_size=48), r"settings\[1\] \('paper'\): tile_size must be a multiple of 8 "
                                                     r"and at least 64 px \(got 48\)"),
    (lambda d: d["defaults"].update(tile_overlap=512), r"settings\[0\] \('gamma 0.0'\): tile_overlap must be at "
                                                      r"least 0 and smaller than tile_size"),
])
def test_bad_plans_name_the_entry(folder, change, message):
    with pytest.raises(PlanError, match=message) as error:
        load_plan(plan_with(folder, change))
    assert str(error.value).startswith(str(folder / "plan.toml"))


def test_bad_files(folder):
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(folder / "nope.toml")
    (folder / "broken.toml").write_text("prompts = [\n")
    with pytest.raises(PlanError, match=r"broken.toml: not valid TOML"):
        load_plan(folder / "broken.toml")
    # TOML puts a key written after [models] inside it: say so
    text = plan_with(folder).read_text().replace("seeds = [0, 1]\n", "")
    (folder / "late.toml").write_text(text.replace("[models]\n", "[models]\nseeds = [0, 1]\n"))
    with pytest.raises(PlanError, match=r"models: unknown key 'seeds' \(known: .*\); top-level keys such as "
                                        r"prompts and seeds must come before the first \[table\]"):
        load_plan(folder / "late.toml")
    (folder / "masks" / "ann" / "0.png").rename(folder / "masks" / "ann" / "0.jpg")  # any image suffix
    assert load_plan(folder / "plan.toml").identities
    shutil.rmtree(folder / "photos" / "ann")
    (folder / "photos" / "ann").mkdir()
    with pytest.raises(PlanError, match=r"subjects\[1\] \('ann'\): photos: no images"):
        load_plan(folder / "plan.toml")


def test_python_3_10_reads_plans_with_tomli(folder, monkeypatch):
    """Without the standard library's tomllib (Python 3.10) the plan module takes tomli, the same parser (loaded
    here as a separate copy of the module, so the rest of the suite keeps its classes)."""
    import importlib.util
    import sys
    import tomllib

    import vcd_diffusers.protocol.plan as plan_module

    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib -> ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "tomli", tomllib)
    spec = importlib.util.spec_from_file_location("vcd_diffusers.protocol.plan_on_python_3_10", plan_module.__file__)
    copy_310 = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy_310)
    spec.loader.exec_module(copy_310)
    assert copy_310.tomllib is tomllib and len(copy_310.load_plan(plan_with(folder)).runs) == 16


def test_the_help_lists_every_setting_as_a_plan_writes_it(capsys):
    import tomllib

    from vcd_diffusers import cli
    from vcd_diffusers.protocol.plan import SETTINGS

    with pytest.raises(SystemExit):
        cli.main(["protocol", "--help"])
    text = capsys.readouterr().out.split("Settings ([defaults] or each [[settings]]")[1]
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    written = {key: value for line in lines for key, value in tomllib.loads(line.split(": ", 1)[0]).items()}
    assert written == {key: s.default for key, s in SETTINGS.items()}  # each line's 'key = default' is valid TOML
