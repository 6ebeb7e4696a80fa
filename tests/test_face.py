"""Face VCD geometry (vcd_core.face) and the default face detector on a real photograph."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from vcd_core import face, face_detect
from vcd_core.geometry import Box

pytestmark = pytest.mark.host_independent  # no ComfyUI here: scripts/test.sh runs it on its first host only


def box_mask(frames, height, width, boxes):
    masks = torch.zeros(frames, height, width)
    for i, b in enumerate(boxes):
        if b is not None:
            masks[i, b.y0:b.y1, b.x0:b.x1] = 1
    return masks


def test_union_window_contains_every_box_scaled_by_crop_factor():
    boxes = [Box(40, 60, 50, 66), Box(44, 66, 58, 70), None, Box(38, 58, 46, 62)]
    masks = box_mask(4, 200, 240, boxes)
    window = face.union_window(masks, crop_factor=3.0)
    union = Box(38, 66, 46, 70)
    assert window.height == window.width and window.height % 8 == 0
    assert window.height >= 3 * max(union.height, union.width)
    # The union box enlarged by crop_factor about its centre lies inside the window (no clamping here).
    cy, cx, half = (union.y0 + union.y1) / 2, (union.x0 + union.x1) / 2, 1.5 * max(union.height, union.width)
    assert window.contains(Box(int(cy - half), int(cy + half), int(cx - half), int(cx + half)))
    assert all(window.contains(b) for b in boxes if b is not None)
    assert 0 <= window.y0 and window.y1 <= 200 and 0 <= window.x0 and window.x1 <= 240


def test_window_clamps_to_frame_and_never_exceeds_it():
    masks = box_mask(1, 64, 96, [Box(0, 40, 80, 96)])
    window = face.union_window(masks, crop_factor=3.0)
    assert window.height == 64 and window.y0 == 0 and window.x1 <= 96 and window.x0 >= 0


def test_no_face_gives_no_window():
    assert face.union_window(torch.zeros(3, 32, 32), 3.0) is None
    assert face.per_frame_windows(torch.zeros(3, 32, 32), 3.0) is None


def test_per_frame_windows_follow_the_face_smoothly_with_one_size():
    boxes = [Box(20, 36, 10 + 8 * i, 26 + 8 * i) for i in range(8)]
    windows = face.per_frame_windows(box_mask(8, 128, 200, boxes), 2.0, smoothing=1)
    assert len({w.height for w in windows}) == 1
    centers = [(w.x0 + w.x1) / 2 for w in windows]
    assert centers == sorted(centers) and centers[-1] > centers[0]


def test_paste_of_unchanged_crop_is_identity_per_pixel():
    image = torch.from_numpy(skimage.data.astronaut()[:256, :256].copy()).float()[None].repeat(2, 1, 1, 1) / 255
    window = Box(40, 136, 80, 176)
    alpha = face.feather_mask(box_mask(2, 256, 256, [Box(50, 120, 90, 160)] * 2), 5)
    same_size = face.paste_clip(image, face.crop_clip(image, [window] * 2, 96), [window] * 2, alpha)
    torch.testing.assert_close(same_size, image, rtol=0, atol=1e-6)  # no resize: every pixel is kept
    resized = face.paste_clip(image, face.crop_clip(image, [window] * 2, 256), [window] * 2, alpha)  # 96 -> 256 -> 96 px
    assert torch.equal(resized[alpha == 0], image[alpha == 0])
    assert (resized - image).abs().amax() < 0.1 and (resized - image)[alpha == 1].abs().mean() < 0.01


def test_paste_blends_every_pixel_by_its_alpha():
    image, patch = torch.zeros(1, 32, 48, 3), torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    window = Box(8, 24, 20, 36)
    alpha = torch.rand(1, 32, 48, generator=torch.Generator().manual_seed(1))
    out = face.paste_clip(image, patch, [window], alpha)
    expected = torch.zeros(1, 32, 48, 3)
    expected[0, 8:24, 20:36] = patch[0] * alpha[0, 8:24, 20:36, None]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-7)


def chessboard_depth(mask: torch.Tensor) -> torch.Tensor:
    """Each pixel's chessboard distance to the nearest pixel outside the mask (1 on its edge), by scipy."""
    from scipy import ndimage

    return torch.from_numpy(ndimage.distance_transform_cdt(mask.numpy() > 0.5, metric="chessboard")).float()


