"""ID module: train an identity embedding from photos inside ComfyUI, and load one (ours, the authors', A1111).

Training leaves inference mode (core's LoRA trainer does the same) and borrows the MODEL and CLIP through
``comfy_models`` (they are left exactly as they were). The file lands in ``models/embeddings/vcd/NAME.safetensors``,
which core ``CLIPTextEncode`` reads as ``embedding:NAME``; its metadata records the request (settings, a hash of
the photos, a hash of the base model), so queueing the same request again reuses the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
import math
import os
import time

import torch
from comfy_api.latest import io, ui

from .inputs import checked
from ..vcd_core import embedding_io, files, identity
from ..vcd_core.text_encoder import MARKER
from .ade import without_animatediff
from .channels import as_rgb
from .charts import BLUE, ORANGE, line_chart
from .comfy_models import (base_fingerprint, check_epsilon_model, checkpointed_blocks, clip_width,
                           denoiser, encode_views, text_encoder_from_clip)
from .noise import SEED_MAX
from .progress import send_progress_text

IDENTITY_TYPE = io.Custom("VCD_IDENTITY")  # an embedding_io.Embedding: vectors [N, 768] + metadata
SUBFOLDER = "vcd"  # models/embeddings/vcd/NAME.safetensors
SD15_WIDTH = 768
LOSS_WINDOW = 10  # steps in the running loss shown while training and drawn on the curve
PREVIEW_SECONDS = 2.0  # the live loss curve and time left are sent at the first and last step and this often between
PREVIEW_POINTS = 500  # steps drawn on the live curve at most (the plot is about that many pixels wide)
log = logging.getLogger("vcd")
PROMPT_BREAKING = re.compile(r"[\s(),:\\]+")  # what core's prompt parser splits or weighs at


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
                io.Boolean.Input("overwrite", default=False, tooltip="Train again and replace an existing file of the same "
                                 "name. Off: a file trained from the same photos, settings and model is reused."),
                io.Int.Input("resolution", default=512, min=64, max=2048, step=64,
                             tooltip="Training image size (the model's native 512 for SD1.5)."),
                io.Boolean.Input("gradient_checkpointing", default=True, optional=True,
                                 tooltip="Recompute UNet activations in the backward pass: much less VRAM, ~1/3 slower."),
            ],
            outputs=[
                io.String.Output(display_name="prompt_snippet"),
                io.Image.Output(display_name="loss_curve"),
                IDENTITY_TYPE.Output(display_name="identity"),
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
        check_name_free(name, overwrite=True)  # files of other names that answer to embedding:NAME; ours is next
        images = as_rgb(images, "images")
        if clip_width(clip) != SD15_WIDTH:
            raise ValueError(f"clip: its token width is {clip_width(clip)}, not SD1.5's {SD15_WIDTH}.")
        model = without_animatediff(model)  # motion modules and ADE's betas belong to video sampling, not here
        check_epsilon_model(model)
        config = identity.TrainConfig(steps=steps, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
        class_word = class_word.strip()
        node_id = getattr(cls.hidden, "unique_id", None)
        request = identity.training_request(tokens, class_word, config, augment, resolution,
                                            identity.photos_hash(images, masks), base_fingerprint(model, clip))
        if not overwrite:
            reused = reusable_file(name, request)
            if reused is not None:
                message = (f"VCD Train Identity: models/embeddings/{SUBFOLDER}/{name}.safetensors was trained from these "
                           "photos with these settings and this base model: reused, not trained again.")
                log.info(message)
                send_progress_text(node_id, message)
                text = identity.snippet(name, class_word)
                curve = loss_curve(json.loads(reused.metadata.get("losses", "[]")))
                return io.NodeOutput(text, curve, reused, ui=ui.PreviewText(f"{text}\n{message}"))
        photos, photo_masks, empty = identity.usable_references(images, masks)
        warnings = mask_warnings(masks, empty)
        for warning in warnings:
            log.warning("VCD Train Identity: %s", warning)
        views = identity.make_views(photos, photo_masks, resolution, identity.VIEWS_PER_IMAGE, augment, seed)
        files.check_writable(folder, "name")  # a read-only disk is found now, not after the training
        latents = encode_views(vae, views.pixels, model)
        progress = comfy.utils.ProgressBar(steps)
        with torch.inference_mode(False):
            device = comfy.model_management.get_torch_device()
            text = text_encoder_from_clip(clip, device)  # before the UNet, whose full load may then evict the CLIP
            config = dataclasses.replace(config, autocast_dtype=identity.autocast_for(device))
            latents = latents.clone().to(device)
            masks_latent = identity.latent_masks(views.masks, latents.shape[-2:]).to(device)
            start = identity.init_vectors(text.word_vector, tokens)
            report = LiveLoss(steps, progress, node_id)
            blocks = checkpointed_blocks(model) if gradient_checkpointing else []
            with denoiser(model) as (denoise, alphas_cumprod), identity.gradient_checkpointing(blocks):
                result = identity.train_identity(text, denoise, latents, masks_latent, views.prompts(class_word), start,
                                                 alphas_cumprod, config, report)
        embedding = embedding_io.Embedding(result.vectors, identity.file_metadata(request, name, len(photos), result.losses))
        path = save_trained(folder, name, embedding, overwrite)
        log.info("VCD Train Identity: wrote %s (final loss %.4f)", path, result.losses[-1])
        curve = loss_curve(result.losses)
        return io.NodeOutput(identity.snippet(name, class_word), curve, embedding,
                             ui=ui.PreviewText("\n".join([identity.snippet(name, class_word), f"saved to {path}",
                                                          *warnings])))


def mask_warnings(masks: torch.Tensor | None, empty: list[int]) -> list[str]:
    """What the artist should know about the subject masks before trusting the result: photos left out, and masks
    that look like the background (inverted) rather than the person."""
    warnings = [f"the masks of image(s) {empty} are empty; those photos are left out."] if empty else []
    inverted = identity.background_like(masks.reshape(-1, *masks.shape[-2:])) if masks is not None else []
    if inverted:
        warnings.append(identity.background_warning(inverted))
    return warnings


RESCUE_FOLDER = "vcd-unsaved"  # under ComfyUI's output folder: trained files that could not go where they belong


def save_trained(folder: str, name: str, embedding: embedding_io.Embedding, overwrite: bool) -> str:
    """Write the trained file to ``folder``. If that fails now (a file answering to the name appeared while training,
    the disk filled) the training is not lost: the file goes to output/vcd-unsaved/TIME/ and the error says where."""
    import folder_paths

    try:
        check_name_free(name, overwrite)  # again: a file may have appeared while training
        return str(embedding_io.write_embedding(folder, name, embedding, overwrite=overwrite))
    except OSError as error:
        rescue = os.path.join(folder_paths.get_output_directory(), RESCUE_FOLDER, time.strftime("%Y%m%d-%H%M%S"))
        for attempt in itertools.count(1):
            try:
                rescued = embedding_io.write_embedding(rescue + (f"-{attempt}" if attempt > 1 else ""), name, embedding)
                break
            except FileExistsError:
                continue
            except OSError:
                raise error from None
        log.error("VCD Train Identity: could not save %s (%s); the training is kept in %s", name, error, rescued)
        raise type(error)(f"name: the trained embedding could not be saved as models/embeddings/{SUBFOLDER}/{name}"
                          f".safetensors ({error}). The training is kept in {rescued}: move it into "
                          "models/embeddings (or pick another name there) to use it.") from None


DIFFERENCE_NAMES = {"photos_hash": "the photos or their masks", "base_model_hash": "the base model (MODEL or CLIP "
                    "weights, or their LoRAs)"}


def reusable_file(name: str, request: dict[str, str]) -> embedding_io.Embedding | None:
    """Our ``vcd/NAME`` file when its metadata records this very request (photos, settings, base model); None when
    there is no such file; FileExistsError naming what differs when it was trained from another request."""
    path = os.path.join(target_folder(), f"{name}.safetensors")
    if not os.path.exists(path):
        return None
    try:
        existing = embedding_io.read_embedding(path)
    except ValueError as error:
        raise FileExistsError(f"name: models/embeddings/{SUBFOLDER}/{name}.safetensors exists but cannot be read "
                              f"({error}); pick another name or turn overwrite on to replace it.") from None
    differences = []
    for key, wanted in request.items():
        had = existing.metadata.get(key)
        if had == wanted:
            continue
        if key in DIFFERENCE_NAMES:
            differences.append(DIFFERENCE_NAMES[key] + ("" if had else " (the file has no record of them)"))
        else:
            differences.append(f"{key} {had if had is not None else '(not recorded)'} in the file, {wanted} now")
    if differences:
        raise FileExistsError(f"name: models/embeddings/{SUBFOLDER}/{name}.safetensors exists and was trained from a "
                              f"different request ({'; '.join(differences)}); pick another name or turn overwrite on "
                              "to replace it.")
    return existing


def duration(seconds: float) -> str:
    """``seconds`` as people read a countdown: '8 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LiveLoss:
    """The training callback: progress bar every step; the loss curve (as the node's live preview), the running
    loss and the time left at the first and last step and every ``PREVIEW_SECONDS`` between (throttled by wall
    time, so a fast step costs nothing more); Cancel stops training at the next step, before anything is written."""

    def __init__(self, steps: int, progress, node_id: str | None):
        self.steps, self.progress, self.node_id = steps, progress, node_id
        self.losses: list[float] = []
        self.started = time.monotonic()
        self.last_shown = -math.inf

    def __call__(self, step: int, loss: float) -> None:
        import comfy.model_management
        from comfy.cli_args import args
        from PIL import Image

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.losses.append(loss)
        done, now = step + 1, time.monotonic()
        if not (done == 1 or done == self.steps or now - self.last_shown >= PREVIEW_SECONDS):
            self.progress.update_absolute(done, self.steps)
            return
        self.last_shown = now
        curve = (loss_curve(self.losses, max_points=PREVIEW_POINTS)[0] * 255).round().to(torch.uint8).numpy()
        self.progress.update_absolute(done, self.steps, preview=("PNG", Image.fromarray(curve), args.preview_size))
        recent = self.losses[-LOSS_WINDOW:]
        left = (now - self.started) / done * (self.steps - done)
        send_progress_text(self.node_id, f"step {done}/{self.steps}  loss {sum(recent) / len(recent):.4f} (mean of last "
                                         f"{len(recent)})  about {duration(left)} left")


