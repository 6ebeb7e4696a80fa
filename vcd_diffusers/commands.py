"""The ``vcd`` subcommands: train-id, generate, refine-face, upscale, evaluate (registered with ``cli.register``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vcd_core.segment import BOX_THRESHOLD, TEXT_THRESHOLD

from . import cli


def add_refine_inputs(parser: argparse.ArgumentParser) -> None:
    """What the refine stages start from: the input video, the models and the prompt with its identity."""
    parser.add_argument("input", type=Path, help="the input video: mp4 (needs PyAV), animated WEBP/GIF, or a folder "
                        "of PNG frames")
    cli.add_model_options(parser)
    cli.add_prompt_options(parser)


# ---- train-id -------------------------------------------------------------------------------------------------

def configure_train(parser: argparse.ArgumentParser) -> None:
    cli.add_model_options(parser, motion=False)
    parser.add_argument("photos", nargs="+", type=Path, help="photos of the person, or folders of them")
    subject = parser.add_mutually_exclusive_group()
    subject.add_argument("--masks", type=Path, help="folder of subject masks (white = person) named like the photos; "
                         "without it (or --segment) the loss covers the whole photo")
    subject.add_argument("--segment", metavar="PROMPT", help="mask the loss to what PROMPT names (e.g. 'woman'), found "
                         "by GroundingDINO + SAM (the paper's prompt-to-segmentation); needs --grounding-dino and --sam")
    seg = parser.add_argument_group("segmentation (with --segment)")
    seg.add_argument("--grounding-dino", type=Path, help="a Hugging Face GroundingDINO folder (e.g. grounding-dino-tiny) "
                     "or an original groundingdino_swint_ogc.pth with its .cfg.py beside it (+ --bert)")
    seg.add_argument("--sam", type=Path, help="an original SAM checkpoint (e.g. sam_vit_b_01ec64.pth)")
    seg.add_argument("--bert", type=Path, help="bert-base-uncased folder (config.json, vocab.txt) for an original .pth")
    seg.add_argument("--box-threshold", type=float, default=BOX_THRESHOLD, help="GroundingDINO box score to keep (%(default)s)")
    seg.add_argument("--text-threshold", type=float, default=TEXT_THRESHOLD, help="GroundingDINO text score (%(default)s)")
    seg.add_argument("--save-masks", type=Path, help="also write the masks there as PNGs named like the photos "
                     "(check them; fix one by hand and train again with --masks); never replaces a file")
    parser.add_argument("--out", type=Path, required=True, help="the identity file, NAME.safetensors")
    parser.add_argument("--class-word", default="man", help="what the person is: man, woman, person ... (%(default)s)")
    parser.add_argument("--tokens", type=int, default=4, help="new tokens to learn (the paper: 4)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=512, help="training image size (%(default)s)")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="no flips, rotations or zooms")
    parser.add_argument("--no-gradient-checkpointing", dest="checkpointing", action="store_false",
                        help="keep UNet activations (faster, much more memory)")
    parser.add_argument("--losses", type=Path, help="also write the loss per step as CSV")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing identity file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def photo_files(paths: list[Path]) -> list[Path]:
    from vcd_core.evaluate import IMAGE_SUFFIXES

    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"photos: {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"photos: no file or folder at {path}.")
    return files


def mask_for(photo: Path, folder: Path) -> Path:
    """The mask named like ``photo`` in ``folder``: ``STEM.png`` (what --save-masks writes) first, else any suffix."""
    import glob

    if (folder / f"{photo.stem}.png").is_file():
        return folder / f"{photo.stem}.png"
    matches = sorted(p for p in folder.glob(f"{glob.escape(photo.stem)}.*") if p.is_file())
    if not matches:
        raise FileNotFoundError(f"--masks: no mask for {photo.name} in {folder} (expected {photo.stem}.png).")
    return matches[0]


def check_segment_options(args: argparse.Namespace, files: list[Path]) -> None:
    """Refuse a --segment run that misses a model, has thresholds out of range or would replace a file with a
    saved mask, before any work."""
    if args.segment is None:
        defaults = {"box_threshold": BOX_THRESHOLD, "text_threshold": TEXT_THRESHOLD}
        for option in ("grounding_dino", "sam", "bert", "save_masks", *defaults):
            if getattr(args, option) != defaults.get(option):
                raise ValueError(f"--{option.replace('_', '-')} is used with --segment PROMPT (say what to mask, "
                                 "e.g. --segment woman).")
        return
    if not args.segment.strip():
        raise ValueError("--segment: say what to segment, e.g. --segment woman.")
    for option, what in (("grounding_dino", "a GroundingDINO folder or .pth"), ("sam", "a SAM checkpoint")):
        path = getattr(args, option)
        if path is None or not path.exists():
            flag = f"--{option.replace('_', '-')}"
            raise FileNotFoundError(f"{flag}: --segment needs {what}" + ("" if path is None else f"; nothing at {path}")
                                    + ".")
    for option in ("box_threshold", "text_threshold"):
        if not 0 <= getattr(args, option) <= 1:
            raise ValueError(f"--{option.replace('_', '-')} must be in [0, 1] (got {getattr(args, option)}).")
    if args.save_masks is not None:
        stems = [path.stem for path in files]
        clash = sorted({stem for stem in stems if stems.count(stem) > 1})
        if clash:
            raise ValueError(f"--save-masks: photos named {clash} more than once; masks are saved by name: rename them.")
        photos = {path.resolve() for path in files}
        for stem in stems:  # never replaced, even with --overwrite: it may be a photo, or hold fixes made by hand
            mask = args.save_masks / f"{stem}.png"
            if mask.resolve() in photos:
                raise ValueError(f"--save-masks: {mask} is one of the photos; save the masks in another folder.")
            if mask.exists():
                raise FileExistsError(f"--save-masks: {mask} exists; masks are never replaced (it may hold fixes made "
                                      "by hand): pick an empty folder, or train on it with --masks.")


def subject_masks(args: argparse.Namespace, files: list[Path], photos: list) -> list | None:
    """The subject masks for the photos: read (--masks), segmented (--segment, optionally saved), or None."""
    from .video_io import read_masks, write_frames

    if args.masks is not None:
        return [read_masks(mask_for(path, args.masks), "--masks")[0] for path in files]
    if args.segment is None:
        return None
    from .segment import segment_photos

    device, _ = cli.device_and_dtype(args)
    masks, missed = segment_photos(photos, args.segment, args.grounding_dino, args.sam, bert=args.bert,
                                   box_threshold=args.box_threshold, text_threshold=args.text_threshold, device=device)
    print(f"segmented '{args.segment}' in {len(files) - len(missed)} of {len(files)} photos"
          + (f"; none in {[files[i].name for i in missed]}" if missed else ""))
    if args.save_masks is not None:
        for path, mask in zip(files, masks):  # one by one: photos may differ in size
            write_frames(mask[None, ..., None].expand(-1, -1, -1, 3), args.save_masks, False, [path.stem])
    return masks


def run_train(args: argparse.Namespace) -> None:
    import torch

    from vcd_core import embedding_io, identity
    from vcd_core.files import check_writable, exists_error

    from .train import train_identity
    from .video_io import read_frames, write_table

    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out: {args.out.name} must end in .safetensors (the file ComfyUI and vcd read).")
    name = embedding_io.check_name(args.out.stem)
    for path in (args.out, args.losses):
        if path is not None and path.exists() and not args.overwrite:
            raise exists_error(path)
    check_writable(args.out.parent, "--out")  # a read-only or missing disk is found now, not after the training
    config = identity.TrainConfig(steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed)
    files = photo_files(args.photos)
    check_segment_options(args, files)
    photos = [read_frames(path, "photos")[0] for path in files]
    masks = subject_masks(args, files, photos)
    inverted = identity.background_like(masks) if masks else []
    if inverted:
        print(f"warning: {identity.background_warning(files[i].name for i in inverted)}")
    models = cli.load_models(args)  # float32 (train-id has no --dtype): CUDA trains under autocast
    progress = cli.Progress("train-id", args.quiet)
    trained = train_identity(models, photos, masks, name=name, class_word=args.class_word, tokens=args.tokens,
                             config=config, resolution=args.resolution, augment=args.augment,
                             gradient_checkpointing=args.checkpointing,
                             callback=lambda step, loss: progress(step + 1, config.steps, loss=f"{loss:.4f}"))
    if trained.left_out:
        print(f"warning: the masks of {[files[i].name for i in trained.left_out]} are empty; those photos were "
              "left out.")
    path = embedding_io.write_embedding(args.out.parent, name, trained.embedding, overwrite=args.overwrite)
    losses = json.loads(trained.embedding.metadata["losses"])
    if args.losses is not None:
        write_table([{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)], args.losses, args.overwrite)
    print(f"wrote {path} ({trained.embedding.tokens} tokens x {trained.embedding.width}, final loss "
          f"{torch.tensor(losses[-10:]).mean():.4f} over the last {min(10, len(losses))} steps)")
    print(f"use it: vcd generate --identity {path} --prompt 'a photo of {{identity}} {args.class_word.strip()} ...'; "
          f"in ComfyUI put it under models/embeddings and write '{identity.snippet(name, args.class_word.strip())}'")


cli.register(cli.Command(
    "train-id", "learn an identity embedding (the ID module) from a few photos of a person",
    "  vcd train-id photos/ --checkpoint realisticVisionV51.safetensors --class-word woman --out ids/mona.safetensors\n"
    "  vcd train-id a.jpg b.jpg c.jpg --masks masks/ --checkpoint sd15.safetensors --steps 200 --out ids/me.safetensors\n"
    "  vcd train-id photos/ --segment woman --grounding-dino models/grounding-dino/grounding-dino-tiny \\\n"
    "      --sam models/sams/sam_vit_b_01ec64.pth --save-masks masks/ --checkpoint sd15.safetensors --out ids/mona.safetensors\n",
    configure_train, run_train))


# ---- generate -------------------------------------------------------------------------------------------------

def configure_generate(parser: argparse.ArgumentParser) -> None:
    from .pipeline import T2V

    cli.add_model_options(parser)
    cli.add_prompt_options(parser)
    parser.add_argument("--frames", type=int, default=16, help="video length (the motion module covers up to 32)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    cli.add_sampling_options(parser, T2V, denoise=False)
    cli.add_output_options(parser, "generate")


def run_generate(args: argparse.Namespace) -> None:
    from .pipeline import T2V, generate

    settings = cli.sampling(args, T2V)
    cli.check_outputs(args, args.height, args.width)
    models = cli.load_models(args)
    frames = generate(models, args.prompt, negative=args.negative, identity=cli.identity(args, models),
                      frames=args.frames, height=args.height, width=args.width, settings=settings,
                      callback=cli.Progress("generate", args.quiet))
    cli.write_outputs(frames, args)


cli.register(cli.Command(
    "generate", "T2V VCD: a video of the identity from the 3D Gaussian noise prior (SD1.5 + AnimateDiff)",
    "  vcd generate --checkpoint realisticVisionV51.safetensors --motion-module mm_sd_v15_v2.ckpt \\\n"
    "      --identity ids/mona.safetensors --prompt 'a photo of {identity} woman walking in a garden' --out mona.mp4\n"
    "  vcd generate ... --gamma 0 --seed 3 --frames 16 --out iid_noise.webp   # the ablation's i.i.d. noise\n",
    configure_generate, run_generate))


# ---- refine-face ----------------------------------------------------------------------------------------------

def configure_face(parser: argparse.ArgumentParser) -> None:
    from vcd_core.face import CROP_MODES

    from .face import FACE

    add_refine_inputs(parser)
    parser.add_argument("--mask", type=Path, help="face masks (white = face): one image for all frames, an animated "
                        "image/video or a folder with one per frame; default: detected (OpenCV Haar)")
    parser.add_argument("--crop-factor", type=float, default=3.0, help="window side = face box side x this (paper 3)")
    parser.add_argument("--guide-size", type=int, default=512, help="small crops are upscaled to this side")
    parser.add_argument("--max-size", type=int, default=1024, help="crops are never denoised above this side")
    parser.add_argument("--feather", type=int, default=5, help="soft edge of the paste mask, in pixels")
    parser.add_argument("--crop-mode", choices=CROP_MODES, default="union",
                        help="union: one window for all frames (the paper); per_frame_smoothed: windows follow the face")
    cli.add_sampling_options(parser, FACE)
    cli.add_output_options(parser, "refine-face")


def run_face(args: argparse.Namespace) -> None:
    from .face import FACE, refine_face
    from .video_io import read_frames, read_masks

    settings = cli.sampling(args, FACE)
    frames = read_frames(args.input, "input")
    cli.check_outputs(args, *frames.shape[1:3])
    masks = None
    if args.mask is not None:  # checked against the frames before any model is loaded
        from vcd_core.face import masks_for_frames

        masks = masks_for_frames(read_masks(args.mask, "--mask"), frames, "--mask")
    models = cli.load_models(args)
    result = refine_face(models, frames, args.prompt, masks=masks, negative=args.negative,
                         identity=cli.identity(args, models), crop_factor=args.crop_factor,
                         guide_size=args.guide_size, max_size=args.max_size, feather=args.feather,
                         crop_mode=args.crop_mode, settings=settings,
                         callback=cli.Progress("refine-face", args.quiet))
    if result.warning:
        print(f"warning: {result.warning}")
    cli.write_outputs(result.frames, args)


cli.register(cli.Command(
    "refine-face", "Face VCD: re-denoise the face of every frame jointly through one crop window, paste it back",
    "  vcd refine-face mona.mp4 --checkpoint rv51.safetensors --motion-module mm_sd_v15_v2.ckpt \\\n"
    "      --identity ids/mona.safetensors --prompt 'a photo of {identity} woman' --out mona_face.mp4\n"
    "  vcd refine-face frames/ --mask face.png ... --crop-mode per_frame_smoothed --out moving_face.webp\n",
    configure_face, run_face))


# ---- upscale --------------------------------------------------------------------------------------------------

def configure_upscale(parser: argparse.ArgumentParser) -> None:
    from .tiled import TILED

    add_refine_inputs(parser)
    parser.add_argument("--scale", type=float, default=2.0, help="resize factor before refining (paper 2; 1 for "
                        "frames already upscaled by another upscaler)")
    parser.add_argument("--upscale-model", type=Path, help="an ESRGAN-type upscaler (e.g. 4x-UltraSharp.pth) run on "
                        "each frame first, then resized to --scale; without it: a bicubic resize")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="overlap between tiles in pixels")
    parser.add_argument("--tile-batch", type=int, default=1, help="tiles per model call (faster on big GPUs)")
    cli.add_sampling_options(parser, TILED)
    cli.add_output_options(parser, "upscale")


def run_upscale(args: argparse.Namespace) -> None:
    from vcd_core.tiling import check_tiling

    from .tiled import TILED, scaled_size, upscale
    from .video_io import read_frames

    settings = cli.sampling(args, TILED)
    check_tiling(args.tile_size, args.overlap, args.tile_batch)
    frames = read_frames(args.input, "input")
    cli.check_outputs(args, *scaled_size(frames.shape[1], frames.shape[2], args.scale))
    upscale_model = None
    if args.upscale_model is not None:
        from .upscaler import load_upscale_model

        upscale_model = load_upscale_model(args.upscale_model, cli.device_and_dtype(args)[0])
    models = cli.load_models(args)
    out = upscale(models, frames, args.prompt, scale=args.scale, negative=args.negative,
                  identity=cli.identity(args, models), tile_size=args.tile_size, overlap=args.overlap,
                  tile_batch=args.tile_batch, settings=settings, upscale_model=upscale_model,
                  callback=cli.Progress("upscale", args.quiet))
    cli.write_outputs(out, args)


cli.register(cli.Command(
    "upscale", "Tiled VCD: resize (2x) and re-denoise in spatial tiles that each carry all frames",
    "  vcd upscale mona_face.mp4 --checkpoint rv51.safetensors --motion-module mm_sd_v15_v2.ckpt \\\n"
    "      --identity ids/mona.safetensors --prompt 'a photo of {identity} woman' --out mona_1024.mp4\n"
    "  vcd upscale mona_face.mp4 --upscale-model 4x-UltraSharp.pth --scale 2 ... --out mona_1024.mp4  # ESRGAN first\n"
    "  vcd upscale esrgan_2x/ --scale 1 --tile-size 512 --overlap 64 ... --out refined.mp4   # already upscaled\n",
    configure_upscale, run_upscale))


# ---- evaluate -------------------------------------------------------------------------------------------------

def configure_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, help="generated videos (mp4, WEBP/GIF, PNG-frame folders)")
    parser.add_argument("--references", type=Path, required=True, help="folder of the person's reference photos")
    parser.add_argument("--prompt", required=True, help="the prompt the videos were generated from, for CLIP-T "
                        "({identity} is left out: 'a photo of {identity} woman' scores as 'a photo of woman')")
    parser.add_argument("--dino", type=Path, required=True, help="local Hugging Face folder of DINO ViT-S/16")
    parser.add_argument("--clip", type=Path, required=True, help="local Hugging Face folder of CLIP ViT-B/32")
    parser.add_argument("--arcface", type=Path, help="optional: insightface's ArcFace .onnx (needs onnxruntime)")
    parser.add_argument("--out", type=Path, default=Path("vcd_scores.csv"), help="one row per video (%(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table")


def run_evaluate(args: argparse.Namespace) -> None:
    from vcd_core.evaluate import read_references
    from vcd_core.files import exists_error
    from vcd_core.text_encoder import MARKER

    from .evaluate import METRICS, evaluate, load_evaluators
    from .video_io import read_frames, write_table

    if args.out.exists() and not args.overwrite:
        raise exists_error(args.out)
    references = read_references(args.references)
    evaluators = load_evaluators(args.dino, args.clip, args.arcface)
    prompt = " ".join(args.prompt.replace(MARKER, " ").split())
    rows = []
    progress = cli.Progress("evaluate")
    for index, video in enumerate(args.videos, 1):
        scores = evaluate(read_frames(video, "video"), references, prompt, evaluators, subject="references")
        columns = METRICS + (("face_similarity", "face_frames") if evaluators.face is not None else ())
        rows.append({"video": str(video), "prompt": prompt, "frames": scores["frames"],
                     **{m: scores[m] for m in columns}})
        progress(index, len(args.videos))
    path = write_table(rows, args.out, args.overwrite)
    for row in rows:
        print(row["video"], " ".join(f"{m}={row[m]:.3f}" for m in METRICS if row[m] is not None))
    print(f"wrote {path}")


cli.register(cli.Command(
    "evaluate", "the paper's metrics (DINO, CLIP-I, CLIP-T, temporal consistency, motion) of generated videos",
    "  vcd evaluate mona.mp4 mona_face.mp4 --references photos/mona --prompt 'a photo of {identity} woman' \\\n"
    "      --dino models/dino-vits16 --clip models/clip-vit-base-patch32 --out scores.csv\n",
    configure_evaluate, run_evaluate))