@pytest.mark.parametrize("box, feather", [(Box(10, 50, 10, 50), 5), (Box(20, 26, 8, 56), 5), (Box(30, 31, 0, 64), 4),
                                          (Box(0, 20, 0, 9), 6)])
def test_feather_ramps_over_the_edge_and_always_reaches_one(box, feather):
    """alpha = min(depth, f) / f with f = min(feather, deepest pixel): a face narrower than 2 x feather still gets 1."""
    mask = box_mask(1, 64, 64, [box])
    depth = chessboard_depth(mask[0])
    ramp = min(feather, int(depth.max()))
    expected = depth.clamp(max=ramp) / ramp
    torch.testing.assert_close(face.feather_mask(mask, feather)[0], expected, rtol=0, atol=1e-6)
    assert face.feather_mask(mask, feather).max() == 1


def test_a_face_outside_its_window_is_cut_to_the_window_then_feathered():
    """Face wider than its window: the paste mask stops inside the window with a soft edge, never a hard one."""
    masks = box_mask(3, 64, 96, [Box(10, 50, 10, 80), Box(20, 40, 40, 60), None])
    windows = [Box(0, 48, 24, 72)] * 3  # frame 0's face reaches past both sides and the bottom
    inside, leaving = face.cut_to_windows(masks, windows)
    assert leaving == [0]
    assert torch.equal(inside[0], box_mask(1, 64, 96, [Box(10, 48, 24, 72)])[0]) and torch.equal(inside[1:], masks[1:])
    alpha = face.feather_mask(inside, 4)[0]
    assert alpha[:, :24].sum() == 0 and alpha[:, 72:].sum() == 0 and alpha[48:].sum() == 0
    assert alpha[30, 24] == alpha[30, 71] == alpha[47, 50] == 0.25 and alpha[30, 48] == 1  # soft at the window border


def test_feather_is_monotone_at_the_edge():
    mask = box_mask(1, 64, 64, [Box(10, 50, 10, 50)])
    soft = face.feather_mask(mask, 5)[0]
    row = soft[30, :32]
    assert torch.all(row[1:] >= row[:-1]) and row[0] == 0 and soft[30, 30] == 1
    assert soft[30, 10] > 0 and soft[30, 10] < 1
    assert torch.equal(face.feather_mask(mask, 0), mask)


def test_latent_noise_mask_is_zero_outside_the_face():
    masks = box_mask(2, 64, 64, [Box(16, 32, 16, 32)] * 2)
    noise_mask = face.latent_noise_mask(masks, [Box(0, 64, 0, 64)] * 2, 8)
    assert noise_mask.shape == (2, 1, 8, 8)
    assert noise_mask[:, :, 2:4, 2:4].min() == 1 and noise_mask.sum() == 2 * 4


def test_crop_size_guides_small_crops_up_and_caps_large():
    assert face.crop_size(96, 512, 1024) == 512
    assert face.crop_size(800, 512, 1024) == 800
    assert face.crop_size(2000, 512, 1024) == 1024


def astronaut(side: int = 512) -> torch.Tensor:
    """The 512 px photograph as one ``[1, side, side, 3]`` frame (area-downscaled when smaller)."""
    image = torch.from_numpy(skimage.data.astronaut()).float()[None] / 255
    return image if side == 512 else F.interpolate(image.movedim(-1, 1), size=(side, side), mode="area").movedim(1, -1)


