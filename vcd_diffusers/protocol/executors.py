"""Where the protocol's jobs run: in this process, or as Ray tasks (one per video) on a local or remote cluster.

Both take a picklable module-level function and its argument tuples and yield each result as it finishes;
the job folder must be reachable at the same path from every Ray worker (a shared filesystem on a cluster).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding vcd_diffusers/ and vcd_core/


class InProcess:
    """One job after another in this process (models stay loaded between runs)."""

    def map(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        for args in jobs:
            yield fn(*args)


def connect_ray(address: str | None = None, workers: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``ray://host:10001``; its nodes need vcd_diffusers installed),
    or start a local one with ``workers`` CPUs (they import this checkout); workers run offline. Does nothing when Ray is already connected."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs the ray package (pip install ray); or use --executor "
                           "inprocess") from None
    if ray.is_initialized():
        return
    # workers start in the driver's folder, not with its sys.path: give them the folder this package is in
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    ray.init(address=address, num_cpus=workers if address is None else None, runtime_env={"env_vars": env},
             include_dashboard=False, logging_level="WARNING")


class RayTasks:
    """One Ray task per job (one CPU each, and one GPU each when the cluster has GPUs), gathered as they finish.
    The first failure cancels the jobs not yet started and is raised; finished jobs stay finished."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address, self.workers = address, workers

    def map(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        import ray

        connect_ray(self.address, self.workers)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(fn).options(num_cpus=1, num_gpus=gpus)
        pending = [task.remote(*args) for args in jobs]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayTaskError as error:
                    raise error.cause if isinstance(error.cause, Exception) else error
        finally:
            for ref in pending:
                ray.cancel(ref)
