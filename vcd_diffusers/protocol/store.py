"""Where a protocol keeps its results, so that a killed job resumes where it stopped.

    OUT/runs/ID.json      one finished run: its spec, scores, output files, time (written last, atomically)
    OUT/runs/ID/          that run's outputs (the video of each stage), renamed into place whole
    OUT/identities/ID/    one trained identity (identity.safetensors, its metadata holding the losses), renamed
                          into place whole

A run counts as finished only once its JSON exists, so a kill at any point loses at most the runs in
flight; their half-written folders (``.ID.partial-PID``) are removed when the job starts again.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..video_io import write_json
from .plan import IdentitySpec, RunSpec

METRICS = ("dino", "clip_i", "clip_t", "temporal_consistency", "motion")  # what every run's scores hold
Runner = Callable[[RunSpec, Path], dict]  # (run, its empty output folder) -> scores
Trainer = Callable[[IdentitySpec, Path], None]  # (identity, its empty output folder): writes identity.safetensors
IDENTITY_FILE = "identity.safetensors"


def run_record_path(out: Path, run_id: str) -> Path:
    return out / "runs" / f"{run_id}.json"


def identity_path(out: Path, identity_id: str) -> Path:
    return out / "identities" / identity_id / IDENTITY_FILE


@contextmanager
def job_lock(out: Path) -> Iterator[None]:
    """Hold OUT/.lock for the job: a second protocol on the same folder stops with a message instead of racing."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RuntimeError(f"{out}: another vcd protocol is running on this folder ({handle.read().strip()}); "
                               "wait for it or choose another --out") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield


def remove_partials(out: Path) -> None:
    """Delete what runs killed mid-way left (only call it holding the job lock)."""
    for folder in (out / "runs", out / "identities"):
        for path in folder.glob(".*.partial-*") if folder.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)


def read_record(out: Path, spec: RunSpec) -> dict | None:
    """The finished run's record, or None when it has not finished; a record of another spec is an error."""
    path = run_record_path(out, spec.id)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a run record ({error}); delete it to run {spec.id} again") from None
    if record.get("spec") != json.loads(json.dumps(spec.to_json())):
        raise ValueError(f"{path}: holds a different run than the plan's {spec.id} (edited by hand?); delete it "
                         "to run it again")
    return record


def _check_scores(run_id: str, scores: object) -> dict:
    if not isinstance(scores, dict):
        raise TypeError(f"run {run_id}: the runner returned {type(scores).__name__}, not a dict of scores")
    missing = [m for m in METRICS if m not in scores]
    if missing:
        raise ValueError(f"run {run_id}: the runner's scores lack {', '.join(missing)}")
    for key, value in scores.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"run {run_id}: score {key} = {value!r} is not a finite number or None")
    return {key: (None if value is None else float(value)) for key, value in scores.items()}


def _in_place(final: Path, fill: Callable[[Path], None]) -> None:
    """Let ``fill`` write a fresh partial folder, then rename it to ``final`` (replacing a leftover one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        fill(partial)
        if final.exists():  # a kill between this rename and the record left it: it was never counted
            shutil.rmtree(final)
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def execute_run(spec: RunSpec, out: Path, runner: Runner) -> dict:
    """Run one video into OUT/runs/ID/ and write its record last; returns the record."""
    started = time.time()
    scores: dict = {}

    ready = replace(spec, embedding=str(identity_path(out, spec.identity_id))) if spec.identity_id else spec

    def fill(folder: Path) -> None:
        scores.update(_check_scores(spec.id, runner(ready, folder)))

    final = out / "runs" / spec.id
    _in_place(final, fill)
    record = {
        "id": spec.id,
        "spec": spec.to_json(),
        "scores": scores,
        "outputs": sorted(str(p.relative_to(out)) for p in final.rglob("*") if p.is_file()),
        "seconds": round(time.time() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    write_json(record, run_record_path(out, spec.id), overwrite=True)  # only ever over a killed run's leftover
    return record


def execute_training(spec: IdentitySpec, out: Path, trainer: Trainer) -> Path:
    """Train one identity into OUT/identities/ID/ (renamed into place whole); returns its embedding file."""
    target = identity_path(out, spec.id)

    def fill(folder: Path) -> None:
        trainer(spec, folder)
        if not (folder / IDENTITY_FILE).is_file():
            raise RuntimeError(f"identity {spec.id}: the trainer wrote no {IDENTITY_FILE}")

    _in_place(target.parent, fill)
    return target