def test_default_detector_finds_the_astronauts_face_and_none_in_noise():
    image = astronaut()
    # Her face: rows 66-161, columns 177-272 of the 512 px photograph (OpenCV 4's cascade; golden box).
    assert face_detect.haar_faces(image) == [[Box(66, 161, 177, 272)]]
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.random((3, 256, 256, 3))).float()
    assert face_detect.haar_faces(noise) == [[], [], []]
    crop = image[:, :256, 100:356]
    masks = face_detect.boxes_to_masks(face_detect.haar_faces(torch.cat([crop, crop * 0])), 256, 256)
    assert masks.shape == (2, 256, 256) and masks[0].sum() > 0 and masks[1].sum() == 0


def test_largest_face_is_kept_whatever_the_detector_order():
    """YOLO lists faces by confidence: a small confident face first must not win over the large one."""
    small, large, wide = Box(0, 10, 0, 10), Box(20, 60, 20, 60), Box(0, 30, 40, 100)
    assert face_detect.largest_box([small, large, wide]) == wide  # 30 x 60 beats 40 x 40
    assert face_detect.largest_box([small, large]) == large and face_detect.largest_box([]) is None
    masks = face_detect.boxes_to_masks([[small, large], [], [large, small]], 64, 64, largest_only=True)
    expected = torch.zeros(64, 64)
    expected[20:60, 20:60] = 1
    assert torch.equal(masks[0], expected) and torch.equal(masks[2], expected) and masks[1].sum() == 0
    both = face_detect.boxes_to_masks([[small, large]], 64, 64)
    assert both[0, :10, :10].min() == 1 and both[0].sum() == 100 + 1600


def test_window_preview_outlines_each_frames_window_and_face_box():
    frames = torch.full((2, 64, 64, 3), 0.5)
    masks = box_mask(2, 64, 64, [Box(20, 30, 20, 30), None])
    windows = [Box(8, 40, 8, 40), Box(16, 48, 24, 56)]
    preview = face.window_preview(frames, windows, masks)
    yellow, red = torch.tensor(face.WINDOW_COLOUR), torch.tensor(face.FACE_COLOUR)
    for i, w in enumerate(windows):
        expected = frames[i].clone()
        if i == 0:
            expected[20:30, 20:30], expected[21:29, 21:29] = red, 0.5  # the face box, 1 px at 64 px
        expected[w.y0:w.y1, w.x0:w.x1], expected[w.y0 + 1:w.y1 - 1, w.x0 + 1:w.x1 - 1] = yellow, expected[w.y0 + 1:w.y1 - 1, w.x0 + 1:w.x1 - 1].clone()
        assert torch.equal(preview[i], expected), i
    assert frames.unique().tolist() == [0.5]


def test_crop_window_by_hand():
    """Side = ceil(longest side x crop_factor / 8) x 8, centred on the face, then clamped into the frame."""
    assert face.crop_window(Box(40, 60, 50, 66), 3.0, 200, 240) == Box(18, 82, 26, 90)  # side 64, centre (50, 58)
    assert face.crop_window(Box(0, 40, 80, 96), 3.0, 64, 96) == Box(0, 64, 32, 96)  # 120 > 64: the frame's short side
    assert face.crop_window(Box(0, 40, 80, 96), 3.0, 68, 96) == Box(0, 64, 32, 96)  # ... rounded down to a multiple of 8
    assert face.crop_window(Box(1, 3, 1, 3), 3.0, 5, 7) == Box(0, 5, 0, 5)  # a frame under 8 px: its short side
    assert face.crop_window(Box(50, 60, 0, 10), 3.0, 64, 64) == Box(32, 64, 0, 32)  # pushed up from the bottom
    assert face.crop_window(Box(30, 31, 30, 31), 1.0, 64, 64) == Box(26, 34, 26, 34)  # at least one multiple
    assert face.crop_window(Box(30, 31, 30, 31), 1.0, 64, 64, multiple=4) == Box(28, 32, 28, 32)


