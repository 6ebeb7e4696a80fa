"""``vcd protocol``: the paper's evaluation protocol as one resumable job (subjects x prompts x seeds x
settings from a TOML plan), run in this process or over a Ray cluster, reported like the paper's Tables 1-3."""

from .executors import InProcess, RayTasks, connect_ray
from .job import finished_records, run_protocol
from .plan import SETTINGS, IdentitySpec, Plan, PlanError, RunSpec, Subject, load_plan
from .report import write_report
from .store import METRICS

__all__ = ["SETTINGS", "METRICS", "IdentitySpec", "InProcess", "Plan", "PlanError", "RayTasks", "RunSpec", "Subject",
           "connect_ray", "finished_records", "load_plan", "run_protocol", "write_report"]
