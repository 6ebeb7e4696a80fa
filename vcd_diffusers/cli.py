"""The ``vcd`` command: Video Custom Diffusion (Magic-Me) on diffusers, without ComfyUI.

Subcommands live in a registry: a module listed in ``COMMAND_MODULES`` calls ``register(Command(...))`` when
imported (``vcd_diffusers.commands`` registers train-id, generate, refine-face, upscale and evaluate), so
another module adds its command by appending its name there. The option groups and helpers below
(models, sampling, identity, output, progress) are shared by every command.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Command", "COMMANDS", "COMMAND_MODULES", "register", "build_parser", "main", "add_model_options",
           "add_sampling_options", "add_prompt_options", "add_output_options", "load_models", "sampling",
           "identity", "Progress", "check_outputs", "write_outputs"]

COMMAND_MODULES = ["vcd_diffusers.commands", "vcd_diffusers.protocol.command"]  # imported by build_parser; each registers its commands
ERRORS = (ValueError, OSError, ImportError)  # shown as one line (VCD_DEBUG=1 shows the traceback)


@dataclass(frozen=True)
class Command:
    """A subcommand: ``configure(parser)`` adds its options, ``run(args)`` does the work (returns the exit code,
    None for 0); ``examples`` end its ``--help``."""

    name: str
    summary: str
    examples: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add ``command`` to the ``vcd`` command (its name must be new)."""
    if command.name in COMMANDS:
        raise ValueError(f"vcd: two commands are named {command.name!r}")
    COMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="vcd", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Video Custom Diffusion (Magic-Me, arXiv 2402.09368) on diffusers: SD1.5 + AnimateDiff videos "
                    "of one person, offline. `vcd COMMAND --help` shows a command's options and examples.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.summary, description=command.summary,
                                  epilog="examples:\n" + command.examples,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        command.configure(sub)
        sub.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``vcd`` subcommand; errors in the inputs print one line naming what to fix and exit 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args._command.run(args) or 0)
    except ERRORS as error:
        if os.environ.get("VCD_DEBUG") == "1":
            raise
        print(f"vcd {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vcd {args.command}: interrupted; no half-written file was left.", file=sys.stderr)
        return 130


# ---- option groups shared by the commands ---------------------------------------------------------------------

def add_model_options(parser: argparse.ArgumentParser, motion: bool = True) -> None:
    group = parser.add_argument_group("models (local files; nothing is downloaded)")
    group.add_argument("--checkpoint", type=Path, required=True,
                       help="original single-file SD1.5 checkpoint (.safetensors, or .ckpt read as tensors only)")
    if motion:
        group.add_argument("--motion-module", type=Path, required=True,
                           help="AnimateDiff motion module, e.g. mm_sd_v15_v2.ckpt")
    group.add_argument("--config-dir", type=Path, help="component configs and tokenizer for another model size "
                       "(default: SD1.5's, shipped in vcd_diffusers/configs)")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    if motion:
        group.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                           help="auto: bf16 (fp16 without bf16) on CUDA, fp32 on the CPU")


def add_prompt_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("prompt and identity")
    group.add_argument("--prompt", required=required, help="write {identity} where the person goes, e.g. "
                       "'a photo of {identity} woman walking in a garden'")
    group.add_argument("--negative", default="", help="negative prompt")
    group.add_argument("--identity", type=Path, help="identity embedding: ours (.safetensors from train-id), the "
                       "authors' .pt or an A1111 .pt")


