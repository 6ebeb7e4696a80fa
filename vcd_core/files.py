"""Files written atomically and never over someone else's: a temp file beside the target, flushed, then a hard
link that fails if the name is taken (or a rename when overwriting is asked for), then the folder flushed.

A reader never sees half a file, a crash leaves at most a hidden ``.NAME.*.tmp``, and a file another process
creates while we write is never replaced unless ``overwrite``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["check_weights_downloaded", "check_writable", "exists_error", "load_tensors", "write_atomic"]

WEIGHT_SUFFIXES = (".safetensors", ".bin")
LFS_POINTER = b"version https://git-lfs"  # what a clone without git-lfs leaves in place of each weights file


def exists_error(target: Path) -> FileExistsError:
    """The error for a target that is already there."""
    return FileExistsError(f"{target.name} already exists in {target.parent}: pick another name or turn overwrite on.")


def _refusal(name: str, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused file ``name``, as a clause: code in the pickle, or a file it
    cannot read (to that loader a damaged file and a pickle of a newer protocol look alike)."""
    if "Unsupported global" in str(error):  # torch names the global the pickle would have called
        return f"{name} holds more than tensors, so it is not loaded (a pickle like that can run code)"
    return (f"{name} is not a tensors-only file (damaged, or a pickle holding more than tensors, which could run "
            "code), so it is not loaded")


def load_tensors(path: str | os.PathLike, fix: str) -> Any:
    """What a pickled checkpoint (``.pt``/``.pth``/``.ckpt``/``.bin``) holds, read with ``torch.load(weights_only=True)``
    onto the CPU: never code. A file that is refused or unreadable is a ValueError naming it, saying why, then ``fix``."""
    import pickle

    import torch

    path = Path(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{_refusal(path.name, error)}. {fix}") from None
    except Exception as error:  # torch raises many kinds for a file that is not its format (EOFError, RuntimeError...)
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__  # EOFError has no text
        raise ValueError(f"{path.name} is not a readable checkpoint ({reason}). {fix}") from None


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    """Flush a file's bytes (or a folder's entries) to disk; folders cannot be opened on Windows, which is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if directory else os.O_RDWR)
    except OSError:
        if not directory:
            raise
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_new(temp: str, target: Path) -> None:
    """Give ``temp``'s file the name ``target`` only if no file has it, atomically (no check-then-rename window)."""
    try:
        os.link(temp, target)
        return
    except FileExistsError:
        raise exists_error(target) from None
    except OSError:  # no hard links here (FAT, some network shares): claim the name exclusively, then move onto it
        pass
    try:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise exists_error(target) from None
    try:
        os.replace(temp, target)
    except BaseException:
        os.unlink(target)
        raise


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Make ``folder`` if needed and prove a file can be created in it, before long work whose result goes there
    (training): a read-only or full disk is then a PermissionError naming ``what``, not work lost at the end."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what}: {folder} is a file, not a folder, so nothing was started; give a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".vcd-write-check.", suffix=".tmp", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PermissionError(f"{what}: cannot write to {folder} ({reason}), so nothing was started; make that folder "
                              "writable, or give another one.") from None


def write_atomic(target: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """``write(temp_path)`` writes the content; it then becomes ``target`` atomically (folders made as needed).
    An existing ``target``, even one created while writing, is a FileExistsError unless ``overwrite``."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise exists_error(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o644)  # mkstemp makes 0600; what we write is meant to be shared
        _fsync(temp)
        if overwrite:
            os.replace(temp, target)
        else:
            _link_new(temp, target)
        _fsync(target.parent, directory=True)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def check_weights_downloaded(folder: str | os.PathLike, what: str) -> None:
    """Refuse a Hugging Face folder whose weights are missing, empty or git-lfs pointers (cloned without git-lfs, or
    a download cut short), naming the file, before a library fails on it with a header error."""
    folder = Path(folder)
    found = {suffix: sorted(p for p in folder.glob(f"*{suffix}") if p.is_file()) for suffix in WEIGHT_SUFFIXES}
    weights = found[".safetensors"] or found[".bin"]  # transformers reads .bin only without .safetensors
    if not weights:
        raise FileNotFoundError(f"{what}: {folder} holds no weights (model.safetensors or pytorch_model.bin): "
                                "download the model's files into it.")
    for path in weights:
        with path.open("rb") as file:
            head = file.read(len(LFS_POINTER))
        if not head or head == LFS_POINTER:
            kind = "empty" if not head else "a git-lfs pointer, not the weights"
            raise ValueError(f"{what}: {path.name} in {folder} is {kind}: the folder was cloned without git-lfs or "
                             "its download stopped; fetch that file again (git lfs pull, or from the model's page).")
