"""vcd protocol jobs on a stand-in runner: finished runs are skipped, a failure or kill loses only the run in
flight, leftovers are cleaned, records are checked (the real runner and Ray: test_protocol.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from devtools.protocol_plans import stand_in_plan
from vcd_diffusers.protocol import load_plan, run_protocol
from vcd_diffusers.protocol.store import job_lock, run_record_path

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def scores_of(run_id: str) -> dict:
    value = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) / 2**32
    return {"dino": value, "clip_i": value / 2, "clip_t": 0.3, "temporal_consistency": None, "motion": 0.01}


class Counting:
    """A runner that records every call, writes one output file and fails on the run named ``fail_at``."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at

    def __call__(self, spec, folder: Path) -> dict:
        self.calls.append(spec.id)
        (folder / "t2v.txt").write_text(f"{spec.prompt} {spec.seed} {spec.embedding}")
        if spec.id == self.fail_at:
            raise RuntimeError("out of memory")
        return scores_of(spec.id)


def trainer(spec, folder: Path) -> None:
    (folder / "identity.safetensors").write_text(spec.id)


@pytest.fixture
def plan(tmp_path):
    return load_plan(stand_in_plan(tmp_path, [{"gamma": 0.0}, {"gamma": 0.1}]))


def test_a_failed_run_loses_only_itself_and_resume_runs_the_rest_once(plan, tmp_path):
    out = tmp_path / "out"
    failing = Counting(fail_at=plan.runs[5].id)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_protocol(plan, out, failing, trainer)
    assert failing.calls == [r.id for r in plan.runs[:6]]
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == sorted(f"{r.id}.json" for r in plan.runs[:5])
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert not list((out / "runs").glob(".*"))  # the failed run's partial folder is gone

    again = Counting()
    records = run_protocol(plan, out, again, trainer)
    assert again.calls == [r.id for r in plan.runs[5:]]  # every run ran once in all
    assert {p.name: p.read_bytes() for p in (out / "runs").glob("*.json") if p.name in before} == before
    assert [r["id"] for r in records] == [r.id for r in plan.runs]
    assert [r["scores"] for r in records] == [scores_of(r.id) for r in plan.runs]
    third = Counting()
    assert run_protocol(plan, out, third, trainer) == records and third.calls == []


def test_records_hold_spec_outputs_and_the_trained_identity(plan, tmp_path):
    out = tmp_path / "out"
    records = run_protocol(plan, out, Counting(), trainer)
    identity = plan.identities[0]
    trained = out / "identities" / identity.id / "identity.safetensors"
    assert trained.read_text() == identity.id
    b_run = next(i for i, r in enumerate(plan.runs) if r.identity_id)
    record = records[b_run]
    assert record["spec"] == json.loads(json.dumps(plan.runs[b_run].to_json()))  # as planned, embedding unset
    assert record["outputs"] == [f"runs/{record['id']}/t2v.txt"]
    assert (out / record["outputs"][0]).read_text().endswith(str(trained))  # the runner got the trained file
    assert records[0]["spec"]["embedding"] == plan.runs[0].subject.embedding
    assert record["pid"] == os.getpid() and record["seconds"] >= 0


def test_leftovers_of_a_kill_are_replaced(plan, tmp_path):
    out = tmp_path / "out"
    first = plan.runs[0]
    (out / "runs" / f".{first.id}.partial-99999").mkdir(parents=True)  # killed while running
    (out / "runs" / first.id).mkdir()  # killed after the rename, before the record
    (out / "runs" / first.id / "stale.txt").write_text("old")
    (out / "identities" / f".{plan.identities[0].id}.partial-1").mkdir(parents=True)
    runner = Counting()
    run_protocol(plan, out, runner, trainer)
    assert runner.calls[0] == first.id and sorted(os.listdir(out / "runs" / first.id)) == ["t2v.txt"]
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]
    assert not [p for p in (out / "identities").iterdir() if p.name.startswith(".")]


def test_bad_runner_results_and_records_are_named(plan, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=rf"identity {plan.identities[0].id}: the trainer wrote no identity"):
        run_protocol(plan, out, Counting(), lambda spec, folder: None)
    assert not (out / "identities" / plan.identities[0].id).exists()
    with pytest.raises(ValueError, match=rf"run {plan.runs[0].id}: the runner's scores lack clip_t"):
        run_protocol(plan, out, lambda spec, folder: {"dino": 1, "clip_i": 1, "temporal_consistency": 1, "motion": 0},
                     trainer)
    with pytest.raises(ValueError, match=r"score dino = nan is not a finite number"):
        run_protocol(plan, out, lambda spec, folder: {**scores_of(spec.id), "dino": float("nan")}, trainer)
    assert not list((out / "runs").glob("*"))
    run_protocol(plan, out, Counting(), trainer)
    path = run_record_path(out, plan.runs[3].id)
    path.write_text(path.read_text().replace('"seed": 1', '"seed": 7'))
    with pytest.raises(ValueError, match=rf"{path.name}: holds a different run than the plan's"):
        run_protocol(plan, out, Counting(), trainer)
    path.write_text("{")
    with pytest.raises(ValueError, match=rf"{path.name}: not a run record .*delete it to run"):
        run_protocol(plan, out, Counting(), trainer)


def test_one_job_per_folder(plan, tmp_path):
    out = tmp_path / "out"
    with job_lock(out):
        with pytest.raises(RuntimeError, match=rf"another vcd protocol is running on this folder \(pid {os.getpid()}"):
            run_protocol(plan, out, Counting(), trainer)
    run_protocol(plan, out, Counting(), trainer)


def test_the_command_says_a_failed_run_in_two_lines_and_vcd_debug_adds_the_traceback(tmp_path, monkeypatch, capsys):
    from vcd_diffusers import cli
    from vcd_diffusers.protocol import runner

    path = stand_in_plan(tmp_path, [{"gamma": 0.0}])
    monkeypatch.setattr(runner, "run_video", Counting(fail_at=load_plan(path).runs[0].id))
    monkeypatch.setattr(runner, "train_identity", trainer)
    command = ["protocol", str(path), "--out", str(tmp_path / "out"), "--quiet"]
    kept = ("The finished runs are kept: fix the cause and run the same command to go on.")
    assert cli.main(command) == 1
    assert capsys.readouterr().err.splitlines() == ["vcd protocol: error: out of memory", kept]
    monkeypatch.setenv("VCD_DEBUG", "1")
    assert cli.main(command) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-3:] == ["RuntimeError: out of memory",
                                                                           "vcd protocol: error: out of memory", kept]
