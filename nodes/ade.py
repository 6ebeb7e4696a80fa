"""AnimateDiff-Evolved (ADE) seen from this pack: does a MODEL's ADE sample settings keep our noise,
and the MODEL without ADE for training.

ADE's Use Evolved Sampling attaches its Sample Settings to the MODEL. At their defaults ADE passes
the sampler's noise through bit-identical; otherwise it regenerates (or mixes into) the noise from
the seed, and the 3D noise prior is lost. Nodes that draw from the prior warn the artist then.
"""

from __future__ import annotations

import logging

from .progress import send_progress_text

ADE_KEY = "ADE"  # ADE's key for its injections, additional (motion) models and wrappers on a MODEL
SAMPLE_SETTINGS = "ADE_sample_settings"  # the attachment ADE puts on the MODEL (ModelPatcherHelper)
# Each setting with the value that keeps the noise; any other value regenerates it from the seed
# (SampleSettings.prepare_noise in ADE's sample_settings.py).
PASS_THROUGH = (("batch_offset", 0), ("seed_offset", 0), ("noise_type", "default"), ("seed_gen", "comfy"),
                ("seed_override", None))
log = logging.getLogger("vcd")


def noise_changes(model) -> list[str]:
    """The ADE sample settings on ``model`` that replace or alter the sampler's noise (empty: passed through)."""
    get = getattr(model, "get_attachment", None)
    settings = get(SAMPLE_SETTINGS) if get is not None else None
    if settings is None:
        return []
    changes = [f"{name}={getattr(settings, name)!r} replaces it" for name, keep in PASS_THROUGH
               if getattr(settings, name, keep) != keep]
    layers = getattr(getattr(settings, "noise_layers", None), "layers", None)
    if layers:
        changes.append(f"{len(layers)} noise layer(s) mix other noise into it")
    iterations = getattr(getattr(settings, "iteration_opts", None), "iterations", 1)
    if iterations > 1:
        changes.append(f"iteration_opts ({iterations} iterations) re-noise it")
    return changes


def warn_if_prior_lost(model, gamma: float, node_id: str | None, node_name: str) -> str | None:
    """Log and show under the node when ADE's sample settings on ``model`` discard the 3D prior; the message or None."""
    changes = noise_changes(model) if gamma > 0 else []
    if not changes:
        return None
    message = (f"{node_name}: AnimateDiff-Evolved's Sample Settings on this MODEL change the sampler's noise "
               f"({'; '.join(changes)}), so the 3D noise prior (gamma {gamma:g}) is not what gets sampled. "
               "Keep the Sample Settings at their defaults (or leave them unwired) to use the prior.")
    log.warning(message)
    send_progress_text(node_id, message)
    return message


def without_animatediff(model):
    """The MODEL as the checkpoint gave it, for training: a clone without ADE's motion-module injections and
    models and without its beta schedule (the ``model_sampling`` object patch); ``model`` itself is untouched.
    A MODEL that ADE never touched is returned as is."""
    if ADE_KEY not in getattr(model, "injections", {}):
        return model
    plain = model.clone()
    plain.remove_injections(ADE_KEY)
    plain.remove_additional_models(ADE_KEY)
    plain.object_patches.pop("model_sampling", None)
    log.info("AnimateDiff-Evolved's motion modules and beta schedule are left out of this MODEL for training.")
    return plain
