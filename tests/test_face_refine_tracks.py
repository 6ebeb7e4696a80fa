"""VCD Face Refine Tracks (Face VCD per face track) on the tiny SD1.5 model: in-process, called as ComfyUI's
executor calls a list-input node (every input a list), and once on the real server after VCD Face Tracks."""

from __future__ import annotations

import numpy as np
import pytest
import safetensors.torch
import torch

from devtools.clips import as_tensor, two_faces

FRAMES = 4  # two_faces' default

RECORDER = "VCD_test_track_recorder"


def identity(value: float):
    """A conditioning whose CLIP tokens are all ``value``: recognisable in what the model receives."""
    return [[torch.full((1, 77, 768), value), {"pooled_output": None}]]


def box_masks(frames: int, height: int, width: int, boxes: dict[int, tuple[int, int, int, int]]) -> torch.Tensor:
    """``[frames, H, W]`` with box ``(y0, y1, x0, x1)`` set in each listed frame."""
    mask = torch.zeros(frames, height, width)
    for i, (y0, y1, x0, x1) in boxes.items():
        mask[i, y0:y1, x0:x1] = 1
    return mask


def recording(model, calls: list):
    """A clone of ``model`` that appends, per sampling call, ``{"frames": latent frames, "cond": [...], "uncond": [...]}``
    with the cross-attention tensors of every model call (split by ComfyUI's cond_or_uncond)."""
    from comfy.patcher_extension import WrappersMP

    def outer_sample(executor, *args, **kwargs):
        calls.append({"frames": int(args[1].shape[0]), "cond": [], "uncond": []})
        return executor(*args, **kwargs)

    def apply_model(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        kinds = transformer_options["cond_or_uncond"]
        for kind, chunk in zip(kinds, c_crossattn.chunk(len(kinds))):
            calls[-1]["uncond" if kind else "cond"].append(chunk.detach().clone())
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    patched = model.clone()
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, RECORDER, outer_sample)
    patched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, RECORDER, apply_model)
    return patched


@pytest.fixture(scope="module")
def refine_tracks(parts):
    """``refine_tracks(image, masks, positives, model=None, listed=None, **overrides)``: the node's outputs, every
    input passed as a list of one (``masks`` and ``positives`` as lists; ``listed`` inputs as given), as ComfyUI's
    executor calls an ``is_input_list`` node. Face Refine's fixture settings."""

    def run(image, masks, positives, model=None, listed=None, **overrides):
        options = dict(crop_factor=3.0, guide_size=64, max_size=128, denoise=0.8, gamma=0.0, feather=5,
                       crop_mode="union", **parts["sampling"])
        options.update(overrides)
        options.update({f"positive_{k + 1}": p for k, p in enumerate(positives) if p is not None})
        with torch.inference_mode():
            return parts["nodes"].face_tracks.VCDFaceRefineTracks.execute(
                track_masks=list(masks), model=[model or parts["model"]], negative=[parts["negative"]],
                vae=[parts["vae"]], image=[image], **{**{k: [v] for k, v in options.items()}, **(listed or {})})

    return run


def frames_and_masks(gap: int):
    """4 random 64x128 frames; face A (columns 16-59) in every frame, face B starting ``gap`` px after A's last
    column (negative: they overlap) in frames 1-3 only. Both within 5 px feathers of each other."""
    frames = torch.rand(FRAMES, 64, 128, 3, generator=torch.Generator().manual_seed(11))
    a = box_masks(FRAMES, 64, 128, {i: (12, 52, 16, 60) for i in range(FRAMES)})
    b = box_masks(FRAMES, 64, 128, {i: (14, 54, 60 + gap, 104 + gap) for i in range(1, FRAMES)})
    return frames, a, b


def test_each_track_is_sampled_once_over_its_frames_with_its_own_identity(parts, refine_tracks, monkeypatch):
    import comfy.utils

    frames, a, b = frames_and_masks(gap=-6)
    calls: list = []
    texts, updates = [], []
    monkeypatch.setattr(parts["nodes"].face_tracks, "send_progress_text", lambda node, text: texts.append(text))
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None: updates.append((value, preview)))
    out = refine_tracks(frames, [a, b], [identity(0.25), identity(-0.5)], model=recording(parts["model"], calls))
    assert texts == ["track 0 (1 of 2): 4 frame(s)", "track 1 (2 of 2): 3 frame(s)"]
    value, (kind, picture, _) = updates[0]  # the windows, before any sampler step
    assert value == 0 and kind == "PNG" and updates[1][0] >= 1
    assert torch.equal(torch.from_numpy(np.array(picture)), (out.result[3][0] * 255).round().byte())
    assert [c["frames"] for c in calls] == [FRAMES, FRAMES - 1]  # one call per track, all of its frames in it
    negative = parts["negative"][0][0]
    for call, value in zip(calls, (0.25, -0.5)):
        assert len(call["cond"]) == parts["sampling"]["steps"] and len(call["uncond"]) == len(call["cond"])
        for cond, uncond in zip(call["cond"], call["uncond"]):
            assert cond.shape[0] == call["frames"] and torch.all(cond == value)
            assert torch.equal(uncond, negative.expand_as(uncond))
    assert "positive_" not in (out.ui.as_dict()["text"][0] if out.ui else "")


