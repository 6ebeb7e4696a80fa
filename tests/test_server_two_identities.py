"""The shipped two_identities workflow on a real server (with AnimateDiff-Evolved where ../shared is, else on tiny
models): it writes its mp4, each identity reaches the T2V sampler only in its own box and the Face VCD pass of its
own face track, and a missing second identity stops the run naming its loader."""

from __future__ import annotations

import copy
import json

import pytest
import safetensors
import safetensors.torch
import torch

from devtools import graphs
from devtools.clips import two_faces

NAME = "two_identities"
FRAMES = 8  # the shrunk T2V clip
FACE_FRAMES = 4  # the two-face clip the Face VCD stage refines in the tracing test
SAME_TEXT = "a photo of {identity} person"  # both identity prompts: then only the identity tells them apart


def of_type(graph: dict, class_type: str) -> list[str]:
    return sorted((nid for nid, node in graph.items() if node["class_type"] == class_type), key=int)


def with_probe(graph: dict, nid: str, tag: str) -> None:
    """In place: node ``nid`` samples with its MODEL through a sampling probe recording under ``tag``."""
    graph[f"probe_{tag}"] = {"class_type": "VCDTestSamplingProbe",
                             "inputs": {"model": graph[nid]["inputs"]["model"], "tag": tag, "skip_sampling": False}}
    graph[nid]["inputs"]["model"] = [f"probe_{tag}", 0]


def probe_calls(host, tag: str) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """Each sampling call the probe ``tag`` recorded, in order: (record, tensors by name)."""
    folder = host.output_dir / "vcd_probe"
    calls = []
    for index in range(len(list(folder.glob(f"{tag}-*.safetensors")))):
        with safetensors.safe_open(str(folder / f"{tag}-{index}.safetensors"), "pt") as f:
            calls.append((json.loads(f.metadata()["record"]), {name: f.get_tensor(name) for name in f.keys()}))
    return calls


@pytest.mark.host_independent
def test_the_left_box_holds_the_left_identity_and_prompts_the_left_face_track():
    """As shipped: ironman.pt (man) in the left half, mona.pt (woman) in the right half, boxes that do not overlap,
    the scene prompt combined with both, and Face VCD's positive_1 / positive_2 the same identities' prompts, with
    face tracks numbered left to right."""
    graph = graphs.load_api(NAME)
    inputs = {nid: node["inputs"] for nid, node in graph.items()}
    regions = sorted(of_type(graph, "VCDRegionalIdentity"), key=lambda nid: inputs[nid]["x"])
    encodes = [inputs[nid]["conditioning"][0] for nid in regions]
    loaders = [inputs[inputs[nid]["identity"][0]] for nid in encodes]
    assert [(f["embedding"], f["class_word"]) for f in loaders] == [("ironman.pt", "man"), ("mona.pt", "woman")]
    assert [f" {f['class_word']} " in inputs[nid]["text"] for f, nid in zip(loaders, encodes)] == [True, True]
    left, right = (inputs[nid] for nid in regions)
    assert left["region"] == right["region"] == "box" and left["x"] + left["width"] <= right["x"]
    [guider] = of_type(graph, "CFGGuider")
    scene, both = (inputs[inputs[guider]["positive"][0]][k] for k in ("conditioning_1", "conditioning_2"))
    assert graph[scene[0]]["class_type"] == "CLIPTextEncode"
    assert sorted(inputs[both[0]][k][0] for k in ("conditioning_1", "conditioning_2")) == regions
    [refine] = of_type(graph, "VCDFaceRefineTracks")
    assert [inputs[refine][f"positive_{k}"][0] for k in (1, 2)] == encodes
    assert [inputs[refine].get(f"positive_{k}") for k in (3, 4)] == [None, None]
    [tracks] = of_type(graph, "VCDFaceTracks")
    assert inputs[tracks]["order"] == "left_to_right" and inputs[refine]["track_masks"] == [tracks, 1]


@pytest.mark.host_independent
def test_use_identity_picks_one_file_each_in_node_order_or_one_for_all():
    graph = graphs.load_api(NAME)
    loaders = of_type(graph, "VCDLoadIdentity")
    picked = graphs.use_identity(graph, "a.pt", "b.pt")
    assert [picked[nid]["inputs"]["embedding"] for nid in loaders] == ["a.pt", "b.pt"]
    assert {graphs.use_identity(graph, "c.pt")[nid]["inputs"]["embedding"] for nid in loaders} == {"c.pt"}
    assert graph[loaders[0]]["inputs"]["embedding"] == "ironman.pt"  # the shipped graph is left as it was
    with pytest.raises(ValueError, match=r"3 identity files for 2 VCD Load Identity nodes \(5, 6\)"):
        graphs.use_identity(graph, "a.pt", "b.pt", "c.pt")
    graph["30"] = copy.deepcopy(graph[loaders[0]])
    with pytest.raises(ValueError, match=r"2 identity files for 3 VCD Load Identity nodes \(5, 6, 30\)"):
        graphs.tinyize(graph)


