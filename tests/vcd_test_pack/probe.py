"""Test-only instruments for graphs on a real server: what reaches the sampler, and what ran inside it.

``sampling_probe`` puts an OUTER_SAMPLE wrapper on a clone of a MODEL. Wired after AnimateDiff-Evolved's
Use Evolved Sampling, it sits inside ADE's own wrapper: it sees the noise ADE hands on to core's
sampling and records, during that one sampling call, every UNet forward (its batch) and every
temporal-layer forward (its batch, video length, and whether GroupNorm was swapped for ADE's). A
CALC_COND_BATCH wrapper on the same clone (inside ADE's: once per context window) records the frames of
each call, ADE's window indices and every cond's mask as the model's results are weighted by it, and (first
call only: they do not change between calls) every cond's cross-attention tensor (the prompt the UNet reads).
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
    """A CALC_COND_BATCH wrapper appending ``(window indices or None, frames, masks per cond list, cross-attention
    per cond list)`` per call."""

    def wrapper(executor, model, conds, x_in, timestep, model_options):
        window = model_options.get("transformer_options", {}).get("ad_params", {}).get("sub_idxs")
        masks = [[c.get("mask") for c in (cond or [])] for cond in conds]
        cross = [[getattr(c.get("model_conds", {}).get("c_crossattn"), "cond", None) for c in (cond or [])]
                 for cond in conds]
        calls.append((None if window is None else list(window), int(x_in.shape[0]), masks, cross))
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
        for i, (window, frames, masks, cross) in enumerate(cond_calls):
            names = _tensor_names(masks, f"mask_{i}")
            cross_names = _tensor_names(cross, "cross") if i == 0 else None
            for values, value_names in ((masks, names), (cross, cross_names or [])):
                tensors.update({name: t.detach().float().cpu().clone().contiguous() for ts, ns in zip(values, value_names)
                                for t, name in zip(ts, ns) if name})
            conds.append({"window": window, "frames": frames, "masks": names, "crossattn": cross_names})
        record = {"temporal_calls": temporal, "unet_batches": unet, "frames": int(args[1].shape[0]), "cond_calls": conds}
        safetensors.torch.save_file(tensors, str(folder / f"{tag}-{index}.safetensors"), metadata={"record": json.dumps(record)})
        return output

    return wrapper


def _tensor_names(per_list: list[list], prefix: str) -> list[list[str | None]]:
    """``PREFIX_k_j`` for cond j of cond list k (k 0: positive, 1: negative), None where it has no tensor."""
    return [[None if t is None else f"{prefix}_{k}_{j}" for j, t in enumerate(ts)] for k, ts in enumerate(per_list)]


def sampling_probe(model, folder: Path, tag: str, skip_sampling: bool = False):
    """A clone of ``model`` whose sampling calls are recorded under ``tag``."""
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    cond_calls: list = []
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, PROBE_KEY, outer_sample_probe(folder, tag, skip_sampling, cond_calls))
    patched.add_wrapper_with_key(WrappersMP.CALC_COND_BATCH, PROBE_KEY, cond_probe(cond_calls))
    return patched