@pytest.mark.parametrize("gap", [-6, 0, 3], ids=["overlapping", "touching", "3px-apart"])
def test_pastes_stay_inside_their_own_face_and_never_overlap(refine_tracks, gap):
    frames, a, b = frames_and_masks(gap)
    image, paste_mask, per_track, _ = refine_tracks(frames, [a, b], [identity(0.25), identity(-0.5)]).result
    assert image.shape == frames.shape and len(per_track) == 2
    paste_a, paste_b = per_track
    assert torch.equal(paste_mask, paste_a + paste_b) and paste_mask.max() == 1
    assert not ((paste_a > 0) & (paste_b > 0)).any()
    assert not (paste_a[b > 0.5]).any() and not (paste_b[a > 0.5]).any()  # neither writes on the other's face
    assert not paste_b[0].any()  # B is absent from frame 0: nothing of it is pasted there
    outside = paste_mask == 0
    assert torch.equal(image[outside], frames[outside])
    change = (image - frames).abs().amax(dim=-1)
    for paste in per_track:  # each face really was refined, in every frame it is in (a later paste keeps it)
        for i in range(FRAMES):
            assert not paste[i].any() or change[i][paste[i] == 1].mean() > 0.05
    if gap < 0:  # the overlap keeps its input pixels
        both = (a > 0.5) & (b > 0.5)
        assert both.any() and torch.equal(image[both], frames[both])


@pytest.mark.parametrize("crop_mode", ["union", "per_frame_smoothed"])
def test_one_track_refines_exactly_as_face_refine(parts, refine_tracks, face_refine, crop_mode):
    frames = torch.rand(FRAMES, 64, 128, 3, generator=torch.Generator().manual_seed(12))
    moving = box_masks(FRAMES, 64, 128, {i: (12, 40, 10 + 12 * i, 34 + 12 * i) for i in range(FRAMES)})
    image, paste_mask, [paste], _ = refine_tracks(frames, [moving], [parts["positive"]], crop_mode=crop_mode).result
    wanted, wanted_mask, *_ = face_refine(frames, mask=moving, crop_mode=crop_mode)
    assert torch.equal(paste_mask, wanted_mask) and torch.equal(paste, wanted_mask)
    assert torch.equal(image, wanted) and not torch.equal(image, frames)


def test_each_track_draws_its_own_noise(refine_tracks):
    """Two identical faces, side by side, same identity: track k samples with seed + k, so they come out different."""
    half = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(13))
    frames = torch.cat([half, half], dim=2)
    a = box_masks(2, 64, 128, {i: (16, 48, 16, 48) for i in range(2)})
    b = box_masks(2, 64, 128, {i: (16, 48, 80, 112) for i in range(2)})
    image, _, [paste_a, paste_b], _ = refine_tracks(frames, [a, b], [identity(0.25)] * 2).result
    assert torch.equal(paste_a[..., :64], paste_b[..., 64:])  # the same windows and masks, shifted by 64 px
    assert (image[:, :, :64] - image[:, :, 64:]).abs()[paste_a[..., :64] == 1].mean() > 0.01


def test_windows_preview_has_a_colour_per_track(inproc, refine_tracks):
    frames, a, b = frames_and_masks(gap=0)
    *_, preview = refine_tracks(frames, [a, b], [identity(0.25), identity(-0.5)]).result
    palette = inproc.pack.vcd_core.preview.PALETTE
    # Windows: A's is Box(0, 64, 6, 70) in every frame, B's Box(0, 64, 50, 114) from frame 1 (drawn 2 px thick).
    assert all(torch.allclose(preview[i, 32, 6], torch.tensor(palette[0])) for i in range(FRAMES))
    assert all(torch.allclose(preview[i, 32, 113], torch.tensor(palette[1])) for i in range(1, FRAMES))
    assert torch.equal(preview[0, :, 110:], frames[0, :, 110:])  # no B in frame 0: nothing drawn there
    assert torch.allclose(preview[2, 14, 80], torch.tensor(palette[1]))  # B's face outline


def test_an_empty_track_needs_no_identity_and_no_face_leaves_the_frames(refine_tracks, caplog):
    frames, a, _ = frames_and_masks(gap=0)
    empty = torch.zeros(FRAMES, 64, 128)
    image, paste_mask, [first, second], _ = refine_tracks(frames, [empty, a], [None, identity(0.25)]).result
    assert not first.any() and second.any() and torch.equal(paste_mask, second)
    out = refine_tracks(frames, [empty], [None, identity(0.25)])
    image, paste_mask, _, preview = out.result
    assert torch.equal(image, frames) and not paste_mask.any() and torch.equal(preview, frames)
    text = out.ui.as_dict()["text"][0]
    assert "no track has a face" in text and "no track has a face" in caplog.text
    assert "positive_2 is wired but track_masks holds only 1 track(s): it is not used" in text


