"""ID module: train an identity embedding from photos inside ComfyUI, and load one (ours, the authors', A1111).

Training leaves inference mode (core's LoRA trainer does the same). The text side runs the
CLIP's own weights in ``transformers.CLIPTextModel`` (ComfyUI's CLIP cannot back-propagate);
the UNet is the MODEL's own ``diffusion_model`` (with its LoRAs applied), called directly for
epsilon. The file lands in ``models/embeddings/vcd/NAME.safetensors``, which core
``CLIPTextEncode`` reads as ``embedding:NAME``.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from .. import vcd_core
from ..vcd_core import embedding_io, identity
from ..vcd_core.text_encoder import IDENTITY as MARKER
from ..vcd_core.text_encoder import IdentityTextEncoder, clip_text_model_from_state_dict
from .channels import as_rgb
from .charts import BLUE, ORANGE, line_chart
from .noise import SEED_MAX
from .ade import without_animatediff
from .progress import send_progress_text

IDENTITY = io.Custom("VCD_IDENTITY")  # an embedding_io.Embedding: vectors [N, 768] + metadata
SUBFOLDER = "vcd"  # models/embeddings/vcd/NAME.safetensors
SD15_WIDTH = 768
VIEWS_PER_IMAGE = 8  # augmented views encoded once per reference photo
LOSS_WINDOW = 10  # steps in the running loss shown while training and drawn on the curve
log = logging.getLogger("vcd")


def sd15_clip_l(clip):
    """The CLIP-L text model inside an SD1.5 CLIP, or a clear error for other CLIPs."""
    stage = getattr(clip, "cond_stage_model", None)
    clip_l = getattr(stage, "clip_l", None)
    if clip_l is None or hasattr(stage, "clip_g") or not hasattr(clip_l, "transformer"):
        raise ValueError("clip: identity embeddings are trained for SD1.5; connect the CLIP of an SD1.5 checkpoint.")
    return clip_l


def clip_width(clip) -> int:
    return int(sd15_clip_l(clip).transformer.get_input_embeddings().weight.shape[1])


def text_encoder_from_clip(clip, device: torch.device) -> IdentityTextEncoder:
    """The CLIP's weights (LoRAs applied) in a differentiable transformers model, with its clip skip."""
    import comfy.model_management

    clip_l = sd15_clip_l(clip)
    comfy.model_management.load_model_gpu(clip.patcher)
    heads = clip_l.transformer.text_model.encoder.layers[0].self_attn.heads
    model = clip_text_model_from_state_dict(clip_l.transformer.state_dict(), num_heads=heads)
    layer_idx = clip_l.layer_idx if clip_l.layer == "hidden" else None
    if clip.layer_idx is not None:  # CLIPSetLastLayer, applied the way core applies it at encode time
        layer_idx = clip.layer_idx if abs(clip.layer_idx) <= clip_l.num_layers else None
    return IdentityTextEncoder(model, clip.tokenizer.clip_l.tokenizer, layer_idx).to(device)


def autograd_ready(module: torch.nn.Module) -> None:
    """Swap parameters and buffers created under inference mode for equal normal tensors, so autograd
    can save them for the backward pass. Values stay bit-identical; gradients stay off."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and param.is_inference():
                sub._parameters[name] = torch.nn.Parameter(param.clone(), requires_grad=False)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.is_inference():
                sub._buffers[name] = buffer.clone()


CHECKPOINTED_BLOCKS = ("ResBlock", "SpatialTransformer")  # the UNet's memory-heavy blocks


def checkpointed_blocks(model) -> list[torch.nn.Module]:
    """The UNet's res and transformer blocks, whose activations gradient checkpointing recomputes."""
    return [m for m in model.model.diffusion_model.modules() if type(m).__name__ in CHECKPOINTED_BLOCKS]


def check_epsilon_model(model) -> None:
    """Refuse a MODEL that does not predict epsilon (v-prediction, flow...), before any work is done."""
    import comfy.model_base

    model_type = getattr(model.model, "model_type", None)
    if model_type != comfy.model_base.ModelType.EPS:
        raise ValueError("model: identity training needs an SD1.5 epsilon-prediction checkpoint "
                         f"(this MODEL predicts {model_type or 'something else'}).")


