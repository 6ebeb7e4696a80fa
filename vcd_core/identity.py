"""The ID module: extended textual inversion with a subject-masked loss (README "Identity embeddings").

Pure functions over callables, so ComfyUI and diffusers share them:
- ``make_views``: centre-cropped, augmented training views of the reference photos (flip,
  small rotation, zoom out onto grey / zoom in, with caption prefixes), masks carried along;
- ``train_identity``: the loop. ``encode_text(vectors, prompts)`` is a text encoder that puts
  the trainable ``vectors`` in place of ``{identity}``; ``denoise(x_t, t, context)`` predicts
  epsilon. Latents of the views are encoded once by the caller and passed in (cached).
Only ``vectors`` is optimised; nothing else is touched.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from . import __version__
from .embedding_io import fingerprint
from .text_encoder import MARKER

__all__ = [
    "background_like", "background_warning", "border_and_middle", "flat_under_mask", "looks_like_background",
    "RARE_TOKENS", "VIEWS_PER_IMAGE", "FILE_FORMAT", "SETTINGS", "TrainConfig", "usable_references", "photos_hash",
    "training_request", "file_metadata", "snippet", "autocast_for", "Views", "center_square", "Augmentation",
    "draw_augmentation", "apply_augmentation", "make_views", "latent_masks",
    "masked_mse", "sd_alphas_cumprod", "init_vectors", "train_identity", "TrainResult", "TrainingDiverged",
    "gradient_checkpointing",
]

RARE_TOKENS = ("ktn", "pll", "ucd", "ucd")  # the authors' initialisation words, cycled for more tokens
TEMPLATE = "{prefix}photo of a {identity} {class_word}"
ZOOM_OUT_PREFIXES = ("a far away ", "very small ")
ZOOM_IN_PREFIXES = ("zoomed in ", "close up ")
VIEWS_PER_IMAGE = 8  # augmented views encoded once per reference photo
FILE_FORMAT = "vcd-identity/1"  # the metadata "format" of an identity file we train
# What makes two training requests the same: the settings, the photos and the base model (metadata keys).
FLAT_COLOUR = 1 / 128  # colours this close to the masked area's median count as one flat fill (two 8-bit levels)
FLAT_SHARE = 0.95  # a masked area this much one flat colour holds no subject (a cut-out's transparent fill)
EDGE = 0.05  # the border ring border_and_middle looks at, as a share of the photo's shorter side

SETTINGS = ("tokens", "class_word", "steps", "learning_rate", "batch_size", "seed", "augment", "resolution")


@dataclass(frozen=True)
class TrainConfig:
    """The paper's recipe; change a field to deviate from it."""

    steps: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    noise_offset: float = 0.1
    full_mask_probability: float = 0.05
    seed: int = 0
    autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16 on a GPU; None trains in fp32

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclass
class Views:
    """Training views: ``pixels`` ``[V, 3, S, S]`` in [0, 1], ``masks`` ``[V, 1, S, S]``, caption ``prefixes``."""

    pixels: torch.Tensor
    masks: torch.Tensor
    prefixes: list[str] = field(default_factory=list)

    def prompts(self, class_word: str) -> list[str]:
        return [TEMPLATE.format(prefix=p, identity=MARKER, class_word=class_word).strip() for p in self.prefixes]


def usable_references(images: Sequence[torch.Tensor], masks: torch.Tensor | Sequence[torch.Tensor] | None
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[int]]:
    """The photos ``[3, H, W]`` to train on (from ``[H, W, C]`` images), their masks (None: the whole photo) and
    the indices left out: a photo whose mask is empty (the segmenter found nobody) is never trained on unmasked."""
    photos = [image.movedim(-1, 0) for image in images]
    if masks is None:
        return photos, [None] * len(photos), []
    if isinstance(masks, torch.Tensor) and masks.ndim == 2:
        masks = masks[None]
    if len(masks) != len(photos):
        raise ValueError(f"masks: {len(masks)} masks for {len(photos)} images; give one mask per image.")
    for image, mask in zip(images, masks):
        if mask.shape[-2:] != image.shape[:2]:
            raise ValueError(f"masks are {mask.shape[-1]}x{mask.shape[-2]} but the images are "
                             f"{image.shape[1]}x{image.shape[0]}: masks must match their images' size.")
    broken = [i for i, mask in enumerate(masks) if not bool(torch.isfinite(mask).all())]
    if broken:
        raise ValueError(f"masks: mask(s) {broken} hold NaN or infinite values: check the node that made them "
                         "(a mask is 0 to 1).")
    flat = [i for i, (image, mask) in enumerate(zip(images, masks)) if flat_under_mask(image, mask)]
    if flat:
        raise ValueError(f"masks: under mask(s) {flat} the photo is one flat colour, so there is no subject to learn: a "
                         "mask from Load Image is 1 where the PNG is transparent (a cut-out's background); put an "
                         "InvertMask between them, or make the masks with VCD Prompt Segment.")
    empty = [i for i, mask in enumerate(masks) if float(mask.sum()) == 0.0]
    if len(empty) == len(photos):
        raise ValueError("masks: every mask is empty, so there is nothing to learn; check the segmentation prompt "
                         "or set Prompt Segment's if_none to 'full'.")
    keep = [i for i in range(len(photos)) if i not in empty]
    return [photos[i] for i in keep], [masks[i].float() for i in keep], empty


