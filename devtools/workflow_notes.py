"""What the shipped workflows say about themselves: the Note at their start, and the model files their
loader nodes name (the frontend's ``models`` node property, which its missing-models dialog lists)."""

from __future__ import annotations

# Loader nodes: (node class, input holding the file name) -> the folder under ComfyUI/models/.
MODEL_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ADE_LoadAnimateDiffModel", "model_name"): "animatediff_models",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("VCDPromptSegment", "sam_model"): "sams",
}
# Where each file the workflows name is published (the frontend's missing-models dialog offers the link).
MODEL_URLS = {
    "Realistic_Vision_V5.1_fp16-no-ema.safetensors":
        "https://huggingface.co/SG161222/Realistic_Vision_V5.1_noVAE/resolve/main/Realistic_Vision_V5.1_fp16-no-ema.safetensors",
    "mm_sd_v15_v2.ckpt": "https://huggingface.co/guoyww/animatediff/resolve/main/mm_sd_v15_v2.ckpt",
    "4x-UltraSharp.pth": "https://huggingface.co/Kim2091/UltraSharp/resolve/main/4x-UltraSharp.pth",
    "sam_vit_b_01ec64.pth": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}

PACKS = ("Packs: this one (Video Custom Diffusion) and AnimateDiff-Evolved "
         "(Kosinkadink/ComfyUI-AnimateDiff-Evolved), both from the Manager or git clone into custom_nodes/.")
T2V_MODELS = """Files (folders under ComfyUI/models/):
- checkpoints/  SD1.5: Realistic_Vision_V5.1_fp16-no-ema.safetensors (the paper's)
- animatediff_models/  mm_sd_v15_v2.ckpt"""
T2V_FILES = f"""{T2V_MODELS}
- embeddings/  the identity: mona.pt (the Magic-Me authors' file) or one you trained with train_identity.json"""
IDENTITY_FIRST = """Change first:
1. Load Identity: pick your identity file (press R after adding one).
2. The prompt: keep {identity} where the person goes, then the class word (woman / man)."""
T2V_DEFAULTS = ("Paper defaults: 16 frames at 512x512, dpmpp_2m karras, 20 steps, CFG 8; "
                "3D Gaussian noise gamma 0.1 (0 = i.i.d., 0.2 is almost still).")

NOTES = {
    "t2v_vcd": f"""T2V VCD: a 16-frame video of one person (Magic-Me, arXiv 2402.09368)

{PACKS}

{T2V_FILES}

{IDENTITY_FIRST}
3. noise_seed and gamma on VCD 3D Gaussian Noise.

{T2V_DEFAULTS}
Saves an mp4 (h264) in output/VCD/.""",
    "full_pipeline": f"""Full Magic-Me pipeline: T2V VCD -> Face VCD -> 2x upscale -> Tiled VCD

{PACKS}

{T2V_FILES}
- upscale_models/  a 4x ESRGAN-type model (4x-UltraSharp.pth), scaled to 2x

{IDENTITY_FIRST}
3. noise_seed and gamma; Face and Tiled VCD take the same prompt.

{T2V_DEFAULTS}
Face VCD: crop x3, denoise 0.8, euler 20 steps. Tiled VCD: 512 px tiles, denoise 0.2 from the 3D prior.
Tiled VCD needs a big GPU at 1024 px: bypass it (Ctrl+B) to try the rest first.""",
    "refine_video": f"""Face VCD on a video you already have

{PACKS}

Files (folders under ComfyUI/models/):
- checkpoints/  SD1.5: Realistic_Vision_V5.1_fp16-no-ema.safetensors (the paper's)
- animatediff_models/  mm_sd_v15_v2.ckpt
- embeddings/  the identity (mona.pt, or your own from train_identity.json)
input/: the frames, an animated WEBP/GIF/PNG (Load Image reads every frame).

{IDENTITY_FIRST}
3. The frames in Load Image.

Paper defaults: one crop window for all frames (union of faces x 3), denoise 0.8, euler, 20 steps, CFG 8,
feather 5 px. Saves an mp4 (h264) in output/VCD/.""",
    "train_identity": """Train an identity (Magic-Me ID module) from 3-10 photos of one person

Packs: this one (Video Custom Diffusion).
Files (folders under ComfyUI/models/):
- checkpoints/  SD1.5: Realistic_Vision_V5.1_fp16-no-ema.safetensors (the paper's)
- grounding-dino/grounding-dino-tiny/  a Hugging Face GroundingDINO folder
  (or an original .pth with its .cfg.py)
- sams/  sam_vit_b_01ec64.pth (or the _l / _h checkpoints)
input/: the photos (person_1.png ...).

Change first:
1. The photos (add more with another Batch Images).
2. name and class_word on Train Identity: it writes models/embeddings/vcd/NAME.safetensors.

Paper defaults: 4 tokens, 200 steps, AdamW lr 1e-3, batch 4, masks from "person"
(box 0.3, text 0.25). The still at the end checks the identity.""",
    "two_identities": f"""Two identities in one clip: regional T2V VCD + Face VCD per face track

{PACKS}

{T2V_MODELS}
- embeddings/  ironman.pt, mona.pt (the Magic-Me authors' files) or your own

Change first:
1. The two Load Identity nodes (left, right), class words (press R after adding).
2. The prompts ({{identity}} = the person); the Regional Identity boxes, kept apart.
{T2V_DEFAULTS}
Face VCD: crop x3, denoise 0.8, euler 20 steps, one pass per face track;
tracks go left to right: positive_1 = the left identity's prompt.
Fails: faces that touch, overlap or cross (the identities mix there).
Saves an mp4 (h264) in output/VCD/.""",
}
