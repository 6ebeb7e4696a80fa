"""Face VCD and Tiled VCD nodes in-process on the tiny SD1.5 model: masks, tiles, passthrough, bad input."""

import pytest
import skimage.data
import torch


@pytest.fixture(scope="module")
def astronaut_frames():
    photo = torch.from_numpy(skimage.data.astronaut()[:256, 96:352].copy()).float() / 255
    return torch.stack([photo.roll(2 * i, dims=1) for i in range(4)])  # a face drifting right


def tiled_refine(parts, image, **overrides):
    options = dict(tile_size=64, overlap=16, denoise=0.5, gamma=0.1, tile_batch=1, **parts["sampling"])
    options.update(overrides)
    with torch.inference_mode():
        return parts["nodes"].tiled.VCDTiledRefine.execute(
            parts["model"], parts["positive"], parts["negative"], parts["vae"], image, **options).result[0]


def with_alpha(rgb):
    """The same pixels as RGBA, with an alpha that varies (it must not change any result)."""
    return torch.cat([rgb, torch.rand(*rgb.shape[:-1], 1, generator=torch.Generator().manual_seed(9))], dim=-1)


def test_face_nodes_take_grey_and_rgba_frames(parts, astronaut_frames, face_refine):
    frames = astronaut_frames[:2, ::2, ::2].contiguous()  # 128 px
    grey = frames.mean(dim=-1, keepdim=True)
    detect = parts["nodes"].face.VCDFaceDetect.execute
    masks, preview = detect(frames, "opencv_haar").result
    assert masks.sum() > 0 and preview.shape == frames.shape
    assert torch.equal(detect(with_alpha(frames), "opencv_haar").result[0], masks)
    assert torch.equal(detect(grey, "opencv_haar").result[0], detect(grey.expand(-1, -1, -1, 3), "opencv_haar").result[0])
    refined = face_refine(frames, mask=masks)
    for got, want in zip(face_refine(with_alpha(frames), mask=masks), refined):
        assert torch.equal(got, want)
    for got, want in zip(face_refine(grey, mask=masks), face_refine(grey.expand(-1, -1, -1, 3), mask=masks)):
        assert torch.equal(got, want)


def test_tiled_refine_takes_grey_and_rgba_frames(parts):
    frames = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(8))
    grey = frames.mean(dim=-1, keepdim=True)
    assert torch.equal(tiled_refine(parts, with_alpha(frames)), tiled_refine(parts, frames))
    assert torch.equal(tiled_refine(parts, grey), tiled_refine(parts, grey.expand(-1, -1, -1, 3)))


@pytest.mark.parametrize("crop_mode", ["union", "per_frame_smoothed"])
def test_face_refine_changes_only_the_face(face_refine, astronaut_frames, crop_mode):
    image, paste_mask, before, after, _ = face_refine(astronaut_frames, crop_mode=crop_mode)
    assert image.shape == astronaut_frames.shape and paste_mask.shape == astronaut_frames.shape[:3]
    assert before.shape == after.shape and before.shape[1] == before.shape[2] and before.shape[1] % 8 == 0
    outside = paste_mask == 0
    assert torch.equal(image[outside], astronaut_frames[outside])
    assert paste_mask.sum() > 0 and (image - astronaut_frames).abs().amax() > 0.05


def test_a_face_wider_than_its_window_is_pasted_softly_inside_the_window_and_warned(parts, caplog):
    """A wired face mask 120 px wide in 64 px tall frames: the window (64 px, the frame's short side) cannot hold it.
    The paste stays inside the window with a feathered edge there, checked pixel by pixel, and a warning says so."""
    frames = torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(2, 64, 128)
    mask[:, 8:56, 4:124] = 1
    options = dict(crop_factor=3.0, guide_size=64, max_size=128, denoise=0.8, gamma=0.0, feather=5, crop_mode="union",
                   detector="opencv_haar", mask=mask, **parts["sampling"])
    with torch.inference_mode():
        out = parts["nodes"].face.VCDFaceRefine.execute(
            parts["model"], parts["positive"], parts["negative"], parts["vae"], frames, **options)
    image, paste_mask, before, after, _ = out.result
    assert before.shape == after.shape == (2, 64, 64, 3)  # window Box(0, 64, 32, 96), denoised at its own size
    assert paste_mask[:, :, :32].sum() == 0 and paste_mask[:, :, 96:].sum() == 0
    assert torch.all(paste_mask[:, 8:56, 32] == 0.2) and torch.all(paste_mask[:, 8:56, 95] == 0.2)  # soft at the border
    assert torch.all(paste_mask[:, 12:52, 36:92] == 1)
    alpha = paste_mask[:, :, 32:96, None]
    expected = frames.clone()
    expected[:, :, 32:96] = frames[:, :, 32:96] * (1 - alpha) + after * alpha
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)
    assert "outside its crop window in frame(s) [0, 1]" in caplog.text
    assert "outside its crop window" in out.ui.as_dict()["text"][0]