def denoiser_from_model(model):
    """``(denoise(x_t, t, context) -> eps, alphas_cumprod)`` from an SD1.5 epsilon MODEL (see
    ``check_epsilon_model``), loaded like core's trainer."""
    import comfy.model_management

    base = model.model
    comfy.model_management.load_models_gpu([model], memory_required=1e20, force_full_load=True)
    unet = base.diffusion_model
    unet.requires_grad_(False)
    autograd_ready(unet)
    dtype = base.get_dtype()

    def denoise(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return unet(x_t.to(dtype), timesteps=t, context=context.to(dtype)).float()

    sigmas = base.model_sampling.sigmas.float().cpu()
    return denoise, 1.0 / (1.0 + sigmas ** 2)


def encode_views(vae, pixels: torch.Tensor, model) -> torch.Tensor:
    """VAE latents of the views ``[V, 3, S, S]``, scaled the way the UNet sees them (encoded once, cached)."""
    latents = vae.encode(pixels.movedim(1, -1))
    return model.model.process_latent_in(latents).float()


def usable_references(images: torch.Tensor, masks: torch.Tensor | None) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The photos ``[3, H, W]`` to train on and their masks (None: the whole photo). A photo whose mask is
    empty (the segmenter found nobody) is left out with a warning, never trained on unmasked."""
    photos = list(images.movedim(-1, 1))
    if masks is None:
        return photos, [None] * len(photos)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[0] != images.shape[0]:
        raise ValueError(f"masks: {masks.shape[0]} masks for {images.shape[0]} images; give one mask per image.")
    if masks.shape[-2:] != images.shape[1:3]:
        raise ValueError(f"masks are {masks.shape[-1]}x{masks.shape[-2]} but the images are "
                         f"{images.shape[2]}x{images.shape[1]}: masks must match their images' size.")
    empty = [i for i, mask in enumerate(masks) if float(mask.sum()) == 0.0]
    if len(empty) == len(photos):
        raise ValueError("masks: every mask is empty, so there is nothing to learn; check the segmentation prompt "
                         "or set Prompt Segment's if_none to 'full'.")
    if empty:
        log.warning("VCD Train Identity: the masks of image(s) %s are empty; those photos are left out.", empty)
    keep = [i for i in range(len(photos)) if i not in empty]
    return [photos[i] for i in keep], [masks[i].float() for i in keep]


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); fp32 elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def target_folder() -> str:
    import folder_paths

    return os.path.join(folder_paths.get_folder_paths("embeddings")[0], SUBFOLDER)


def check_name_free(name: str, overwrite: bool) -> None:
    """Refuse a name that ``embedding:NAME`` would also resolve to another file: ComfyUI searches every folder under
    models/embeddings in an order that changes between starts. Our own vcd/NAME file may go with ``overwrite``."""
    import folder_paths

    own = os.path.join(target_folder(), f"{name}.safetensors")
    for path in embedding_io.files_answering(folder_paths.get_folder_paths("embeddings"), name):
        if not (os.path.exists(own) and os.path.samefile(path, own)):
            raise FileExistsError(f"name: {path} already answers to embedding:{name} (ComfyUI searches every folder "
                                  "under models/embeddings, in an order that changes between starts); pick another name.")
        if not overwrite:
            raise FileExistsError(f"name: models/embeddings/{SUBFOLDER}/{name}.safetensors exists; pick another name "
                                  "or turn overwrite on.")


def base_fingerprint(model, clip) -> str:
    """A short hash of the base checkpoint (UNet input conv + CLIP token table), to tell bases apart."""
    unet = model.model.diffusion_model.state_dict()
    first = unet.get("input_blocks.0.0.weight", next(iter(unet.values())))
    return embedding_io.fingerprint(first, sd15_clip_l(clip).transformer.get_input_embeddings().weight)


def snippet(name: str, class_word: str) -> str:
    return f"embedding:{name} {class_word}".strip()


class VCDTrainIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDTrainIdentity",
            display_name="VCD Train Identity",
            category="VCD/identity",
            description="Extended textual inversion (Magic-Me's ID module): learns a few new CLIP tokens for the person "
                        "in the photos, with the loss masked to the subject. Writes models/embeddings/vcd/NAME.safetensors; "
                        "use it in any prompt as 'embedding:NAME man'.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 checkpoint the identity is for."),
                io.Clip.Input("clip"),
                io.Vae.Input("vae"),
                io.Image.Input("images", tooltip="Photos of the person (3-10 is typical); each is centre-cropped."),
                io.Mask.Input("masks", optional=True, tooltip="Subject masks, one per photo (VCD Prompt Segment). "
                              "Without them the loss covers the whole photo."),
                io.String.Input("name", default="my_identity", tooltip="File name: letters, digits, _ - ."),
                io.String.Input("class_word", default="man", tooltip="What the person is: man, woman, person, or any text."),
                io.Int.Input("tokens", default=4, min=1, max=16, tooltip="New tokens to learn (the paper uses 4)."),
                io.Int.Input("steps", default=200, min=1, max=10000),
                io.Float.Input("learning_rate", default=1e-3, min=1e-6, max=1.0, step=1e-4, round=1e-6),
                io.Int.Input("batch_size", default=4, min=1, max=64),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True),
                io.Boolean.Input("augment", default=True, tooltip="Flip, small rotation, zoom in/out with caption prefixes."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing file of the same name."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Training image size (the model's native 512 for SD1.5)."),
                io.Boolean.Input("gradient_checkpointing", default=True, optional=True,
                                 tooltip="Recompute UNet activations in the backward pass: much less VRAM, ~1/3 slower."),
            ],
            outputs=[
                io.String.Output(display_name="prompt_snippet"),
                io.Image.Output(display_name="loss_curve"),
                IDENTITY.Output(display_name="identity"),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    @checked
    def execute(cls, model, clip, vae, images: torch.Tensor, name: str, class_word: str, tokens: int, steps: int,
                learning_rate: float, batch_size: int, seed: int, augment: bool, overwrite: bool,
                masks: torch.Tensor | None = None, resolution: int = 512,
                gradient_checkpointing: bool = True) -> io.NodeOutput:
        import comfy.model_management
        import comfy.utils

        embedding_io.check_name(name)
        folder = target_folder()
        check_name_free(name, overwrite)
        images = as_rgb(images, "images")
        if clip_width(clip) != SD15_WIDTH:
            raise ValueError(f"clip: its token width is {clip_width(clip)}, not SD1.5's {SD15_WIDTH}.")
        model = without_animatediff(model)  # motion modules and ADE's betas belong to video sampling, not here
        check_epsilon_model(model)
        config = identity.TrainConfig(steps=steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
        class_word = class_word.strip()
        photos, photo_masks = usable_references(images, masks)
        views = identity.make_views(photos, photo_masks, resolution, VIEWS_PER_IMAGE, augment, seed)
        latents = encode_views(vae, views.pixels, model)
        progress = comfy.utils.ProgressBar(steps)
        with torch.inference_mode(False):
            denoise, alphas_cumprod = denoiser_from_model(model)
            device = comfy.model_management.get_torch_device()
            text = text_encoder_from_clip(clip, device)
            config = dataclasses.replace(config, autocast_dtype=autocast_dtype(device))
            latents = latents.clone().to(device)
            masks_latent = identity.latent_masks(views.masks, latents.shape[-2:]).to(device)
            start = identity.init_vectors(text.word_vector, tokens)

            recent: list[float] = []

            def report(step: int, loss: float) -> None:
                comfy.model_management.throw_exception_if_processing_interrupted()  # stops before anything is written
                progress.update_absolute(step + 1, steps)
                recent[:] = (recent + [loss])[-LOSS_WINDOW:]
                send_progress_text(getattr(cls.hidden, "unique_id", None),
                                   f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f} (mean of last {len(recent)})")

            blocks = checkpointed_blocks(model) if gradient_checkpointing else []
            with identity.gradient_checkpointing(blocks):
                result = identity.train_identity(text, denoise, latents, masks_latent, views.prompts(class_word), start,
                                                 alphas_cumprod, config, report)
        metadata = {
            "format": "vcd-identity/1", "tokens": str(tokens), "class_word": class_word, "steps": str(steps),
            "learning_rate": str(learning_rate), "batch_size": str(batch_size), "seed": str(seed),
            "augment": str(augment), "resolution": str(resolution), "references": str(len(photos)),
            "base_model_hash": base_fingerprint(model, clip), "vcd_version": vcd_core.__version__,
            "prompt": snippet(name, class_word),
        }
        embedding = embedding_io.Embedding(result.vectors, metadata)
        check_name_free(name, overwrite)  # again: a file may have appeared while training
        path = embedding_io.write_embedding(folder, name, embedding, overwrite=overwrite)
        log.info("VCD Train Identity: wrote %s (final loss %.4f)", path, result.losses[-1])
        curve = loss_curve(result.losses)
        return io.NodeOutput(snippet(name, class_word), curve, embedding,
                             ui=ui.PreviewText(f"{snippet(name, class_word)}\nsaved to {path}"))


def loss_curve(losses: list[float], window: int = LOSS_WINDOW) -> torch.Tensor:
    """Loss per step (orange) and its running mean (blue)."""
    running = [sum(losses[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(losses))]
    return line_chart([(losses, ORANGE, "loss per step"), (running, BLUE, f"running mean ({window} steps)")])


def embedding_options() -> list[str]:
    import folder_paths

    return folder_paths.get_filename_list("embeddings")


class VCDLoadIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDLoadIdentity",
            display_name="VCD Load Identity",
            category="VCD/identity",
            description="Pick an identity embedding (ours, the Magic-Me authors' .pt files, A1111 embeddings) from "
                        "models/embeddings: shows its metadata and gives the prompt snippet.",
            inputs=[
                io.Combo.Input("embedding", options=embedding_options(), tooltip="A file under models/embeddings."),
                io.String.Input("class_word", default="", tooltip="Blank: the class word saved in the file, if any."),
                io.Clip.Input("clip", optional=True, tooltip="Connect to check the embedding fits this CLIP."),
            ],
            outputs=[io.String.Output(display_name="prompt_snippet"), IDENTITY.Output(display_name="identity")],
            # not an output node: ComfyUI runs any valid output alone, so a graph with an error elsewhere would
            # "succeed" by loading the identity only
        )

    @classmethod
    def validate_inputs(cls, embedding: str) -> bool | str:
        """A missing or unreadable identity stops the run before it starts (ComfyUI's own check only says
        "Value not in list"), naming the file and where it goes."""
        from .model_folders import identity_problem

        return identity_problem(embedding) or True

    @classmethod
    @checked
    def execute(cls, embedding: str, class_word: str, clip=None) -> io.NodeOutput:
        import folder_paths

        path = folder_paths.get_full_path("embeddings", embedding)
        if path is None:
            raise FileNotFoundError(f"embedding: {embedding!r} is not in models/embeddings.")
        loaded = embedding_io.read_embedding(path)
        expected = clip_width(clip) if clip is not None else SD15_WIDTH
        if loaded.width != expected:
            raise ValueError(f"embedding: {embedding} has {loaded.width}-wide vectors but "
                             f"{'this CLIP' if clip is not None else 'SD1.5 CLIP-L'} takes {expected}; "
                             "it was trained for another model family.")
        name = os.path.splitext(embedding)[0].replace(os.sep, "/")
        text = snippet(name, class_word.strip() or loaded.metadata.get("class_word", ""))
        details = "\n".join(f"{k}: {v}" for k, v in sorted(loaded.metadata.items()))
        return io.NodeOutput(text, loaded, ui=ui.PreviewText(f"{text}\n{loaded.tokens} tokens x {loaded.width}\n{details}"))


class VCDIdentityEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VCDIdentityEncode",
            display_name="VCD Identity Text Encode",
            category="VCD/identity",
            description="A prompt with the identity wired in directly (no file lookup): write {identity} where the person "
                        "goes. Gives exactly what CLIPTextEncode gives for 'embedding:NAME' there. Plain text only "
                        "(no (word:1.2) weights), up to 75 tokens.",
            inputs=[
                io.Clip.Input("clip"),
                IDENTITY.Input("identity"),
                io.String.Input("text", multiline=True, default="a photo of {identity} man smiling in a garden"),
            ],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    @checked
    def execute(cls, clip, identity: embedding_io.Embedding, text: str) -> io.NodeOutput:
        import comfy.model_management

        if MARKER not in text:
            raise ValueError(f"text: write {MARKER} where the person goes, e.g. 'a photo of {MARKER} man'.")
        if identity.width != clip_width(clip):
            raise ValueError(f"identity: {identity.width}-wide vectors do not fit this CLIP ({clip_width(clip)}).")
        with torch.inference_mode(False):
            encoder = text_encoder_from_clip(clip, comfy.model_management.text_encoder_device())
            try:
                with torch.no_grad():
                    cond, pooled = encoder.encode(identity.vectors.to(encoder.lookup.table.device), [text])
            except ValueError as error:
                raise ValueError(f"text: {error}") from None
        return io.NodeOutput([[cond.float().cpu(), {"pooled_output": pooled.float().cpu()}]])