def test_per_frame_windows_by_hand():
    """Centres averaged over 2 x smoothing + 1 frames (fewer at the ends); one side for all, from the largest face;
    a frame without a face takes the nearest frame's."""
    boxes = [Box(20, 36, 10 + 8 * i, 26 + 8 * i) for i in range(4)]  # 16 px faces, centres x 18, 26, 34, 42
    windows = face.per_frame_windows(box_mask(4, 128, 200, boxes), 2.0, smoothing=1)
    assert windows == [Box(12, 44, 6, 38), Box(12, 44, 10, 42), Box(12, 44, 18, 50), Box(12, 44, 22, 54)]
    steady = face.per_frame_windows(box_mask(4, 128, 200, boxes), 2.0, smoothing=0)
    assert [w.x0 for w in steady] == [2, 10, 18, 26]
    default = face.per_frame_windows(box_mask(4, 128, 200, boxes), 2.0)  # smoothing 2, multiple 8
    assert default == [Box(12, 44, 10, 42), Box(12, 44, 14, 46), Box(12, 44, 14, 46), Box(12, 44, 18, 50)]
    a, b = Box(20, 36, 10, 26), Box(20, 44, 100, 124)  # b is 24 px: side ceil(48 / 8) x 8 = 48 for every frame
    filled = face.per_frame_windows(box_mask(4, 128, 200, [a, None, None, b]), 2.0, smoothing=0)
    assert filled == [Box(4, 52, 0, 48), Box(4, 52, 0, 48), Box(8, 56, 88, 136), Box(8, 56, 88, 136)]


def test_mask_box_counts_pixels_over_one_half_in_any_frame():
    masks = torch.zeros(2, 16, 16)
    masks[0, 2:4, 3:5] = 0.6
    masks[1, 10, 12] = 1.0
    masks[1, 0, 0] = 0.5  # not over one half
    assert face.mask_box(masks) == Box(2, 11, 3, 13)
    assert face.mask_box(masks[0]) == Box(2, 4, 3, 5) and face.mask_box(masks[:, :1, :1]) is None


def test_crop_size_is_a_multiple_of_8_between_guide_and_max():
    assert face.crop_size(100, 64, 1024) == 96  # never resized down to the guide; rounded down to a multiple
    assert face.crop_size(300, 64, 250) == 248 and face.crop_size(5, 4, 1024) == 8
    assert face.crop_size(100, 64, 1024, multiple=32) == 96 and face.crop_size(10, 4, 1024, multiple=16) == 16


def test_crop_clip_crops_each_frame_to_its_window_and_resizes_within_range():
    image = torch.rand(2, 32, 40, 3, generator=torch.Generator().manual_seed(3))
    windows = [Box(0, 16, 0, 16), Box(8, 24, 20, 36)]
    clip = face.crop_clip(image, windows, 16)
    assert torch.equal(clip[0], image[0, :16, :16]) and torch.equal(clip[1], image[1, 8:24, 20:36])
    chess = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    board = chess.float()[None, ..., None].expand(1, 16, 16, 3)
    up = face.crop_clip(board, [Box(0, 16, 0, 16)], 24)  # bicubic overshoots; the result stays in [0, 1]
    assert up.shape == (1, 24, 24, 3) and up.min() == 0 and up.max() == 1 and 0 < up.mean() < 1


