"""Load what users have, offline: an original single-file SD1.5 checkpoint, an AnimateDiff motion module in the
``mm_sd_v15_v2`` layout and identity embeddings (ours, the authors', A1111).

The component configs and the CLIP tokenizer ship in ``vcd_diffusers/configs`` (nothing is fetched from a hub);
``config_dir`` points at another folder laid out the same way (for other model sizes, e.g. the tests' tiny ones).
Checkpoints are read with safetensors or ``torch.load(weights_only=True)``, converted with diffusers' own
single-file conversion and loaded strictly, so a file of another family is an error naming it, never a silent
half-load. The text encoder is built by ``vcd_core.text_encoder`` from the checkpoint's weights, the path
identity training in ComfyUI uses too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vcd_core import embedding_io
from vcd_core.files import load_tensors
from vcd_core.text_encoder import IdentityTextEncoder, clip_text_model_from_state_dict

__all__ = ["CONFIGS", "Models", "config_file", "read_state_dict", "load_models", "load_motion_adapter",
           "load_identity"]

CONFIGS = Path(__file__).parent / "configs"
COMPONENT_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "scheduler": "scheduler/scheduler_config.json",
    "motion_adapter": "motion_adapter/config.json",
    "tokenizer": "tokenizer/vocab.json",
    "tokenizer merges": "tokenizer/merges.txt",
}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNET_PREFIX = "model.diffusion_model."
TEXT_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "vocab_size")
FAMILY_HINTS = {  # keys that other model families have in place of SD1.5's
    "conditioner.embedders.1.": "an SDXL checkpoint",
    "cond_stage_model.model.": "an SD2.x checkpoint (OpenCLIP text encoder)",
    "double_blocks.": "a FLUX checkpoint",
}


def config_file(config_dir: str | os.PathLike | None, component: str) -> Path:
    """The file of one component's config (or the tokenizer) in ``config_dir`` (default: the shipped SD1.5 set)."""
    folder = Path(config_dir) if config_dir is not None else CONFIGS
    path = folder / COMPONENT_FILES[component]
    if not path.is_file():
        shipped = CONFIGS / COMPONENT_FILES[component]
        raise FileNotFoundError(
            f"{component} config: {path} is missing. Put the diffusers {COMPONENT_FILES[component]} there "
            f"(the package ships SD1.5's as {shipped}; reinstall vcd_diffusers if that one is gone).")
    return path


def _json(config_dir: str | os.PathLike | None, component: str) -> dict:
    path = config_file(config_dir, component)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{component} config: {path} is not valid JSON ({error}); copy it again.") from None


def read_state_dict(path: str | os.PathLike, what: str, as_saved: bool = False) -> dict:
    """All tensors of a ``.safetensors`` or pickled (``.ckpt``/``.pt``/``.pth``/``.bin``, tensors only) file,
    unwrapped from a ``state_dict`` entry (``as_saved``: the pickle's dict as it is, nested entries kept);
    ``what`` names the input in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path}; check the path.")
    if path.suffix == ".safetensors":
        import safetensors.torch
        from safetensors import SafetensorError

        try:
            return safetensors.torch.load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise ValueError(f"{what}: {path.name} is not a readable .safetensors file ({error}); copy it again.") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise ValueError(f"{what}: {path.name} is neither .safetensors nor one of {', '.join(PICKLE_SUFFIXES)}.")
    try:
        data = load_tensors(path, "Copy it again, or use a .safetensors version of it.")
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    while not as_saved and isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path.name} holds a {type(data).__name__}, not a dict of tensors.")
    return data if as_saved else {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, source: Path,
                 may_miss: tuple[str, ...] = ()) -> None:
    """Load converted weights, refusing missing, extra or misshapen tensors with a message naming the file."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(may_miss)]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        detail = (f"{len(missing)} tensors missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:1]}), {len(misshapen)} of another shape (e.g. {misshapen[:1]})")
        raise ValueError(f"{what}: {source.name} does not fit the {what} config ({detail}). It is not an SD1.5 "
                         "file of this layout, or --config-dir describes another model size.")
    model.load_state_dict(state, strict=False)


def _check_family(state: dict[str, torch.Tensor], source: Path) -> None:
    for prefix, family in FAMILY_HINTS.items():
        if any(k.startswith(prefix) for k in state):
            raise ValueError(f"checkpoint: {source.name} looks like {family}; vcd needs an SD1.5 checkpoint "
                             "(e.g. Realistic Vision 5.1).")
    if not any(k.startswith(UNET_PREFIX) for k in state):
        raise ValueError(f"checkpoint: {source.name} holds no SD1.5 UNet ('{UNET_PREFIX}*' keys): it is not an "
                         "original single-file SD1.5 checkpoint (a diffusers folder or a LoRA?).")


@dataclass
class Models:
    """An SD1.5 checkpoint's parts in diffusers/transformers classes, plus an optional motion module.

    ``unet`` is the image UNet (identity training); ``video_unet()`` adds the motion module to it.
    ``text.model`` is the ``CLIPTextModel``, ``text.tokenizer`` the CLIP tokenizer.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text: IdentityTextEncoder  # the checkpoint's CLIP text model, with identity vectors in place of {identity}
    scheduler_config: dict
    motion_adapter: torch.nn.Module | None
    source: Path
    device: torch.device
    dtype: torch.dtype
    _video_unet: torch.nn.Module | None = None

    def video_unet(self) -> torch.nn.Module:
        """The UNet with the motion module inserted (``UNetMotionModel``), built once, on ``device``/``dtype``."""
        if self._video_unet is None:
            if self.motion_adapter is None:
                raise ValueError("motion module: video needs an AnimateDiff motion module (e.g. mm_sd_v15_v2.ckpt); "
                                 "pass it with --motion-module.")
            from diffusers import UNetMotionModel

            self._video_unet = _moved(_build(UNetMotionModel.from_unet2d, self.unet, self.motion_adapter), self.device,
                                      self.dtype)
            self._video_unet.eval().requires_grad_(False)
        return self._video_unet

    @property
    def max_frames(self) -> int:
        """The most frames the motion module's position encoding covers (32 for mm_sd_v15_v2)."""
        return int(self.video_unet().config.motion_max_seq_length)


