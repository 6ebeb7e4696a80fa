"""Helper models that are not ComfyUI types (GroundingDINO, SAM) under ComfyUI's model management: they rest on
the offload device, reach the GPU for a node's run, and are unloaded like any model when ComfyUI needs memory."""

from __future__ import annotations

import torch


class _Holder(torch.nn.Module):
    """What the ModelPatcher manages: it writes a plain ``device`` attribute, a read-only property on
    transformers' and SAM's models."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def managed(module: torch.nn.Module):
    """A ComfyUI ModelPatcher over ``module``, which is moved to the offload device; ``use`` it before running it."""
    import comfy.model_management
    import comfy.model_patcher

    offload = comfy.model_management.unet_offload_device()
    return comfy.model_patcher.ModelPatcher(_Holder(module.to(offload)),
                                            load_device=comfy.model_management.get_torch_device(), offload_device=offload)


def use(*patchers) -> None:
    """Load these models onto the GPU through ComfyUI, which frees room for them and unloads them when it needs it."""
    import comfy.model_management

    # Whole: their layers are plain torch ones, which ComfyUI's partial (low-VRAM) loading cannot cast.
    comfy.model_management.load_models_gpu(list(patchers), force_full_load=True)