def test_two_identities_workflow_runs_and_writes_an_mp4(host, shipped, read_video):
    """As shipped (shrunk, the two test identities in its two loaders): an mp4 (h264) with every frame."""
    graph = shipped(NAME, frames=FRAMES)
    assert [graph[nid]["inputs"]["embedding"] for nid in of_type(graph, "VCDLoadIdentity")] == list(graphs.TEST_IDENTITIES)
    result = host.run(graph)
    assert result.ok, result.describe()
    [path] = host.output_files(result)
    codec, frames = read_video(path)
    assert path.suffix == ".mp4" and codec == "h264" and len(frames) == FRAMES and frames[0].size == (64, 64)


def test_each_identity_reaches_its_box_and_its_face_track(host, shipped, read_video):
    """Both identity prompts made the same text, so only the identity differs between them. The T2V sampler gets
    the scene prompt over the whole frame and each identity masked to its half, the two different (2 identities +
    the scene + the negative: 4 UNet rows per frame per step); the Face VCD stage, fed a clip with two faces,
    samples the left face with the left box's conditioning and the right face with the right box's."""
    graph = shipped(NAME, frames=FRAMES)
    for nid in of_type(graph, "VCDIdentityEncode"):
        graph[nid]["inputs"]["text"] = SAME_TEXT
    [guider] = of_type(graph, "CFGGuider")
    [tracks] = of_type(graph, "VCDFaceTracks")
    [refine] = of_type(graph, "VCDFaceRefineTracks")
    [decode] = of_type(graph, "VAEDecode")
    with_probe(graph, guider, "two_t2v")
    with_probe(graph, refine, "two_face")
    clip = two_faces(FACE_FRAMES)
    clip[0].save(host.input_dir / "two_identities_faces.webp", save_all=True, append_images=clip[1:], lossless=True)
    graph["faces"] = {"class_type": "LoadImage", "inputs": {"image": "two_identities_faces.webp"}}
    graph[tracks]["inputs"]["image"] = graph[refine]["inputs"]["image"] = ["faces", 0]
    graph["keep_t2v"] = {"class_type": "VCDTestSaveImageTensor",  # the T2V frames still run, and are kept
                         "inputs": {"images": [decode, 0], "name": "two_identities_t2v"}}
    result = host.run(graph)
    assert result.ok, result.describe()

    [(t2v, tensors)] = probe_calls(host, "two_t2v")
    first = t2v["cond_calls"][0]
    positive, negative = ([(tensors[m] if m else None, tensors[c]) for m, c in zip(ms, cs)]
                          for ms, cs in zip(first["masks"], first["crossattn"]))
    [scene] = [cross for mask, cross in positive if mask is None]  # the whole frame
    assert [mask for mask, _ in negative] == [None]
    halves = torch.zeros(2, 1, 8, 8)
    halves[0, :, :, :4] = halves[1, :, :, 4:] = 1
    masked = sorted(((mask, cross) for mask, cross in positive if mask is not None), key=lambda c: -c[0][..., :4].sum())
    assert len(masked) == 2 and all(torch.equal(mask, half) for (mask, _), half in zip(masked, halves))
    (_, left), (_, right) = masked
    assert not torch.equal(left, right) and not torch.equal(left, scene) and not torch.equal(right, scene)
    assert sum(t2v["unet_batches"]) == len(t2v["cond_calls"]) * 4 * FRAMES  # N + 1 passes + the negative

    face_calls = probe_calls(host, "two_face")
    assert [record["frames"] for record, _ in face_calls] == [FACE_FRAMES, FACE_FRAMES]  # track 0, then track 1
    sampled = [tensors[record["cond_calls"][0]["crossattn"][0][0]] for record, tensors in face_calls]
    assert torch.equal(sampled[0], left) and torch.equal(sampled[1], right)

    [path] = host.output_files(result)
    codec, frames = read_video(path)
    assert codec == "h264" and len(frames) == FACE_FRAMES and frames[0].size == (384, 128)
    kept = safetensors.torch.load_file(str(host.output_dir / "vcd_tensors" / "two_identities_t2v.safetensors"))["images"]
    assert kept.shape == (FRAMES, 64, 64, 3)


def test_a_missing_second_identity_stops_the_run_naming_its_loader(host, shipped):
    """The right identity's file absent (mona.pt, as after loading the shipped graph without it): validation fails on
    that loader, naming the file; the left loader passes."""
    graph = shipped(NAME)
    left, right = of_type(graph, "VCDLoadIdentity")
    graph[right]["inputs"]["embedding"] = "mona.pt"
    result = host.run(graph)
    assert result.http_status == 400, result.describe()
    assert set(result.node_errors) == {right}
    [error] = result.node_errors[right]["errors"]
    assert error["extra_info"]["input_name"] == "embedding" and "no identity file 'mona.pt'" in error["details"]