@pytest.mark.parametrize("change, match", [
    pytest.param(dict(positives=[identity(0.25), None]), r"track\(s\) \[1\] have no identity conditioning: wire positive_2",
                 id="one-identity-two-tracks"),
    pytest.param(dict(positives=[None, None]), r"track\(s\) \[0, 1\] .* wire positive_1, positive_2", id="no-identity"),
    pytest.param(dict(positives=[identity(0.25), [[c, {**v, "mask": torch.ones(1, 64, 128)}] for c, v in identity(-0.5)]]),
                 r"^VCD Face Refine Tracks: positive_2 carries a conditioning mask .*; VCD Face Refine Tracks samples "
                 r"each face's crop window, where it would land stretched", id="regional-positive"),
    pytest.param(dict(masks="frames"), r"track_masks \(track 1\) has 2 frames but image has 4", id="mask-frames"),
    pytest.param(dict(masks="size"), r"track_masks \(track 0\) is 64x32 but the frames are 128x64", id="mask-size"),
    pytest.param(dict(masks="five"), r"5 tracks with faces up to track 4, but at most 4 identities", id="five-tracks"),
    pytest.param(dict(listed={"feather": [5, 6]}), r"VCD Face Refine Tracks: feather got a list of 2 values; wire a single one", id="widget-list"),
    pytest.param(dict(crop_mode="sideways"), r"crop_mode 'sideways' is not one of the choices", id="crop-mode"),
    pytest.param(dict(denoise=0.0), r"denoise must be at least 0.01", id="denoise"),
])
def test_bad_inputs_name_the_input(refine_tracks, change, match):
    frames, a, b = frames_and_masks(gap=0)
    masks = {"frames": [a, b[:2]], "size": [a[:, :32, :64], b], "five": [a, b, a, b, a], None: [a, b]}[change.pop("masks", None)]
    positives = change.pop("positives", [identity(0.25), identity(-0.5)] + [identity(1.0)] * 2)
    with pytest.raises(ValueError, match=match):
        refine_tracks(frames, masks, positives, **change)


def test_face_tracks_into_refine_tracks_on_the_server(host):
    """The list output of VCD Face Tracks feeds the list input: both faces refined, one sampling call each."""
    clip = two_faces()
    clip[0].save(host.input_dir / "two_faces_refine.webp", save_all=True, append_images=clip[1:], lossless=True)
    prompt = lambda text: {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": text}}  # noqa: E731
    graph = {
        "ckpt": {"class_type": "VCDTestTinyCheckpoint", "inputs": {"seed": 0}},
        "probe": {"class_type": "VCDTestSamplingProbe", "inputs": {"model": ["ckpt", 0], "tag": "tracks", "skip_sampling": False}},
        "clip": {"class_type": "LoadImage", "inputs": {"image": "two_faces_refine.webp"}},
        "tracks": {"class_type": "VCDFaceTracks", "inputs": {"image": ["clip", 0], "detector": "opencv_haar",
                                                              "order": "left_to_right", "track": 0, "min_iou": 0.1,
                                                              "max_missed": 2, "min_frames": 1, "fill_gaps": True}},
        "left": prompt("a photo of a man"), "right": prompt("a photo of a woman"), "negative": prompt(""),
        "refine": {"class_type": "VCDFaceRefineTracks", "inputs": {
            "model": ["probe", 0], "negative": ["negative", 0], "vae": ["ckpt", 2], "image": ["clip", 0],
            "track_masks": ["tracks", 1], "positive_1": ["left", 0], "positive_2": ["right", 0],
            "crop_factor": 3.0, "guide_size": 64, "max_size": 128, "denoise": 0.8, "steps": 2, "cfg": 4.0,
            "sampler_name": "euler", "scheduler": "normal", "seed": 3, "gamma": 0.0, "feather": 5, "crop_mode": "union"}},
        "mask": {"class_type": "MaskToImage", "inputs": {"mask": ["refine", 1]}},
        "save": {"class_type": "VCDTestSaveImageTensor", "inputs": {"images": ["refine", 0], "name": "tracks_refined"}},
        "save_mask": {"class_type": "VCDTestSaveImageTensor", "inputs": {"images": ["mask", 0], "name": "tracks_paste"}},
    }
    result = host.run(graph)
    assert result.ok, result.describe()
    saved = host.output_dir / "vcd_tensors"
    image = safetensors.torch.load_file(str(saved / "tracks_refined.safetensors"))["images"]
    paste = safetensors.torch.load_file(str(saved / "tracks_paste.safetensors"))["images"][..., 0]
    frames = as_tensor(clip)
    outside = paste == 0
    assert torch.equal(image[outside], frames[outside])
    assert paste[:, :, :192].amax() == 1 and paste[:, :, 192:].amax() == 1  # both faces pasted
    records = sorted((host.output_dir / "vcd_probe").glob("tracks-*.safetensors"))
    frames_per_call = [safetensors.safe_open(str(r), "pt").metadata()["record"] for r in records]
    assert len(frames_per_call) == 2 and all(f'"frames": {FRAMES}' in r for r in frames_per_call)
