"""One protocol job: train the identities the plan needs, run every unfinished video, gather one table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .executors import InProcess, RayTasks
from .plan import Plan
from .store import Runner, Trainer, execute_run, execute_training, identity_path, job_lock, read_record, \
    remove_partials

Progress = Callable[[str, int, int, str], None]  # (phase "identities" | "runs", done, total, id)


def run_protocol(plan: Plan, out: str | Path, runner: Runner, trainer: Trainer,
                 executor: InProcess | RayTasks | None = None, progress: Progress | None = None) -> list[dict]:
    """Run what is not finished yet and return every run's record in plan order (the same table whichever
    executor ran them). Finished runs are skipped; a killed job loses at most the runs in flight."""
    out = Path(out).resolve()
    executor = executor or InProcess()
    with job_lock(out):
        remove_partials(out)
        identities = [i for i in plan.identities if not identity_path(out, i.id).is_file()]
        for done, path in enumerate(executor.map(execute_training, [(i, out, trainer) for i in identities]), 1):
            if progress:
                progress("identities", done, len(identities), path.parent.name)
        records = {spec.id: read_record(out, spec) for spec in plan.runs}
        todo = [spec for spec in plan.runs if records[spec.id] is None]
        for done, record in enumerate(executor.map(execute_run, [(spec, out, runner) for spec in todo]), 1):
            records[record["id"]] = record
            if progress:
                progress("runs", done, len(todo), record["id"])
    return [records[spec.id] for spec in plan.runs]


def finished_records(plan: Plan, out: str | Path) -> list[dict | None]:
    """The records of the plan's runs that have finished so far (None for the others), for a report mid-job."""
    out = Path(out).resolve()
    return [read_record(out, spec) for spec in plan.runs]
