"""Video Custom Diffusion (Magic-Me, arXiv 2402.09368) on diffusers, without ComfyUI: the library behind ``vcd``.

Built on ``vcd_core`` (the functions the ComfyUI nodes use), offline:

    from vcd_diffusers import load_models, load_identity, generate, refine_face, upscale, train_identity

    models = load_models("realisticVisionV51.safetensors", "mm_sd_v15_v2.ckpt", device="cuda", dtype=torch.float16)
    mona = load_identity("mona.pt", models.text.width)
    frames = generate(models, "a photo of {identity} woman in a garden", identity=mona)   # [F, H, W, 3] in [0, 1]
    frames = refine_face(models, frames, "a photo of {identity} woman", identity=mona).frames
    frames = upscale(models, frames, "a photo of {identity} woman", identity=mona)

Each stage's settings are a ``Sampling`` (``T2V``, ``FACE``, ``TILED`` hold the paper's). ``train_identity`` takes
photos (and subject masks) and returns the embedding to save with ``vcd_core.embedding_io.write_embedding``;
``load_evaluators`` + ``evaluate`` score a video the paper's way. Importing this package loads no model.
"""

from .evaluate import Evaluators, evaluate, load_evaluators
from .face import FACE, FaceResult, detect_faces, refine_face
from .loading import Models, load_identity, load_models, load_motion_adapter
from .pipeline import T2V, Sampling, generate, initial_noise
from .tiled import TILED, tiled_refine, upscale
from .train import TrainedIdentity, base_model_hash, train_identity
from .upscaler import load_upscale_model

__all__ = [
    "Models", "load_models", "load_motion_adapter", "load_identity", "Sampling", "T2V", "FACE", "TILED",
    "initial_noise", "generate", "FaceResult", "detect_faces", "refine_face", "tiled_refine", "upscale",
    "load_upscale_model", "TrainedIdentity", "base_model_hash", "train_identity", "Evaluators", "load_evaluators",
    "evaluate",
]
