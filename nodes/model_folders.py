"""The pack's model folders under ComfyUI's ``models/``: registering them, listing them, resolving a choice.

Keys follow what users of other packs already have: ``sams`` and ``grounding-dino``
(segment-anything packs), ``ultralytics_bbox`` (Impact Pack), plus our ``vcd_eval``.
"""

from __future__ import annotations

import os

SUBFOLDERS = {"ultralytics_bbox": ("ultralytics", "bbox")}  # keys whose folder under models/ is not the key


def folder_name(key: str) -> str:
    """The folder of ``key`` as artists find it: ``models/ultralytics/bbox`` for ``ultralytics_bbox``."""
    return "/".join(("models", *SUBFOLDERS.get(key, (key,))))


def register(key: str) -> None:
    """Make ``models/<folder>`` a folder of ``key`` beside any that extra_model_paths.yaml names (idempotent)."""
    import folder_paths

    folder_paths.add_model_folder_path(key, os.path.join(folder_paths.models_dir, *SUBFOLDERS.get(key, (key,))))


def hf_folders(key: str) -> list[str]:
    """Sub-folders of a registered folder that hold a Hugging Face model (a config.json)."""
    import folder_paths

    register(key)
    names = set()
    for root in folder_paths.get_folder_paths(key):
        if os.path.isdir(root):
            names.update(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.json")))
    return sorted(names)


def hf_folder_path(key: str, name: str, what: str) -> str:
    """The path of sub-folder ``name`` (one level, no escaping the folder); ``what`` names the input in errors."""
    import folder_paths

    register(key)
    for root in folder_paths.get_folder_paths(key):
        candidate = os.path.join(root, name)
        if os.path.dirname(os.path.normpath(candidate)) == os.path.normpath(root) and os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"{what}: no folder {name!r} in {folder_name(key)}; put a Hugging Face copy of the model "
                            "there.")


def file_path(key: str, name: str, what: str, hint: str) -> str:
    """The path of file ``name`` in a registered folder, or an error naming the input and what to put where."""
    import folder_paths

    register(key)
    path = folder_paths.get_full_path(key, name)
    if path is None:
        raise FileNotFoundError(f"{what}: {name!r} is not in {folder_name(key)}; {hint}")
    return path


def identity_problem(embedding: str) -> str | None:
    """Why ``embedding`` (a name under models/embeddings) cannot be used as an identity, saying which file to put
    where; None when it reads as one."""
    import folder_paths

    from ..vcd_core import embedding_io

    path = folder_paths.get_full_path("embeddings", embedding)
    if path is None:
        roots = ", ".join(folder_paths.get_folder_paths("embeddings"))
        return (f"no identity file {embedding!r} in models/embeddings ({roots}). Put it there (e.g. the Magic-Me "
                "authors' mona.pt, or train one: train_identity.json writes models/embeddings/vcd/NAME.safetensors), "
                "press R in the browser to refresh the list, and pick it in VCD Load Identity.")
    try:
        embedding_io.read_embedding(path)
    except ValueError as error:
        return f"the identity file {path} cannot be used: {error}"
    return None