def test_crops_are_resized_with_antialiasing_and_pixel_centres_kept():
    """Down: a 1-px chessboard averages to grey (no aliasing). Up 2x: each pixel's two halves average back to it
    (half-pixel centres, not corner-aligned), here on the inner part of a linear ramp."""
    chess = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float()[None, ..., None].expand(1, 16, 16, 3)
    down = face.crop_clip(chess, [Box(0, 16, 0, 16)], 5)  # without antialiasing: up to 0.45 off grey
    assert (down - 0.5).abs().amax() < 0.02
    ramp = (torch.arange(8.0) / 7)[None, None, :, None].expand(1, 8, 8, 3)
    up = face.crop_clip(ramp, [Box(0, 8, 0, 8)], 16)[0, 8, :, 0]
    torch.testing.assert_close((up[4:12:2] + up[5:12:2]) / 2, torch.arange(2.0, 6.0) / 7, rtol=0, atol=1e-5)


def test_latent_noise_mask_is_clamped_to_zero_one():
    masks = torch.full((1, 16, 16), 2.0)
    masks[0, :8] = -1.0
    noise_mask = face.latent_noise_mask(masks, [Box(0, 16, 0, 16)], 2)
    assert noise_mask.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_latent_noise_mask_is_the_face_area_share_of_each_latent_cell():
    masks = box_mask(2, 64, 64, [Box(14, 32, 16, 32), Box(40, 48, 40, 42)])
    noise_mask = face.latent_noise_mask(masks, [Box(0, 32, 8, 40), Box(32, 64, 32, 64)], 8)  # 4 px per latent cell
    expected = torch.zeros(2, 1, 8, 8)
    expected[0, 0, 3, 2:6], expected[0, 0, 4:8, 2:6] = 0.5, 1  # crop rows 14-32, columns 8-24: half of row 3 (12-16)
    expected[1, 0, 2:4, 2] = 0.5  # crop rows 8-16, columns 8-10: half of column 2 (8-12)
    torch.testing.assert_close(noise_mask, expected, rtol=0, atol=1e-6)


def test_paste_resizes_the_clip_to_each_window():
    """A 16 px clip pasted into a 32 px window: the patch is the clip resized to 32 px, blended by alpha."""
    image = torch.zeros(1, 40, 40, 3, dtype=torch.float64)
    clip = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    window, alpha = Box(4, 36, 8, 40), torch.full((1, 40, 40), 0.5)
    out = face.paste_clip(image, clip, [window], alpha)
    patch = face.crop_clip(clip, [Box(0, 16, 0, 16)], 32)[0].double()
    assert out.dtype == torch.float64 and out[0, :4].abs().sum() == 0 and out[0, :, :8].abs().sum() == 0
    torch.testing.assert_close(out[0, 4:36, 8:40], patch * 0.5, rtol=0, atol=1e-7)


def test_cut_to_windows_names_only_frames_whose_face_leaves():
    masks = box_mask(2, 32, 32, [Box(0, 8, 0, 8), Box(4, 12, 4, 12)])
    masks[1, 20, 20] = 0.5  # not part of the face (a mask pixel counts over one half)
    inside, leaving = face.cut_to_windows(masks, [Box(0, 16, 0, 16), Box(0, 16, 0, 16)])
    assert leaving == [] and torch.equal(inside[0], masks[0]) and inside[1, 20, 20] == 0
    _, leaving = face.cut_to_windows(masks, [Box(0, 16, 0, 16), Box(8, 24, 8, 24)])
    assert leaving == [1]


def test_detector_input_is_clamped_scaled_and_truncated_to_uint8_rgb():
    frame = torch.tensor([[[-0.5, 0.0, 0.5, 0.3], [1.0, 1.5, 0.999, 0.9]]])  # RGBA: alpha is dropped
    array = face_detect.uint8_rgb(frame)
    assert array.dtype == np.uint8 and array.tolist() == [[[0, 0, 127], [255, 255, 254]]]


def test_haar_sensitivity_smallest_face_found():
    """Scale factor 1.1 and 5 neighbours: a 26 px face (the photograph at 128 px) is found, at 120 px it is not."""
    assert face_detect.haar_faces(astronaut(128)) == [[Box(16, 42, 43, 69)]] and face_detect.haar_faces(astronaut(120)) == [[]]


