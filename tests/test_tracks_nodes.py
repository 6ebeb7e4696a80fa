"""VCD Face Tracks and VCD Regional Identity: in-process on two real faces, and Face Tracks on the real server.

(Regional Identity under the real AnimateDiff-Evolved's context windows: tests/test_ade.py.)
"""

import pytest
import safetensors.torch
import torch

from devtools.clips import as_tensor, two_faces

FRAMES = 4  # two_faces' default


def box_columns(mask: torch.Tensor) -> list[tuple[int, int]]:
    """The first and last column of each frame's mask."""
    spans = []
    for frame in mask:
        cols = frame.any(dim=0).nonzero()[:, 0]
        spans.append((int(cols[0]), int(cols[-1])))
    return spans


@pytest.fixture(scope="module")
def face_tracks(inproc):
    node = inproc.pack.nodes.tracks.VCDFaceTracks
    return lambda image, **kw: node.execute(image, **{**dict(detector="opencv_haar", order="left_to_right", track=0,
                                                               min_iou=0.1, max_missed=2, min_frames=1,
                                                               fill_gaps=True), **kw})


def test_face_tracks_follow_both_faces_left_to_right_with_a_colour_each(face_tracks, inproc):
    image = as_tensor(two_faces())
    mask, per_track, preview, count = face_tracks(image, track=1).args
    assert count == 2 and len(per_track) == 2 and mask.shape == (FRAMES, 128, 384)
    left, right = box_columns(per_track[0]), box_columns(per_track[1])
    assert all(a[0] > b[0] for a, b in zip(left, left[1:]))  # moving left
    assert all(a[0] < b[0] for a, b in zip(right, right[1:]))  # moving right
    assert torch.equal(mask, per_track[1]) and right[0][0] > 192 > left[0][1]
    palette = inproc.pack.vcd_core.preview.PALETTE
    for k, track_mask in enumerate(per_track):
        y, x = track_mask[0].nonzero()[0].tolist()  # the top-left corner: on the outline
        assert torch.allclose(preview[0, y, x], torch.tensor(palette[k]))
    outside = torch.stack(per_track).sum(0) == 0
    assert torch.equal(preview[outside], image[outside])


def test_face_tracks_number_by_first_appearance_and_warn_for_a_missing_track(face_tracks):
    image = as_tensor(two_faces())
    image[0, :, :192] = 90 / 255  # the left face appears in frame 1
    mask, per_track, _, count = face_tracks(image, order="first_seen", track=2).args
    assert count == 2 and per_track[0][0].any() and not per_track[1][0].any() and per_track[1][1].any()
    assert box_columns(per_track[0][:1])[0][0] > 192  # the right face, seen first
    assert not mask.any()
    _, by_position, _, _ = face_tracks(image).args
    assert torch.equal(by_position[0], per_track[1]) and torch.equal(by_position[1], per_track[0])
    _, nothing, _, none = face_tracks(torch.full((2, 64, 64, 3), 0.5)).args
    assert none == 0 and len(nothing) == 1 and not nothing[0].any()  # a list output is never empty


def test_regional_identity_sets_the_mask_or_box_and_refuses_a_wrong_frame_count(inproc):
    node = inproc.pack.nodes.regional.VCDRegionalIdentity
    cond = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]
    latent = {"samples": torch.zeros(6, 4, 8, 16)}
    box = dict(region="box", strength=0.7, x=0.5, y=0.0, width=0.5, height=1.0)
    [[[_, extras]]] = node.execute(cond, **box, latent=latent).args
    assert extras["mask"].shape == (1, 64, 128) and extras["mask"][0, :, 64:].all() and extras["mask"].sum() == 64 * 64
    assert extras["mask_strength"] == 0.7 and extras["set_area_to_bounds"] is False and "mask" not in cond[0][1]
    per_frame = torch.rand(6, 32, 64)
    [[[_, extras]]] = node.execute(cond, **{**box, "region": "mask"}, mask=per_frame, latent=latent).args
    assert torch.equal(extras["mask"], per_frame)
    with pytest.raises(ValueError, match="mask has 4 frames but the latent has 6"):
        node.execute(cond, **{**box, "region": "mask"}, mask=per_frame[:4], latent=latent)
    with pytest.raises(ValueError, match="needs a MASK wired into 'mask'"):
        node.execute(cond, **{**box, "region": "mask"})


def test_regional_identity_warns_when_a_per_frame_mask_meets_no_latent(inproc, caplog):
    node = inproc.pack.nodes.regional.VCDRegionalIdentity
    cond = [[torch.zeros(1, 77, 768), {"pooled_output": None}]]
    mask = dict(region="mask", strength=1.0, x=0.0, y=0.0, width=0.5, height=1.0)
    with caplog.at_level("WARNING"):
        unchecked = node.execute(cond, **mask, mask=torch.rand(24, 32, 64))
        one_for_all = node.execute(cond, **mask, mask=torch.rand(1, 32, 64))
        checked = node.execute(cond, **mask, mask=torch.rand(6, 32, 64), latent={"samples": torch.zeros(6, 4, 4, 8)})
    expected = ("VCD Regional Identity: latent is unwired, so the mask's 24 frames are not checked against the clip "
                "(core cuts a longer mask to the clip's frames and fails on a shorter one); wire the latent you "
                "sample into 'latent'.")
    assert caplog.text.count("VCD Regional Identity: latent is unwired") == 1 and expected in caplog.text
    assert list(unchecked.ui.as_dict()["text"]) == [expected]
    assert one_for_all.ui is None and checked.ui is None  # one mask serves any clip; a wired latent is checked


def test_face_tracks_on_the_server(host):
    clip = two_faces()
    clip[0].save(host.input_dir / "two_faces.webp", save_all=True, append_images=clip[1:], lossless=True)
    graph = {
        "clip": {"class_type": "LoadImage", "inputs": {"image": "two_faces.webp"}},
        "tracks": {"class_type": "VCDFaceTracks", "inputs": {"image": ["clip", 0], "detector": "opencv_haar",
                                                              "order": "left_to_right", "track": 1, "min_iou": 0.1,
                                                              "max_missed": 2, "min_frames": 1, "fill_gaps": True}},
        "mask": {"class_type": "MaskToImage", "inputs": {"mask": ["tracks", 0]}},
        "save": {"class_type": "VCDTestSaveImageTensor", "inputs": {"images": ["mask", 0], "name": "track1"}},
    }
    result = host.run(graph)
    assert result.ok, result.describe()
    saved = safetensors.torch.load_file(str(host.output_dir / "vcd_tensors" / "track1.safetensors"))["images"]
    spans = box_columns(saved[..., 0] > 0.5)
    assert len(spans) == FRAMES and spans[0][0] > 192 and all(a[0] < b[0] for a, b in zip(spans, spans[1:]))
    assert result.history["outputs"]["tracks"]["text"][0].startswith("2 face track(s)")
