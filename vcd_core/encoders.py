"""Image/text encoders for evaluation, loaded offline from local Hugging Face folders via transformers.

``load_dino(folder)`` -> images ``[N, H, W, C]`` (0..1) to CLS features; ``load_clip(folder)`` -> an
image encoder and a text encoder (projected features); ``load_arcface(file)`` (optional, needs
onnxruntime) -> face features for the images where a face is found. Preprocessing (resize, centre crop, normalise)
runs in torch with the crop size and mean/std of the folder's ``preprocessor_config.json`` when present. Nothing
is ever downloaded: a missing or wrong folder is a clear error saying what to put there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .files import check_weights_downloaded

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _config(folder: str | Path, expected: tuple[str, ...], what: str) -> dict:
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{what}: no model in {folder} (expected a Hugging Face folder with config.json and weights, "
            f"e.g. a save_pretrained copy of {what})."
        )
    config = json.loads(config_path.read_text())
    if config.get("model_type") not in expected:
        raise ValueError(f"{what}: {folder} holds a {config.get('model_type')!r} model, expected one of {expected}.")
    check_weights_downloaded(folder, what)
    return config


def _preprocess(folder: Path, image_size: int, mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        settings = json.loads(processor.read_text())
        mean, std = settings.get("image_mean", mean), settings.get("image_std", std)
        crop = settings.get("crop_size")  # DINOv2 runs at 224 although its config says 518
        if crop:
            image_size = int(crop["height"] if isinstance(crop, dict) else crop)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def run(images: torch.Tensor) -> torch.Tensor:
        x = images[..., :3].movedim(-1, 1).float()
        h, w = x.shape[-2:]
        scale = image_size / min(h, w)
        x = F.interpolate(x, size=(max(image_size, round(h * scale)), max(image_size, round(w * scale))),
                          mode="bicubic", antialias=True, align_corners=False)
        top, left = (x.shape[-2] - image_size) // 2, (x.shape[-1] - image_size) // 2
        x = x[..., top:top + image_size, left:left + image_size].clamp(0, 1)
        return (x - mean_t) / std_t

    return run


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([fn(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])

    return run


def load_dino(folder: str | Path, batch_size: int = 16) -> Callable[[torch.Tensor], torch.Tensor]:
    """A DINO ViT (e.g. dino-vits16) or a DINOv2 (e.g. dinov2-small) as ``images -> [N, D]`` layer-normed CLS features."""
    from transformers import Dinov2Model, ViTModel

    config = _config(folder, ("vit", "dinov2"), "DINO ViT-S/16")
    if config["model_type"] == "dinov2":
        model = Dinov2Model.from_pretrained(str(folder), local_files_only=True)  # it has no pooling layer to leave out
    else:
        model = ViTModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
    model.eval()
    preprocess = _preprocess(Path(folder), model.config.image_size, IMAGENET_MEAN, IMAGENET_STD)
    return _batched(lambda x: model(pixel_values=preprocess(x)).last_hidden_state[:, 0], batch_size)


def load_clip(folder: str | Path, batch_size: int = 16):
    """A CLIP model (e.g. clip-vit-base-patch32) as ``(images -> [N, D], texts -> [N, D])`` projected features."""
    from transformers import CLIPModel, CLIPTokenizer

    _config(folder, ("clip",), "CLIP ViT-B/32")
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77)
    preprocess = _preprocess(Path(folder), model.config.vision_config.image_size, CLIP_MEAN, CLIP_STD)

    def features(output) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def encode_text(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            return features(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))

    encode_image = _batched(lambda x: features(model.get_image_features(pixel_values=preprocess(x))), batch_size)
    return encode_image, encode_text


FACE_CROP_SCALE = 1.3  # the square crop around a detected face box, as a multiple of its side


class ArcFace:
    """ArcFace face features. Called on photos: ``(features [n, D], found [N] bool)`` for the images where the
    built-in Haar detector finds a face (the largest, a square 1.3x crop); ``faces`` on face crops as they are."""

    def __init__(self, session, batch_size: int = 16) -> None:
        self.session, self.batch_size = session, batch_size
        self.input = session.get_inputs()[0]
        self.size = self.input.shape[2] if isinstance(self.input.shape[2], int) else 112

    def _pixels(self, face: torch.Tensor) -> torch.Tensor:
        """A ``[h, w, C]`` face crop as the model's ``[3, size, size]`` input."""
        crop = face[..., :3].movedim(-1, 0)[None].float()
        return F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)[0]

    def _embed(self, faces: list[torch.Tensor]) -> torch.Tensor:
        pixels = torch.stack([self._pixels(f) for f in faces]) if faces else torch.zeros(0, 3, self.size, self.size)
        pixels = (pixels.clamp(0, 1) * 255 - 127.5) / 127.5
        outputs = [self.session.run(None, {self.input.name: pixels[i:i + self.batch_size].numpy()})[0]
                   for i in range(0, pixels.shape[0], self.batch_size)]
        return (torch.from_numpy(np.concatenate(outputs)) if outputs else torch.zeros(0, 1)).float()

    def faces(self, crops: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` features of ``[N, H, W, C]`` face crops, each taken as the face (no detection)."""
        return self._embed(list(crops))

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from . import face_detect

        faces, found = [], []
        for frame, boxes in zip(images, face_detect.haar_faces(images)):
            found.append(bool(boxes))
            if not boxes:
                continue
            box = boxes[0]
            side = int(max(box.height, box.width) * FACE_CROP_SCALE)
            cy, cx = (box.y0 + box.y1) // 2, (box.x0 + box.x1) // 2
            h, w = frame.shape[:2]
            y0, x0 = min(max(cy - side // 2, 0), max(h - side, 0)), min(max(cx - side // 2, 0), max(w - side, 0))
            faces.append(frame[y0:y0 + side, x0:x0 + side])
        return self._embed(faces), torch.tensor(found, dtype=torch.bool)


def load_arcface(path: str | Path, batch_size: int = 16) -> ArcFace:
    """ArcFace face recognition (see ``ArcFace``); called as a ``FaceEncoder``: images -> (features, found).

    Runs insightface's ONNX recognition models (e.g. ``buffalo_l/w600k_r50.onnx``) through
    onnxruntime, the runtime insightface itself uses, with insightface's input normalisation
    ((x - 127.5) / 127.5, RGB). Faces come from the built-in Haar detector (largest per image,
    a square 1.3x crop resized to the model's input), not insightface's landmark alignment, so
    scores are comparable between runs of this command, not with insightface's own numbers.
    """
    path = Path(path)
    if not path.is_file() or path.suffix != ".onnx":
        raise FileNotFoundError(f"ArcFace: no .onnx model at {path}; put insightface's recognition model "
                                "(e.g. models/insightface/models/buffalo_l/w600k_r50.onnx) there.")
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("ArcFace: the face score needs onnxruntime (pip install onnxruntime); it is optional") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"ArcFace: {path.name} takes {shape}, not face images [N, 3, H, W]")
    if len(inputs) != 1 or len(outputs) != 1 or any(isinstance(side, int) and side != 112 for side in shape[2:]):
        # insightface's packs hold detection, landmark and gender/age models beside the recognition one
        raise ValueError(f"ArcFace: {path.name} takes {[i.shape for i in inputs]} and gives {len(outputs)} "
                         "output(s): not a face recognition model, which takes one [N, 3, 112, 112] face crop and "
                         "gives one embedding. Pick insightface's recognition model (e.g. buffalo_l/w600k_r50.onnx; "
                         "the pack's other files detect faces, landmarks or gender and age).")
    return ArcFace(session, batch_size)
