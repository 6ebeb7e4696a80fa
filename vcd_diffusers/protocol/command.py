"""``vcd protocol PLAN.toml --out DIR``: the paper's evaluation protocol as one resumable job (registered with
``vcd_diffusers.cli``). Run the same command again after a crash or Ctrl-C: finished runs are skipped. With Ray,
each video is one task (one GPU each when the cluster has GPUs); the plan's files and --out must be at the same
paths on every node (a shared filesystem)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .. import cli
from .executors import InProcess, RayTasks
from .job import finished_records, run_protocol
from .plan import SETTINGS, load_plan
from .report import write_report

EXAMPLES = (
    "  vcd protocol plan.toml --out results/                # every run in this process, then the report\n"
    "  vcd protocol plan.toml --out results/ --dry-run      # what the plan expands to, what is finished\n"
    "  vcd protocol plan.toml --out results/ --executor ray --workers 4           # a local Ray cluster\n"
    "  vcd protocol plan.toml --out /shared/res --executor ray --address auto    # an existing cluster\n"
    "  vcd protocol plan.toml --out results/ --report-only  # the report of the runs finished so far\n"
    "A plan (TOML; paths relative to it):\n"
    "  prompts = [\"a photo of {identity} on a beach\"]\n"
    "  seeds = [0, 1, 2, 3]\n"
    "  [models]\n"
    "  checkpoint = \"sd15.safetensors\"\n"
    "  motion_module = \"mm_sd_v15_v2.ckpt\"\n"
    "  dino = \"vcd_eval/dino-vits16\"\n"
    "  clip = \"vcd_eval/clip-vit-base-patch32\"\n"
    "  [[subjects]]\n"
    "  name = \"mona\"\n"
    "  class_word = \"woman\"\n"
    "  embedding = \"mona.pt\"        # or photos = \"photos/mona\" (+ masks = \"masks/mona\")\n"
    "  references = \"refs/mona\"\n"
    "  [[settings]]\n"
    "  gamma = 0.0\n"
    "  [[settings]]\n"
    "  gamma = 0.1\n"
    "Settings ([defaults] or each [[settings]]; the paper's default after =):\n"
    + "".join(f"  {key} = {json.dumps(setting.default)}: {setting.help}\n" for key, setting in SETTINGS.items())
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("plan", type=Path, help="the plan file (TOML: subjects, prompts, seeds, settings, models)")
    parser.add_argument("--out", type=Path, required=True, help="job folder: runs/, identities/ and the report")
    parser.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess")
    parser.add_argument("--address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: start a local one")
    parser.add_argument("--workers", type=int, help="CPUs of a local Ray cluster (one task each); default: all")
    parser.add_argument("--dry-run", action="store_true", help="list what the plan expands to and stop")
    parser.add_argument("--report-only", action="store_true", help="report the finished runs without running any")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Plan, run what is unfinished (unless --dry-run / --report-only), report. A bad plan is a ValueError
    naming the entry (one line, exit 2, from ``cli.main``)."""
    from .runner import run_video, train_identity

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {args.workers}).")
    plan = load_plan(args.plan)
    if args.dry_run or args.report_only:
        records = finished_records(plan, args.out)
        done = sum(r is not None for r in records)
        print(f"{len(plan.runs)} runs ({done} finished), {len(plan.identities)} identities to train from photos")
        if args.dry_run:
            for spec, record in zip(plan.runs, records):
                print(f"  {'done' if record else 'todo'}  {spec.id}  {spec.prompt!r}")
            return 0
    else:
        executor = RayTasks(args.address, args.workers) if args.executor == "ray" else InProcess()
        bars: dict[str, cli.Progress] = {}

        def progress(phase: str, done: int, total: int, item: str) -> None:
            bars.setdefault(phase, cli.Progress(phase, args.quiet))(done, total, last=item)

        try:
            records = run_protocol(plan, args.out, run_video, train_identity, executor, progress)
        except KeyboardInterrupt:
            print("vcd protocol: stopped; the finished runs are kept: run the same command to go on.", file=sys.stderr)
            return 130
        except Exception as error:  # a run failed: say which and how to go on
            if os.environ.get("VCD_DEBUG") == "1":
                traceback.print_exc()
            print(f"vcd protocol: error: {error}\nThe finished runs are kept: fix the cause and run the same command "
                  "to go on.", file=sys.stderr)
            return 1
    paths = write_report(plan, records, args.out.resolve())
    print("\n".join(f"wrote {path}" for path in paths.values()))
    return 0


cli.register(cli.Command("protocol", "the paper's evaluation protocol: subjects x prompts x seeds x settings from a "
                         "TOML plan, resumable, in-process or on Ray, reported like the paper's Tables 1-3",
                         EXAMPLES, configure, run))