def loss_curve(losses: list[float], window: int = LOSS_WINDOW, max_points: int | None = None) -> torch.Tensor:
    """Loss per step (orange) and its running mean (blue); with ``max_points``, only that many evenly spaced steps
    of each are drawn (the live preview of a long run stays cheap)."""
    sums = [0.0, *itertools.accumulate(losses)]
    running = [(sums[i + 1] - sums[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(losses))]
    stride = math.ceil(len(losses) / max_points) if max_points and len(losses) > max_points else 1
    return line_chart([(losses[::stride], ORANGE, "loss per step"),
                       (running[::stride], BLUE, f"running mean ({window} steps)")])


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
            outputs=[io.String.Output(display_name="prompt_snippet"), IDENTITY_TYPE.Output(display_name="identity")],
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
        text = identity.snippet(name, class_word.strip() or loaded.metadata.get("class_word", ""))
        details = "\n".join(f"{k}: {v}" for k, v in sorted(loaded.metadata.items()))
        note = ""
        if PROMPT_BREAKING.search(name):
            note = (f"VCD Load Identity: the file name {name!r} holds a space or one of ( ) , : \\, which a core "
                    "prompt cannot carry after 'embedding:' (core would ignore the identity): rename the file (e.g. "
                    f"{PROMPT_BREAKING.sub('_', name)!r}) or use the identity output with VCD Identity Text Encode.\n")
            log.warning(note.strip())
        return io.NodeOutput(text, loaded,
                             ui=ui.PreviewText(f"{note}{text}\n{loaded.tokens} tokens x {loaded.width}\n{details}"))


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
                IDENTITY_TYPE.Input("identity"),
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