def test_face_refine_without_a_face_returns_frames_unchanged(face_refine, caplog):
    noise = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    image, paste_mask, _, _, _ = face_refine(noise)
    assert torch.equal(image, noise) and paste_mask.sum() == 0
    assert "no face" in caplog.text


def test_noise_mask_keeps_unmasked_latents_identical_through_sampling(parts):
    from vcd.nodes.sampling import SamplingSettings, denoise_clip

    latent = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(4, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    settings = SamplingSettings(denoise=0.8, gamma=0.0, **parts["sampling"])
    with torch.inference_mode():
        out = denoise_clip(parts["model"], parts["positive"], parts["negative"], latent, settings, noise_mask=mask)
    keep = mask.expand_as(latent) == 0
    # Unchanged up to ComfyUI's latent scaling round trip (x * 0.18215 / 0.18215 in float32).
    assert torch.allclose(out[keep], latent[keep], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out[~keep], latent[~keep])


def test_one_tile_covering_the_frame_equals_the_untiled_model(parts):
    from vcd.nodes.sampling import SamplingSettings, denoise_clip
    from vcd.nodes.tiled import tiled_model

    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    settings = SamplingSettings(denoise=0.5, gamma=0.1, **parts["sampling"])
    with torch.inference_mode():
        plain = denoise_clip(parts["model"], parts["positive"], parts["negative"], latent, settings)
        tiled = denoise_clip(tiled_model(parts["model"], 64, 16, 1), parts["positive"], parts["negative"], latent, settings)
    assert torch.equal(plain, tiled)


def test_tiled_refine_runs_in_tiles_and_tile_batch_does_not_change_the_result(parts):
    frames = torch.rand(3, 128, 96, 3, generator=torch.Generator().manual_seed(4))
    one = tiled_refine(parts, frames)
    two = tiled_refine(parts, frames, tile_batch=2)
    assert one.shape == frames.shape and torch.isfinite(one).all()
    assert torch.allclose(one, two, atol=1e-4)


@pytest.mark.parametrize("height, width", [(7, 7), (60, 100)])
def test_tiled_refine_keeps_frame_sizes_that_are_not_multiples_of_8(parts, height, width):
    """The VAE works in 8 px cells: the frames are padded by replication, refined, and cropped back to their size."""
    frames = torch.rand(2, height, width, 3, generator=torch.Generator().manual_seed(6))
    out = tiled_refine(parts, frames)
    assert out.shape == frames.shape and torch.isfinite(out).all()
    rows, cols = torch.arange(-(-height // 8) * 8).clamp(max=height - 1), torch.arange(-(-width // 8) * 8).clamp(max=width - 1)
    padded = frames[:, rows][:, :, cols]  # edge pixels repeated
    assert torch.equal(tiled_refine(parts, padded)[:, :height, :width], out)


@pytest.mark.parametrize("tile_size, overlap", [(64, 32), (64, 56), (512, 256)])
def test_tiled_refine_takes_any_overlap_its_widget_allows(parts, tile_size, overlap):
    """Overlaps of half a tile or more (ComfyUI's tiled VAE divided by zero on them) refine like any other."""
    frames = torch.rand(2, 128, 72, 3, generator=torch.Generator().manual_seed(8))
    out = tiled_refine(parts, frames, tile_size=tile_size, overlap=overlap)
    assert out.shape == frames.shape and torch.isfinite(out).all()


def test_tiling_wrapper_composes_on_a_clone(parts):
    from comfy.patcher_extension import WrappersMP
    from vcd.nodes.tiled import WRAPPER_KEY, tiled_model

    patched = tiled_model(parts["model"], 64, 16, 1)
    assert list(patched.wrappers[WrappersMP.CALC_COND_BATCH]) == [WRAPPER_KEY]
    assert WRAPPER_KEY not in parts["model"].wrappers.get(WrappersMP.CALC_COND_BATCH, {})
    again = tiled_model(patched, 64, 16, 1)
    assert len(again.wrappers[WrappersMP.CALC_COND_BATCH][WRAPPER_KEY]) == 1


@pytest.mark.parametrize("overrides,match", [
    (dict(mask=torch.ones(2, 256, 256)), "mask has 2 frames but image has 4"),
    (dict(mask=torch.ones(4, 128, 128)), "mask is 128x128 but the frames are 256x256"),
    (dict(denoise=0.0), "denoise"),
    (dict(denoise=1.5), "denoise"),
    (dict(crop_mode="sideways"), "crop_mode"),
    (dict(detector="nope"), "detector"),
])
def test_face_refine_bad_inputs(face_refine, astronaut_frames, overrides, match):
    with pytest.raises(ValueError, match=match):
        face_refine(astronaut_frames, **overrides)


@pytest.mark.parametrize("overrides,match", [
    (dict(tile_size=32), "tile_size"),
    (dict(tile_size=64, overlap=64), "overlap"),
    (dict(denoise=0.0), "denoise"),
    (dict(denoise=1.01), "denoise"),
])
def test_tiled_refine_bad_inputs(parts, overrides, match):
    with pytest.raises(ValueError, match=match):
        tiled_refine(parts, torch.rand(2, 64, 64, 3), **overrides)


def _set_mask(conditioning, mask, set_cond_area="default", strength=1.0):
    import nodes as core_nodes  # ComfyUI's own Conditioning (Set Mask)
    return core_nodes.ConditioningSetMask().append(conditioning, mask, set_cond_area, strength)[0]


@pytest.mark.parametrize("tile_batch", [1, 2])
def test_tiled_refine_takes_conditioning_masks(parts, tile_batch):
    """ConditioningSetMask's whole-frame mask is cut to each tile: a mask of ones refines exactly as no mask
    (before issue 10 bug 4 was fixed, the whole-frame mask met a tile-sized latent and failed inside ComfyUI)."""
    frames = torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(8))
    ones = {**parts, "positive": _set_mask(parts["positive"], torch.ones(1, 64, 128))}
    assert torch.equal(tiled_refine(ones, frames, tile_batch=tile_batch), tiled_refine(parts, frames, tile_batch=tile_batch))


@pytest.mark.parametrize("tile_batch", [1, 2])
def test_each_tile_call_gets_the_conditioning_masks_cut_to_its_tiles(parts, tile_batch):
    """The tiling wrapper hands the rest of the chain each cond's mask cut to the tiles of that call, frame by frame."""
    frames, mask = 2, torch.arange(2 * 8 * 16, dtype=torch.float32).reshape(2, 8, 16)
    seen = []

    def executor(model, conds, x, timestep, model_options):
        seen.append((conds[0][0]["mask"], "mask" in conds[1][0]))
        return [x, x]

    wrapper = parts["nodes"].tiled.tiling_wrapper(8, 0, tile_batch)
    x = torch.zeros(frames, 4, 8, 16)
    wrapper(executor, None, [[{"mask": mask}], [{}]], x, torch.ones(frames), {})
    got = torch.cat([cut for cut, _ in seen])
    assert torch.equal(got, torch.cat([mask[:, :, :8], mask[:, :, 8:]])) and not any(flag for _, flag in seen)
    assert len(seen) == 2 // tile_batch
    seen.clear()  # at CFG 1 ComfyUI passes no uncond group at all
    wrapper(lambda model, conds, x, *_: seen.append(conds[1]) or [x, x], None, [[{"mask": mask}], None], x, torch.ones(frames), {})
    assert seen == [None] * (2 // tile_batch)


def _set_area(conditioning):
    import nodes as core_nodes  # ComfyUI's own Conditioning (Set Area)
    return core_nodes.ConditioningSetArea().append(conditioning, 32, 32, 0, 0, 1.0)[0]


def _with_control(conditioning):
    """What Apply ControlNet leaves on each entry: a ``control`` object holding the whole-frame hint."""
    return [[c, {**values, "control": object(), "control_apply_to_uncond": False}] for c, values in conditioning]


WHOLE_FRAME = {
    "bounded mask": (lambda c: _set_mask(c, torch.ones(1, 64, 64), set_cond_area="mask bounds"),
                     r"a mask with set_area_to_bounds \(Conditioning \(Set Mask\), set_cond_area 'mask bounds'\)"),
    "area": (_set_area, r"area conditioning \(Conditioning \(Set Area\)\)"),
    "controlnet": (_with_control, r"a ControlNet or T2I-Adapter \(Apply ControlNet\)"),
    "mask": (lambda c: _set_mask(c, torch.ones(1, 64, 64)), r"a conditioning mask \(Conditioning \(Set Mask\), VCD Regional Identity\)"),
}


@pytest.mark.parametrize("kind", ["bounded mask", "area", "controlnet"])
def test_tiled_refine_refuses_whole_frame_conditioning_naming_the_input(parts, kind):
    change, what = WHOLE_FRAME[kind]
    frames = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(8))
    with pytest.raises(ValueError, match=rf"^VCD Tiled Refine: negative carries {what}, laid out on the whole frame; "
                                         r"VCD Tiled Refine samples one tile at a time, where it would land stretched\. "
                                         r"Connect negative without it .* set_cond_area 'default' works here"):
        tiled_refine({**parts, "negative": change(parts["negative"])}, frames)


@pytest.mark.parametrize("kind", ["bounded mask", "area", "controlnet", "mask"])
def test_face_refine_refuses_whole_frame_conditioning_naming_the_input(parts, face_refine, astronaut_frames, kind):
    change, what = WHOLE_FRAME[kind]
    positive = parts["positive"]
    parts["positive"] = change(positive)
    try:
        with pytest.raises(ValueError, match=rf"^VCD Face Refine: positive carries {what}, laid out on the whole "
                                             r"frame; VCD Face Refine samples the face's crop window, where it would "
                                             r"land stretched\. Connect positive without it \(e\.g\. straight from "
                                             r"the text encode\); use it in the T2V sampler\.$"):
            face_refine(astronaut_frames)
    finally:
        parts["positive"] = positive
