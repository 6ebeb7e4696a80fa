"""Test-only instruments for graphs on a real server: what reaches the sampler, and what ran inside it.

``sampling_probe`` puts an OUTER_SAMPLE wrapper on a clone of a MODEL. Wired after AnimateDiff-Evolved's
Use Evolved Sampling, it sits inside ADE's own wrapper: it sees the noise ADE hands on to core's
sampling and records, during that one sampling call, every UNet forward (its batch) and every
temporal-layer forward (its batch, video length, and whether GroupNorm was swapped for ADE's).
Each call writes ``<output>/vcd_probe/<tag>-<n>.safetensors`` (the noise + a JSON ``record``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROBE_KEY = "VCD_test_probe"
TEMPORAL_LAYER = "VanillaTemporalModule"  # AnimateDiff-Evolved's inserted temporal transformer
UNET = "UNetModel"


def outer_sample_probe(folder: Path, tag: str, skip_sampling: bool):
    """An OUTER_SAMPLE wrapper recording one sampling call (``skip_sampling``: return the latent unsampled)."""
    import safetensors.torch

    def wrapper(executor, *args, **kwargs):
        temporal: list[list] = []
        unet: list[int] = []
        group_norm = torch.nn.GroupNorm.forward  # ADE's v1 path swaps it inside each UNet call

        def hook(module, inputs, _output):
            kind = type(module).__name__
            if kind == TEMPORAL_LAYER:
                swapped = torch.nn.GroupNorm.forward is not group_norm
                temporal.append([int(inputs[0].shape[0]), int(module.video_length), swapped])
            elif kind == UNET:
                unet.append(int(inputs[0].shape[0]))

        handle = torch.nn.modules.module.register_module_forward_hook(hook)
        try:
            output = args[1] if skip_sampling else executor(*args, **kwargs)
        finally:
            handle.remove()
        folder.mkdir(parents=True, exist_ok=True)
        index = len(list(folder.glob(f"{tag}-*.safetensors")))
        record = {"temporal_calls": temporal, "unet_batches": unet, "frames": int(args[1].shape[0])}
        safetensors.torch.save_file({"noise": args[0].detach().float().cpu().contiguous()},
                                    str(folder / f"{tag}-{index}.safetensors"), metadata={"record": json.dumps(record)})
        return output

    return wrapper


def sampling_probe(model, folder: Path, tag: str, skip_sampling: bool = False):
    """A clone of ``model`` whose sampling calls are recorded under ``tag``."""
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, PROBE_KEY, outer_sample_probe(folder, tag, skip_sampling))
    return patched