def test_haar_minimum_face_is_a_fraction_of_the_shorter_side():
    """min_size_fraction of the shorter side: on a 512 x 1024 frame, 0.2 (102 px) keeps the ~110 px face, 0.25 does not."""
    wide = torch.full((1, 512, 1024, 3), 0.5)
    wide[:, :, :512] = astronaut()
    [[found]] = face_detect.haar_faces(wide, min_size_fraction=0.2)
    assert found.width >= 102 and Box(40, 190, 150, 300).contains(found)
    assert face_detect.haar_faces(wide, min_size_fraction=0.25) == [[]]


def test_haar_lists_the_largest_face_first():
    """Two faces, the small one where OpenCV lists it first (top left): the large one comes first."""
    image = astronaut()[:, 40:200, 150:310]
    canvas = torch.full((1, 512, 768, 3), 0.5)
    canvas[:, 300:460, 500:660] = image
    canvas[:, 20:100, 20:100] = F.interpolate(image.movedim(-1, 1), size=(80, 80), mode="area").movedim(1, -1)
    assert face_detect.haar_faces(canvas) == [[Box(325, 422, 526, 623), Box(31, 82, 32, 83)]]


@pytest.mark.parametrize("cv2_module, message", [
    (None, r"^the default face detector needs OpenCV: pip install 'opencv-python-headless<5'$"),
    (SimpleNamespace(__version__="5.0.0", data=object()), r"^OpenCV 5\.0\.0 ships no Haar cascades \(OpenCV 5 dropped them\): "
                                                          r"pip install 'opencv-python-headless<5', or wire a face MASK from another node\.$"),
    (SimpleNamespace(__version__="5.0.1", CascadeClassifier=object), r"^OpenCV 5\.0\.1 ships no Haar cascades"),
])
def test_haar_without_a_usable_opencv_says_what_to_install(monkeypatch, cv2_module, message):
    monkeypatch.setitem(sys.modules, "cv2", cv2_module)  # None: "import cv2" raises ImportError
    with pytest.raises(RuntimeError, match=message):
        face_detect.haar_faces(torch.zeros(1, 8, 8, 3))


class FakeYOLO:
    """Ultralytics' interface as yolo_faces uses it (``YOLO(path).predict(bgr_array, conf=...)[0].boxes.xyxy``):
    each frame's scored boxes are given up front and kept above ``conf``, as YOLO does; a frame without boxes gets
    ``boxes None``. It records the path and the arrays it was given."""

    scored = [[(0.9, (4.0, 2.0, 20.0, 12.0)), (0.3, (0.0, 0.0, 30.0, 30.0)), (0.5, (30.0, 20.0, 40.0, 31.9))], []]
    seen: list = []

    def __init__(self, path: str):
        self.path, self.frame = path, 0
        FakeYOLO.seen = [path]

    def predict(self, array: np.ndarray, conf: float, verbose: bool):
        FakeYOLO.seen.append(array.copy())
        kept = [box for score, box in self.scored[self.frame] if score >= conf]
        self.frame += 1
        boxes = SimpleNamespace(xyxy=torch.tensor(kept).reshape(-1, 4)) if kept else None
        return [SimpleNamespace(boxes=boxes)]