def add_sampling_options(parser: argparse.ArgumentParser, defaults, denoise: bool = True) -> None:
    """Sampling widgets with a stage's defaults (a ``pipeline.Sampling``)."""
    from .pipeline import SAMPLERS

    group = parser.add_argument_group("sampling")
    group.add_argument("--steps", type=int, default=defaults.steps)
    group.add_argument("--cfg", type=float, default=defaults.cfg, help="classifier-free guidance scale")
    group.add_argument("--sampler", choices=SAMPLERS, default=defaults.sampler)
    group.add_argument("--karras", action=argparse.BooleanOptionalAction, default=defaults.karras,
                       help="Karras sigmas (euler and dpmpp_2m)")
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--gamma", type=float, default=defaults.gamma, help="3D noise prior: correlation of "
                       "neighbouring frames' noise (0 i.i.d., paper 0.1, 0.2 almost still)")
    if denoise:
        group.add_argument("--denoise", type=float, default=defaults.denoise,
                           help="how much of the schedule to redo (lower keeps more of the input)")


def add_output_options(parser: argparse.ArgumentParser, command: str) -> None:
    from .video_io import VIDEO_SUFFIXES, default_video_suffix

    group = parser.add_argument_group("output")
    group.add_argument("--out", type=Path, default=Path(f"vcd_{command.replace('-', '_')}{default_video_suffix()}"),
                       help=f"the video ({', '.join(VIDEO_SUFFIXES)}; default %(default)s)")
    group.add_argument("--frames-dir", type=Path, help="also write every frame as PNG into this folder")
    group.add_argument("--fps", type=float, default=8.0)
    group.add_argument("--overwrite", action="store_true", help="replace existing output files")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def device_and_dtype(args: argparse.Namespace):
    import torch

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available here; use --device cpu.")
    choice = getattr(args, "dtype", "fp32")
    if choice == "auto":
        if device.type != "cuda":
            return device, torch.float32
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]


def load_models(args: argparse.Namespace):
    """The models the options name, on the chosen device (diffusers' and transformers' chatter silenced)."""
    import diffusers
    import transformers

    from .loading import load_models as load

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    device, dtype = device_and_dtype(args)
    return load(args.checkpoint, getattr(args, "motion_module", None), args.config_dir, device, dtype)


def sampling(args: argparse.Namespace, defaults):
    """A ``pipeline.Sampling`` from the sampling options (``defaults`` for those the command has not)."""
    from .pipeline import Sampling

    return Sampling(steps=args.steps, cfg=args.cfg, sampler=args.sampler, karras=args.karras,
                    denoise=getattr(args, "denoise", defaults.denoise), gamma=args.gamma, seed=args.seed)


def identity(args: argparse.Namespace, models):
    """The ``--identity`` embedding, checked against the text encoder's width (None without one)."""
    from .loading import load_identity

    return load_identity(args.identity, models.text.width) if args.identity is not None else None


class Progress:
    """A tqdm bar on stderr, made at the first update (a ``pipeline.Progress`` callback)."""

    def __init__(self, description: str, quiet: bool = False):
        self.description, self.quiet, self.bar = description, quiet, None

    def __call__(self, done: int, total: int, **postfix) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, disable=self.quiet, file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        if done == total:
            self.bar.close()


def check_outputs(args: argparse.Namespace, height: int | None = None, width: int | None = None) -> None:
    """Before any work: a video name and size ``write_video`` takes, and no output file that is there already
    (without ``--overwrite``), so a long run never ends in a refusal to write."""
    from vcd_core.files import exists_error

    from .video_io import check_video

    check_video(args.out, height, width, args.fps)
    frames_dir = getattr(args, "frames_dir", None)
    taken = [args.out] if args.out.exists() else []
    if frames_dir is not None and frames_dir.is_dir():
        taken += sorted(frames_dir.glob("frame_*.png"))[:1]
    if taken and not args.overwrite:
        raise exists_error(taken[0])


def write_outputs(frames, args: argparse.Namespace) -> None:
    """The video (``--out``) and, with ``--frames-dir``, the PNG frames; says where they went."""
    from .video_io import write_frames, write_video

    path = write_video(frames, args.out, args.fps, args.overwrite)
    print(f"wrote {path} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
    if args.frames_dir is not None:
        write_frames(frames, args.frames_dir, args.overwrite)
        print(f"wrote {frames.shape[0]} PNG frames into {args.frames_dir}")
