"""Identity embeddings on disk: read ours, the authors' and A1111 files; write ours safely.

Our file is safetensors ``{"emb_params": [N, 768]}`` with string metadata, which core
CLIPTextEncode reads as ``embedding:NAME`` with no help. The authors' ``.pt`` files
(``{"string_to_param": {"*": T}}``) and A1111 ``.pt`` files are pickles: they are read only
through ``torch.load(weights_only=True)``. Writes are atomic (``files.write_atomic``: temp file, fsync, then a hard link
that fails if the name is taken, or a rename when overwriting), never overwrite unless asked, and
names cannot leave their folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .files import load_tensors, write_atomic

__all__ = ["Embedding", "check_name", "files_answering", "fingerprint", "read_embedding", "write_embedding"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # whole name (fullmatch: no '$' newline hole)


@dataclass
class Embedding:
    """``vectors`` ``[tokens, width]`` float32 and the file's metadata (strings)."""

    vectors: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])


def check_name(name: str) -> str:
    """An embedding name that is a plain file stem: letters, digits, ``_ . -``; no paths, no ``..``."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', starting with a letter "
            "or digit, with no path separators or '..'."
        )
    return name


LOADER_SUFFIXES = ("", ".safetensors", ".pt", ".bin")  # what ComfyUI's embedding:NAME tries (comfy/sd1_clip.py load_embed)


def files_answering(roots: Iterable[str | os.PathLike], name: str) -> list[Path]:
    """Every file ``embedding:NAME`` could load: NAME plus a loader suffix in any folder under ``roots`` (links
    followed, as ComfyUI searches), compared case-insensitively as on Windows and macOS disks."""
    wanted = {(name + suffix).casefold() for suffix in LOADER_SUFFIXES}
    found = {Path(folder, file) for root in roots for folder, _, files in os.walk(root, followlinks=True)
             for file in files if file.casefold() in wanted}
    return sorted(found)


def fingerprint(*parts: torch.Tensor | str) -> str:
    """First 16 hex digits of the SHA-256 of the tensors' float32 bytes and the strings' UTF-8: tells base models
    and training photos apart cheaply."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_embedding(path: str | os.PathLike) -> Embedding:
    """Read a safetensors (``emb_params``/``clip_l``/first key) or A1111/authors' ``.pt`` embedding.

    A broken, empty or unsafe file, or one whose vectors are empty or not finite, is a ValueError
    naming the file and what to do, never a loader's own message.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                if not keys:
                    raise ValueError(f"{path.name}: the file holds no tensor")
                key = next((k for k in ("emb_params", "clip_l") if k in keys), keys[0])
                vectors, metadata = f.get_tensor(key), dict(f.metadata() or {})
        except (OSError, SafetensorError) as error:
            raise ValueError(f"{path.name}: not a readable .safetensors file ({error}); copy it again or train it "
                             "again.") from None
    elif path.suffix in (".pt", ".bin"):
        data = load_tensors(path, "Copy it again, or use the .safetensors version of the embedding (or one from a "
                                  "source you trust, converted to .safetensors).")
        if isinstance(data, dict) and "string_to_param" in data:
            vectors = next(iter(data["string_to_param"].values()))
            metadata = {k: str(data[k]) for k in ("name", "step", "sd_checkpoint_name") if data.get(k) is not None}
        elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
            vectors, metadata = next(iter(data.values())), {}  # diffusers learned_embeds.bin: {token: [D]}
        else:
            raise ValueError(f"{path.name}: not an embedding file (no 'string_to_param' entry)")
    else:
        raise ValueError(f"{path.name}: embeddings are .safetensors or .pt files")
    if not isinstance(vectors, torch.Tensor) or vectors.ndim == 0 or vectors.numel() == 0:
        raise ValueError(f"{path.name}: the embedding holds no vectors (0 tokens); train it again.")
    vectors = vectors.detach().float().reshape(-1, vectors.shape[-1])
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{path.name}: the embedding's vectors are not finite (NaN or inf: a diverged training "
                         "run); train it again with a lower learning rate.")
    return Embedding(vectors, metadata)


def write_embedding(folder: str | os.PathLike, name: str, embedding: Embedding, overwrite: bool = False) -> Path:
    """Write ``folder/NAME.safetensors`` atomically (temp file, fsync, link or rename, fsync the folder); never
    replace an existing file, even one created while writing, unless ``overwrite``; non-finite vectors are refused."""
    target = Path(folder) / f"{check_name(name)}.safetensors"
    if not bool(torch.isfinite(embedding.vectors).all()):
        raise ValueError(f"{target.name}: the vectors are not finite (NaN/inf), so nothing was written.")

    def write(temp: str) -> None:
        save_file({"emb_params": embedding.vectors.detach().float().contiguous().cpu()}, temp,
                  metadata={k: str(v) for k, v in embedding.metadata.items()})

    return write_atomic(target, write, overwrite)