def flat_under_mask(image: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether the fully masked part (at least 1% of the photo) of ``image`` ``[H, W, C]`` is one flat colour, as the
    transparent fill of a cut-out PNG is: no person looks like that."""
    pixels = image[mask >= 0.99].float()
    if pixels.shape[0] < 0.01 * mask.numel():
        return False
    median = pixels.median(dim=0).values
    close = int(((pixels - median).abs().amax(dim=-1) <= FLAT_COLOUR).sum())
    return close >= FLAT_SHARE * pixels.shape[0]


def border_and_middle(mask: torch.Tensor) -> tuple[float, float]:
    """How much of a mask ``[H, W]`` covers the photo's border ring (``EDGE`` of the shorter side, at least a pixel)
    and its middle (the central half of each side)."""
    height, width = mask.shape
    edge = max(1, round(EDGE * min(height, width)))
    ring = torch.ones(height, width, dtype=torch.bool)
    ring[edge:height - edge, edge:width - edge] = False
    mask = mask.float()
    middle = mask[height // 4:height - height // 4, width // 4:width - width // 4]
    return float(mask[ring].mean()), float(middle.mean())


def looks_like_background(border: float, middle: float) -> bool:
    """A mask over most of the border ring and clearly less of the middle: the background around a person (an
    inverted subject mask, most likely), not the person."""
    return border > 0.5 and middle < border - 0.25


def background_like(masks: torch.Tensor | Sequence[torch.Tensor]) -> list[int]:
    """Indices of the masks ``[H, W]`` that look like the background around a subject rather than the subject."""
    return [index for index, mask in enumerate(masks) if looks_like_background(*border_and_middle(mask))]


def background_warning(masks: Iterable[object]) -> str:
    """The warning for ``background_like`` masks, naming them (indices or file names)."""
    return (f"the masks of {list(masks)} cover the photo's edges far more than its middle, like the background around "
            "a person, and training learns what they cover: invert them if so (in ComfyUI, Load Image's mask is 1 "
            "where the PNG is transparent: put an InvertMask after it).")


def photos_hash(images: torch.Tensor | Sequence[torch.Tensor], masks: torch.Tensor | Sequence[torch.Tensor] | None
                ) -> str:
    """A short hash of the training photos ``[H, W, C]`` and their masks, sizes included. Photos of one size hash
    as their batch (ComfyUI's IMAGE); photos of several sizes each with its own size."""
    parts: list[torch.Tensor | str] = []
    for batch in (images, masks):
        if batch is None:
            continue
        if not isinstance(batch, torch.Tensor) and len({tuple(item.shape) for item in batch}) == 1:
            batch = torch.stack(list(batch))
        items = [batch] if isinstance(batch, torch.Tensor) else list(batch)
        for item in items:
            parts += [str(tuple(item.shape)), item]
    return fingerprint(*parts)


def snippet(name: str, class_word: str) -> str:
    """How a prompt in ComfyUI uses the identity file NAME: ``embedding:NAME man``."""
    return f"embedding:{name} {class_word}".strip()


def training_request(tokens: int, class_word: str, config: "TrainConfig", augment: bool, resolution: int,
                     photos: str, base_model: str) -> dict[str, str]:
    """The metadata that tells two training requests apart: ``SETTINGS``, the photos' hash and the base model's."""
    values = (tokens, class_word, config.steps, config.learning_rate, config.batch_size, config.seed, augment,
              resolution)
    return {**dict(zip(SETTINGS, map(str, values))), "photos_hash": photos, "base_model_hash": base_model}


def file_metadata(request: dict[str, str], name: str, references: int, losses: Sequence[float]) -> dict[str, str]:
    """An identity file's metadata: the request, how many photos it saw, the prompt snippet and the exact loss per
    step (shortest round-trip repr, so the curve redraws pixel for pixel)."""
    return {"format": FILE_FORMAT, **request, "references": str(references), "vcd_version": __version__,
            "prompt": snippet(name, request["class_word"]), "losses": json.dumps(list(losses))}


def center_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` -> the centred square crop resized (antialiased) to ``[C, size, size]``."""
    _, h, w = image.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = image[:, y0:y0 + side, x0:x0 + side]
    if side == size:
        return square.clone()
    return F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def _warp(tensor: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample ``[C, S, S]`` through a 2x3 affine ``theta`` (output -> input coords), ``fill`` outside."""
    grid = F.affine_grid(theta[None], [1, *tensor.shape], align_corners=False)
    shifted = tensor[None] - fill
    return (F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill)[0]


@dataclass(frozen=True)
class Augmentation:
    """One training view's draw: a horizontal ``flip``, a rotation ``angle`` in degrees, a ``scale`` of the content
    (< 1 zooms out, > 1 zooms in), its ``shift`` in normalised coordinates (-1..1 across the frame) and the caption
    ``prefix`` that says so."""

    flip: bool
    angle: float
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    prefix: str = ""


def draw_augmentation(generator: torch.Generator) -> Augmentation:
    """The authors' augmentation, drawn from ``generator``: flip (50%), rotation ~ N(0, 10 deg), then a third each
    of: no zoom, zoom out (shrunk by 0.5-0.9 onto mid grey, "a far away " / "very small "), zoom in (a random crop
    of 0.6-0.9 of the side, "zoomed in " / "close up "). The content never leaves the frame, nor a crop the photo."""
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    flip = float(torch.rand((), generator=generator)) < 0.5
    angle = 10.0 * float(torch.randn((), generator=generator))
    zoom = int(torch.randint(0, 3, (), generator=generator))
    if zoom == 1:
        scale = uniform(0.5, 0.9)
        shift = (uniform(-(1 - scale), 1 - scale), uniform(-(1 - scale), 1 - scale))
        return Augmentation(flip, angle, scale, shift, ZOOM_OUT_PREFIXES[int(torch.randint(0, 2, (), generator=generator))])
    if zoom == 2:
        scale = 1.0 / uniform(0.6, 0.9)
        room = 1 - 1 / scale
        shift = (uniform(-room, room), uniform(-room, room))
        return Augmentation(flip, angle, scale, shift, ZOOM_IN_PREFIXES[int(torch.randint(0, 2, (), generator=generator))])
    return Augmentation(flip, angle)


def apply_augmentation(image: torch.Tensor, mask: torch.Tensor, augmentation: Augmentation
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A square ``image`` ``[3, S, S]`` and its ``mask`` ``[1, S, S]`` seen through ``augmentation``: a point of the
    (flipped) photo is turned counter-clockwise on screen by ``angle`` about the centre, then scaled and shifted;
    mid grey (mask 0) where no photo is."""
    if augmentation.flip:
        image, mask = image.flip(-1), mask.flip(-1)
    angle = math.radians(augmentation.angle)
    cos, sin = math.cos(angle), math.sin(angle)
    # Output coords -> input coords: undo the shift and scale, then the rotation.
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]) / augmentation.scale
    theta[:, 2] = -(theta[:, :2] @ torch.tensor(augmentation.shift))
    image = _warp(image.float(), theta.to(image.device), fill=0.5).clamp(0, 1)
    mask = _warp(mask.float(), theta.to(mask.device), fill=0.0).clamp(0, 1)
    return image, mask


def make_views(images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None], size: int,
               views_per_image: int, augment: bool, seed: int) -> Views:
    """Views of each reference ``[3, H, W]`` (any size) with its mask ``[H, W]`` (``None``: the whole image)."""
    if not images:
        raise ValueError("no reference images: give at least one photo of the subject")
    if len(masks) != len(images):
        raise ValueError(f"{len(masks)} masks for {len(images)} images: give one mask per image (or none)")
    generator = torch.Generator().manual_seed(seed)
    pixels, view_masks, prefixes = [], [], []
    for index, (image, mask) in enumerate(zip(images, masks)):
        if mask is None:
            mask = torch.ones(image.shape[-2:])
        if tuple(mask.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"mask {index} is {tuple(mask.shape)} but image {index} is {tuple(image.shape[-2:])}: "
                             "masks must match their images' size")
        square, square_mask = center_square(image.float(), size), center_square(mask.float()[None], size)
        if not augment:  # the photo itself, once
            pixels.append(square)
            view_masks.append(square_mask)
            prefixes.append("")
            continue
        for _ in range(views_per_image):
            augmentation = draw_augmentation(generator)
            view, view_mask = apply_augmentation(square, square_mask, augmentation)
            pixels.append(view)
            view_masks.append(view_mask)
            prefixes.append(augmentation.prefix)
    return Views(torch.stack(pixels), torch.stack(view_masks), prefixes)


def latent_masks(masks: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Pixel masks ``[V, 1, S, S]`` -> latent resolution by area averaging (soft edges kept)."""
    return F.interpolate(masks.float(), size=latent_size, mode="area")


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum(((pred - target) * m)^2) / sum(m), ``m`` broadcast over channels; in float32
    whatever the prediction's dtype (an fp16 sum of a 1024 px mask overflows)."""
    mask = mask.expand_as(pred).float()
    per_sample = ((pred.float() - target.float()) * mask).pow(2).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1e-8)
    return per_sample.mean()


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD1.5's training schedule: betas linear in sqrt space from 0.00085 to 0.012 over 1000 steps."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def init_vectors(word_vector: Callable[[str], torch.Tensor], tokens: int, words: Sequence[str] = RARE_TOKENS) -> torch.Tensor:
    """``[tokens, D]`` initial vectors from rare words (cycled), each its token row or the mean of its rows."""
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {tokens}")
    return torch.stack([word_vector(words[i % len(words)]).float() for i in range(tokens)])


@contextlib.contextmanager
def gradient_checkpointing(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Inside the block, each module recomputes its activations during backward instead of keeping them:
    far less memory for about a third more time. Every module's own ``forward`` is restored afterwards."""
    patched = []
    for module in modules:
        own = module.__dict__.get("forward")  # an instance-level forward someone else set, kept as is
        module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)
        patched.append((module, own))
    try:
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.forward
            else:
                module.forward = own


def autocast_for(device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling); fp32 elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TrainingDiverged(ValueError):
    """The identity vectors stopped being finite: the run cannot recover."""


@dataclass
class TrainResult:
    vectors: torch.Tensor
    losses: list[float]


def train_identity(
    encode_text: Callable[[torch.Tensor, Sequence[str]], torch.Tensor],
    denoise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    masks: torch.Tensor,
    prompts: Sequence[str],
    vectors: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Optimise ``vectors`` ``[N, D]`` so ``denoise`` predicts the noise of the subject in ``latents``.

    ``latents`` ``[V, C, h, w]`` (already scaled for the denoiser), ``masks`` ``[V, 1, h, w]``
    and ``prompts`` (V captions with ``{identity}``) are the cached views. Each step draws
    ``batch_size`` views, t uniform over the schedule, noise with the offset, and takes one
    AdamW step on the masked loss (``full_mask_probability`` of samples use the whole image).
    ``callback(step, loss)`` runs after each step; an exception there stops training cleanly. Vectors that
    stop being finite raise ``TrainingDiverged`` at that step (a skipped fp16 step with an inf loss does not).
    """
    if len(prompts) != latents.shape[0] or masks.shape[0] != latents.shape[0]:
        raise ValueError(f"{latents.shape[0]} latents, {masks.shape[0]} masks and {len(prompts)} prompts: counts differ")
    device = latents.device
    generator = torch.Generator().manual_seed(config.seed)
    alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
    vectors = torch.nn.Parameter(vectors.detach().clone().float().to(device))
    optimizer = torch.optim.AdamW([vectors], lr=config.learning_rate, betas=config.betas, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if config.autocast_dtype == torch.float16 else None
    losses = []
    for step in range(config.steps):
        index = torch.randint(0, latents.shape[0], (config.batch_size,), generator=generator)
        x0, mask = latents[index.to(device)].float(), masks[index.to(device)].float()
        full = (torch.rand(config.batch_size, generator=generator) < config.full_mask_probability).to(device)
        mask = torch.where(full[:, None, None, None], torch.ones_like(mask), mask)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        noise = noise + config.noise_offset * torch.randn((*x0.shape[:2], 1, 1), generator=generator).to(device)
        t = torch.randint(0, alphas_cumprod.shape[0], (config.batch_size,), generator=generator).to(device)
        a = alphas_cumprod[t][:, None, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=config.autocast_dtype, enabled=config.autocast_dtype is not None):
            context = encode_text(vectors, [prompts[i] for i in index.tolist()])
            loss = masked_mse(denoise(x_t, t, context), noise, mask)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if not bool(torch.isfinite(vectors.detach()).all()):
            raise TrainingDiverged(
                f"training diverged at step {step + 1} of {config.steps}: the identity vectors are no longer finite "
                f"(NaN/inf), so the run stopped and nothing is saved. Lower learning_rate (now {config.learning_rate}) "
                "or check the model and photos.")
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    return TrainResult(vectors.detach().float().cpu(), losses)
