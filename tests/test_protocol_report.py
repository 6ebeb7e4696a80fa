"""vcd protocol reports: per-video scores, means per setting, the paper's Tables 1-3 with its numbers beside ours."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from devtools.protocol_plans import stand_in_plan
from vcd_diffusers.protocol import METRICS, load_plan, run_protocol, write_report
from vcd_diffusers.protocol import paper
from vcd_diffusers.protocol.report import tables

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only

# the paper's full set of ablations in five settings: gamma 0 / 0.1 / 0.2 at the full pipeline, T2V and Face at 0.1
PAPER_ABLATIONS = [{"gamma": 0.0}, {"name": "vcd", "gamma": 0.1}, {"gamma": 0.2}, {"gamma": 0.1, "stage": "t2v"},
                   {"gamma": 0.1, "stage": "face"}]


def fake_scores(spec, folder):
    """Scores that tell runs apart: dino = gamma + seed / 10, clip_i = 0.5 for t2v, 0.6 otherwise."""
    (folder / "video.webp").write_bytes(b"x")
    return {"dino": spec.options["gamma"] + spec.seed / 10, "clip_i": 0.5 if spec.options["stage"] == "t2v" else 0.6,
            "clip_t": 0.3, "temporal_consistency": 0.9 if spec.subject.name == "a" else None, "motion": 0.02}


def trainer(spec, folder):
    (folder / "identity.safetensors").write_bytes(b"x")


@pytest.fixture
def finished(tmp_path):
    plan = load_plan(stand_in_plan(tmp_path, PAPER_ABLATIONS))
    records = run_protocol(plan, tmp_path / "out", fake_scores, trainer)
    return plan, records, tmp_path / "out"


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_tables_put_the_papers_numbers_beside_ours(finished):
    plan, records, out = finished
    paths = write_report(plan, records, out)
    rows = read_csv(paths["tables"])
    by = {(r["table"].split(":")[0], r["row"], r["source"]): r for r in rows}
    ours = by[("Table 1", "VCD", "ours")]
    assert ours["setting"] == "vcd" and ours["videos"] == "8"  # 2 subjects x 2 prompts x 2 seeds
    assert float(ours["dino"]) == pytest.approx(0.1 + 0.05) and float(ours["clip_i"]) == pytest.approx(0.6)
    assert float(ours["temporal_consistency"]) == pytest.approx(0.9)  # the None of subject b is left out
    assert {k: float(v) for k, v in by[("Table 1", "VCD", "paper")].items() if k in paper.PAPER_METRICS} == \
        paper.TABLE1["VCD"]
    assert by[("Table 1", "DreamBooth", "paper")]["dino"] == "0.53" and by[("Table 1", "LoRA", "paper")]["clip_i"] == ""
    gamma_rows = [r for r in rows if r["table"].startswith("Table 2")]
    assert gamma_rows[0]["table"] == "Table 2: 3D noise prior, gamma; stage tiled, masked true"
    assert [(r["row"], r["source"]) for r in gamma_rows] == [
        (f"gamma {g}", s) for g in ("0", "0.1", "0.2") for s in ("ours", "paper")]
    assert [float(r["dino"]) for r in gamma_rows] == pytest.approx([0.05, 0.56, 0.15, 0.585, 0.25, 0.583])
    stage_rows = [r for r in rows if r["table"].startswith("Table 3")]
    assert [r["row"] for r in stage_rows][::2] == ["after T2V VCD", "after Face VCD", "after Tiled VCD"]
    assert [r["setting"] for r in stage_rows][::2] == ["gamma 0.1, stage t2v", "gamma 0.1, stage face", "vcd"]
    assert [float(r["clip_i"]) for r in stage_rows] == pytest.approx([0.5, 0.721, 0.6, 0.752, 0.6, 0.747])
    assert not [r for r in rows if "masked" in r["table"].split(";")[0]]  # the plan does not vary masking

    text = paths["markdown"].read_text()
    assert "40 of 40 videos finished (2 subjects x 2 prompts x 2 seeds x 5 settings)" in text
    assert "| gamma 0.2 | paper |  | 0.583 | 0.816 | 0.280 | 0.861 | — |" in text
    assert "| after T2V VCD | ours ('gamma 0.1, stage t2v') | 8 | 0.150 | 0.500 | 0.300 | 0.900 | 0.020 |" in text


def test_scores_and_summary_csv(finished):
    plan, records, out = finished
    paths = write_report(plan, records, out)
    videos = read_csv(paths["scores"])
    assert len(videos) == 40 and list(videos[0]) == ["id", "subject", "prompt", "seed", "setting", "gamma", "stage",
                                                     *METRICS, "seconds", "outputs"]
    assert [v["id"] for v in videos] == [r.id for r in plan.runs]
    assert videos[1]["outputs"] == f"runs/{plan.runs[1].id}/video.webp" and videos[0]["temporal_consistency"] == "0.9"
    assert videos[-1]["temporal_consistency"] == ""  # subject b's None
    summary = read_csv(paths["summary"])
    assert [s["setting"] for s in summary] == [name for name, _ in plan.settings]
    assert [float(s["dino"]) for s in summary] == pytest.approx([0.05, 0.15, 0.25, 0.15, 0.15])


def test_a_report_mid_job_counts_what_finished(finished):
    plan, records, out = finished
    partial = [r if i % 4 == 0 else None for i, r in enumerate(records)]
    paths = write_report(plan, partial, out)
    assert "10 of 40 videos finished" in paths["markdown"].read_text()
    assert len(read_csv(paths["scores"])) == 10
    means = {r["setting"]: r for r in read_csv(paths["summary"])}
    assert means["vcd"]["videos"] == "2" and means["gamma 0.0"]["videos"] == "2"


def test_chart_draws_ours_and_the_paper(finished):
    plan, records, out = finished
    chart = Image.open(write_report(plan, records, out)["chart"])
    pixels = np.asarray(chart.convert("RGB")).reshape(-1, 3)
    blue, orange = (40, 90, 200), (230, 120, 20)
    titles = len({r.table for r in tables(plan, {n: {"videos": 1, **{m: 0.5 for m in METRICS}} for n, _ in plan.settings})})
    assert chart.size == (240 * 4, 170 * titles + 20) and titles == 3
    assert (pixels == blue).all(1).sum() > 2000 and (pixels == orange).all(1).sum() > 2000


def test_masked_training_gets_its_own_table(tmp_path):
    plan = load_plan(stand_in_plan(tmp_path, [{"masked": True}, {"masked": False}]))
    rows = tables(plan, {n: {"videos": 4, **{m: 0.5 for m in METRICS}} for n, _ in plan.settings})
    masked = [r for r in rows if r.table.startswith("Identity training")]
    assert [(r.label, r.source) for r in masked] == [("unmasked loss", "ours"), ("masked loss", "ours")]
    assert rows[0].setting == "masked true" and "(no setting has" not in rows[0].table


def test_table1_says_when_no_setting_is_the_papers(tmp_path):
    plan = load_plan(stand_in_plan(tmp_path, [{"gamma": 0.0, "stage": "t2v"}, {"gamma": 0.2, "stage": "t2v"}]))
    rows = tables(plan, {n: {"videos": 4, **{m: 0.5 for m in METRICS}} for n, _ in plan.settings})
    assert rows[0].table == ("Table 1: VCD (no setting has the paper's gamma 0.1, stage tiled, masked true; ours "
                             "is 'gamma 0.0, stage t2v')")
    gamma = [r for r in rows if r.table.startswith("Table 2")]
    assert gamma[0].table.endswith("stage t2v, masked true") and [r.label for r in gamma] == [
        "gamma 0", "gamma 0", "gamma 0.2", "gamma 0.2"]


def test_paper_numbers_match_the_method_notes(shared_dir):
    """The package's copy of the paper's numbers is the one in docs/method.md (read only here, never at run time)."""
    text = (shared_dir / "docs" / "method.md").read_text()

    def four(pattern):
        found = re.search(pattern, text)
        assert found, pattern
        return [float(v) for v in found.groups()]

    n = r"(\.\d+|0\.\d+)"
    assert four(rf"VCD DINO {n}, CLIP-I {n}, CLIP-T {n}, Temp {n}") == list(paper.TABLE1["VCD"].values())
    assert four(rf"DINO {n} / {n}; IP-Adapter-Face {n}") == [paper.TABLE1[m]["dino"] for m in
                                                            ("DreamBooth", "LoRA", "IP-Adapter-Face")]
    for gamma, values in paper.GAMMA.items():
        assert four(rf"{gamma:g}: {n}/{n}/{n}/{n}") == list(values.values())
    for stage, label in (("t2v", "T2V"), ("face", "Face"), ("tiled", "Tiled")):
        assert four(rf"after {label} {n}/{n}/{n}/{n}") == list(paper.STAGES[stage].values())