def test_yolo_boxes_become_pixel_boxes_from_bgr_frames(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", SimpleNamespace(YOLO=FakeYOLO))
    frames = torch.rand(2, 32, 48, 3, generator=torch.Generator().manual_seed(0))
    found = face_detect.yolo_faces(frames, "models/ultralytics/bbox/face.pt")
    # xyxy (x0, y0, x1, y1) -> Box(y0, y1, x0, x1), truncated; the 0.3 box is under the default confidence 0.35.
    assert found == [[Box(2, 12, 4, 20), Box(20, 31, 30, 40)], []]
    path, *arrays = FakeYOLO.seen
    assert path == "models/ultralytics/bbox/face.pt"
    for array, frame in zip(arrays, frames):
        assert np.array_equal(array, face_detect.uint8_rgb(frame)[..., ::-1])  # BGR, as cv2.imread gives
    assert face_detect.yolo_faces(frames, "face.pt", confidence=0.95) == [[], []]


def test_yolo_without_ultralytics_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(RuntimeError, match=r"^YOLO face models need the optional extra: pip install ultralytics$"):
        face_detect.yolo_faces(torch.zeros(1, 8, 8, 3), "face.pt")


def test_union_window_reads_height_and_width_and_its_multiple():
    masks = box_mask(2, 64, 96, [Box(10, 30, 70, 80), None])
    assert face.union_window(masks, 1.0, multiple=16) == Box(4, 36, 59, 91)  # side ceil(20 / 16) x 16 = 32
    assert face.union_window(masks, 3.0) == Box(0, 64, 32, 96)  # side 64 (the height), pushed left inside the width


def test_feather_ramps_each_frame_by_its_own_face_and_ignores_half_pixels():
    """A large face in one frame must not lengthen a small face's ramp in another: both reach 1."""
    masks = box_mask(2, 64, 64, [Box(10, 50, 10, 50), Box(30, 33, 30, 33)])
    masks[1, 0, :] = 0.5  # not part of the face
    soft = face.feather_mask(masks, 5)
    assert soft[0].max() == 1 and soft[1].max() == 1 and soft[1, 31, 31] == 1 and soft[1, 30, 30] == 0.5
    assert soft[1, 0].sum() == 0


def test_clip_windows_by_crop_mode():
    masks = box_mask(3, 64, 128, [Box(20, 36, 10, 26), None, Box(20, 36, 60, 76)])
    assert face.clip_windows(masks, 2.0, "union") == [face.union_window(masks, 2.0)] * 3
    assert face.clip_windows(masks, 2.0, "per_frame_smoothed") == face.per_frame_windows(masks, 2.0)
    assert face.clip_windows(torch.zeros(2, 64, 64), 2.0, "union") is None
    with pytest.raises(ValueError, match=r"crop_mode must be one of \['union', 'per_frame_smoothed'\] \(got 'x'\)"):
        face.clip_windows(masks, 2.0, "x")


def test_exclusive_masks_clear_every_other_face_and_keep_soft_values():
    a = torch.zeros(1, 1, 8)
    a[..., 0:5] = torch.tensor([0.25, 0.75, 1.0, 1.0, 1.0])
    b, c = torch.zeros(1, 1, 8), torch.zeros(1, 1, 8)
    b[..., 4:7] = 1.0
    c[..., 6] = 0.4  # under 0.5: not a face pixel, clears nothing
    out = face.exclusive_masks(torch.stack([a, b, c]))
    assert out[0, 0, 0].tolist() == [0.25, 0.75, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert out[1, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert out[2, 0, 0].tolist() == [0.0] * 8  # 0.4 at column 6, where b is a face


@pytest.mark.parametrize("mask, match", [
    (torch.ones(2, 32, 48), r"^mask has 2 frames but image has 3: give one mask per frame \(or one for all\)\.$"),
    (torch.ones(3, 48, 32), r"^mask is 32x48 but the frames are 48x32: resize the mask to the frames\.$"),
    (torch.ones(3, 1, 32, 48), r"^mask has shape \(3, 1, 32, 48\): give a MASK batch \[frames, height, width\] \(or "
                               r"one \[height, width\] mask for all frames\)\.$"),
    (torch.ones(32, 48).index_put_((torch.tensor([3]), torch.tensor([5])), torch.tensor(float("nan"))),
     r"^mask holds NaN or infinite values: check the node that made it \(a mask is 0 to 1\)\.$"),
])
def test_masks_for_frames_names_the_input_and_the_fix(mask, match):
    with pytest.raises(ValueError, match=match):
        face.masks_for_frames(mask, torch.zeros(3, 32, 48, 3))
    with pytest.raises(ValueError, match=match.replace("^mask", "^track_masks")):
        face.masks_for_frames(mask, torch.zeros(3, 32, 48, 3), "track_masks")


@pytest.mark.parametrize("shape", [(32, 48), (1, 32, 48), (3, 32, 48)])
def test_masks_for_frames_gives_one_float_mask_per_frame(shape):
    mask = (torch.rand(shape) > 0.5)
    out = face.masks_for_frames(mask, torch.zeros(3, 32, 48, 3))
    assert out.shape == (3, 32, 48) and out.dtype == torch.float32
    assert torch.equal(out, mask.float().expand(3, 32, 48))


def test_plan_crops_windows_the_masks_and_cuts_the_paste_mask():
    masks = box_mask(3, 64, 96, [Box(20, 36, 10, 26), None, Box(24, 40, 70, 86)])
    plan = face.plan_crops(masks, 2.0, "union", guide_size=72, max_size=256)
    assert plan.windows == face.clip_windows(masks, 2.0, "union")
    assert plan.size == face.crop_size(plan.windows[0].height, 72, 256) == 72
    assert torch.equal(plan.inside, face.cut_to_windows(masks, plan.windows)[0])
    assert plan.leaving == face.cut_to_windows(masks, plan.windows)[1] != []  # the union is wider than the frame
    paste = masks * 0.5
    assert torch.equal(face.plan_crops(masks, 2.0, "union", 72, 256, paste=paste).inside,
                       face.cut_to_windows(paste, plan.windows)[0])
    assert face.plan_crops(torch.zeros(3, 64, 96), 2.0, "union", 72, 256) is None
    one = face.plan_crops(masks[:1], 2.0, "union", guide_size=8, max_size=256)  # a single frame
    assert one.size == one.windows[0].height == 32
    per_frame = face.plan_crops(masks, 2.0, "per_frame_smoothed", 8, 16)
    assert per_frame.windows == face.per_frame_windows(masks, 2.0) and per_frame.size == 16


def test_refine_clip_denoises_the_crop_clip_once_and_pastes_it_feathered():
    images = torch.rand(2, 64, 64, 3)
    masks = box_mask(2, 64, 64, [Box(24, 40, 24, 40), Box(26, 42, 22, 38)])
    plan = face.plan_crops(masks, 2.0, "union", guide_size=48, max_size=64)
    calls = []

    def denoise(crops, noise_mask):
        calls.append((crops, noise_mask(6)))
        return 1 - crops

    refined = face.refine_clip(images, plan, 3, denoise)
    (crops, noise_mask), = calls
    assert torch.equal(crops, face.crop_clip(images, plan.windows, 48)) and torch.equal(refined.crop_before, crops)
    assert torch.equal(noise_mask, face.latent_noise_mask(plan.inside, plan.windows, 6))
    assert torch.equal(refined.crop_after, 1 - crops)
    assert torch.equal(refined.paste_mask, face.feather_mask(plan.inside, 3))
    assert torch.equal(refined.frames, face.paste_clip(images, 1 - crops, plan.windows, refined.paste_mask))
    onto = torch.zeros_like(images)
    pasted = face.refine_clip(images, plan, 3, denoise, onto=onto).frames
    assert torch.equal(pasted, face.paste_clip(onto, 1 - crops, plan.windows, refined.paste_mask))


def test_outside_message_names_the_frames_and_the_fix():
    assert face.outside_message((0, 3)) == (
        "the face reaches outside its crop window in frame(s) [0, 3]; only the part inside is refined, blended "
        "softly at the window's edge. Raise crop_factor, or use crop_mode 'union' for a moving face (a window never "
        "exceeds the frame's shorter side).")
    assert face.outside_message([2], "track 1's face").startswith("track 1's face reaches outside")
