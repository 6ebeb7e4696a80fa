"""Test-only instruments for graphs on a real server: what reaches the sampler, and what ran inside it.

``sampling_probe`` puts an OUTER_SAMPLE wrapper on a clone of a MODEL. Wired after AnimateDiff-Evolved's
Use Evolved Sampling, it sits inside ADE's own wrapper: it sees the noise ADE hands on to core's
sampling and records, during that one sampling call, every UNet forward (its batch) and every
temporal-layer forward (its batch, video length, and whether GroupNorm was swapped for ADE's). A
CALC_COND_BATCH wrapper on the same clone (inside ADE's: once per context window) records the frames of
each call, ADE's window indices and every cond's mask as the model's results are weighted by it.
Each call writes ``<output>/vcd_probe/<tag>-<n>.safetensors`` (the noise + a JSON ``record``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROBE_KEY = "VCD_test_probe"
TEMPORAL_LAYER = "VanillaTemporalModule"  # AnimateDiff-Evolved's inserted temporal transformer
UNET = "UNetModel"


def cond_probe(calls: list):
    """A CALC_COND_BATCH wrapper appending ``(window indices or None, frames, masks per cond list)`` per call."""

    def wrapper(executor, model, conds, x_in, timestep, model_options):
        window = model_options.get("transformer_options", {}).get("ad_params", {}).get("sub_idxs")
        masks = [[c.get("mask") for c in (cond or [])] for cond in conds]
        calls.append((None if window is None else list(window), int(x_in.shape[0]), masks))
        return executor(model, conds, x_in, timestep, model_options)

    return wrapper


def outer_sample_probe(folder: Path, tag: str, skip_sampling: bool, cond_calls: list):
    """An OUTER_SAMPLE wrapper recording one sampling call (``skip_sampling``: return the latent unsampled)."""
    import safetensors.torch

    def wrapper(executor, *args, **kwargs):
        cond_calls.clear()
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
        tensors = {"noise": args[0].detach().float().cpu().contiguous()}
        conds = []
        for i, (window, frames, masks) in enumerate(cond_calls):
            names = [[None if m is None else f"mask_{i}_{k}_{j}" for j, m in enumerate(ms)] for k, ms in enumerate(masks)]
            tensors.update({name: m.detach().float().cpu().clone() for ms, ns in zip(masks, names)
                            for m, name in zip(ms, ns) if name})
            conds.append({"window": window, "frames": frames, "masks": names})
        record = {"temporal_calls": temporal, "unet_batches": unet, "frames": int(args[1].shape[0]), "cond_calls": conds}
        safetensors.torch.save_file(tensors, str(folder / f"{tag}-{index}.safetensors"), metadata={"record": json.dumps(record)})
        return output

    return wrapper


def sampling_probe(model, folder: Path, tag: str, skip_sampling: bool = False):
    """A clone of ``model`` whose sampling calls are recorded under ``tag``."""
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    cond_calls: list = []
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, PROBE_KEY, outer_sample_probe(folder, tag, skip_sampling, cond_calls))
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, PROBE_KEY, cond_probe(cond_calls))
    return patched