def _moved(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` (built in float32) on ``device``, cast only when another ``dtype`` is asked (diffusers warns on
    every cast)."""
    return model.to(device) if dtype == torch.float32 else model.to(device, dtype)


def _build(make, *args, **kwargs) -> torch.nn.Module:
    """``make(*args, **kwargs)`` with weight initialisation skipped: every weight is loaded from the file."""
    from diffusers.models.modeling_utils import no_init_weights

    with no_init_weights():
        return make(*args, **kwargs)


def load_models(checkpoint: str | os.PathLike, motion_module: str | os.PathLike | None = None,
                config_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Models:
    """An original single-file SD1.5 checkpoint (+ motion module) as diffusers models, offline.

    The VAE and text encoder go to ``device``/``dtype``; the image UNet stays on the CPU in float32 until a
    video UNet is built from it (``Models.video_unet``) or it is trained against (``train.train_identity``).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTokenizer

    source = Path(checkpoint)
    configs = {name: _json(config_dir, name) for name in ("unet", "vae", "text_encoder", "scheduler")}
    tokenizer_dir = config_file(config_dir, "tokenizer").parent
    config_file(config_dir, "tokenizer merges")
    motion = load_motion_adapter(motion_module, config_dir) if motion_module is not None else None  # the smaller file
    state = read_state_dict(source, "checkpoint")
    _check_family(state, source)
    unet = _build(UNet2DConditionModel.from_config, configs["unet"])
    _load_strict(unet, convert_ldm_unet_checkpoint(state, unet.config), "unet", source)
    vae = _build(AutoencoderKL.from_config, configs["vae"])
    _load_strict(vae, convert_ldm_vae_checkpoint(state, vae.config), "vae", source)
    clip = {k: v for k, v in state.items() if k.startswith("cond_stage_model.transformer.")}
    if not clip:
        raise ValueError(f"checkpoint: {source.name} holds no CLIP text encoder ('cond_stage_model.transformer.*' "
                         "keys); vcd needs a full SD1.5 checkpoint with its text encoder.")
    text_config = configs["text_encoder"]
    text_encoder = _build(clip_text_model_from_state_dict, clip, num_heads=text_config["num_attention_heads"])
    found = {k: getattr(text_encoder.config, k) for k in TEXT_SIZES}
    wanted = {k: text_config[k] for k in TEXT_SIZES}
    if found != wanted:
        raise ValueError(f"text_encoder: {source.name}'s CLIP is {found}, the text_encoder config says {wanted}: "
                         "not an SD1.5 text encoder (CLIP ViT-L/14, 768 wide).")
    del state, clip
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True, model_max_length=77)
    device = torch.device(device)
    text = IdentityTextEncoder(_moved(text_encoder, device, dtype), tokenizer)
    return Models(unet.eval().requires_grad_(False), _moved(vae, device, dtype).eval().requires_grad_(False), text,
                  configs["scheduler"], motion, source, device, dtype)


def load_motion_adapter(path: str | os.PathLike, config_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """An AnimateDiff SD1.5 motion module file (``mm_sd_v15_v2`` layout; v1 files have no mid block and 24
    positions, read from the file) as a diffusers ``MotionAdapter``."""
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    source = Path(path)
    config = _json(config_dir, "motion_adapter")
    state = read_state_dict(source, "motion module")
    if not any(".motion_modules." in k for k in state):
        raise ValueError(f"motion module: {source.name} holds no '*.motion_modules.*' tensors: it is not an "
                         "AnimateDiff motion module (e.g. mm_sd_v15_v2.ckpt).")
    positions = [v.shape[1] for k, v in state.items() if k.endswith("pos_encoder.pe") and v.ndim == 3]
    config = {**config, "use_motion_mid_block": any(k.startswith("mid_block.motion_modules.") for k in state)}
    if positions:
        config["motion_max_seq_length"] = int(max(positions))
    adapter = _build(MotionAdapter.from_config, config)
    # diffusers computes the sinusoidal position encoding itself (the file's copies are the same table)
    _load_strict(adapter, convert_animatediff_checkpoint_to_diffusers(state), "motion_adapter", source,
                 may_miss=("pos_embed.pe",))
    return adapter.eval().requires_grad_(False)


def load_identity(path: str | os.PathLike, width: int) -> embedding_io.Embedding:
    """An identity embedding (ours, the authors' ``.pt``, A1111 ``.pt``), checked against the text encoder's
    token ``width`` (768 for SD1.5)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity: no embedding at {path}; train one with `vcd train-id` or give the path "
                                "of an existing .safetensors / .pt embedding.")
    embedding = embedding_io.read_embedding(path)
    if embedding.width != width:
        raise ValueError(f"identity: {path.name} holds {embedding.tokens} vectors {embedding.width} wide, but this "
                         f"checkpoint's text encoder takes {width}-wide tokens: it was trained for another model "
                         "family (SD1.5 embeddings are 768 wide).")
    return embedding
