"""T2V VCD on a real ComfyUI server: schemas, the shipped workflow (with AnimateDiff-Evolved where ../shared
is, else on tiny models), validation."""

import copy

import safetensors.torch
import torch


def test_object_info_lists_the_noise_nodes(host):
    info = host.object_info()
    noise = info["VCD3DGaussianNoise"]
    assert noise["output"] == ["NOISE"]
    gamma = noise["input"]["required"]["gamma"]
    assert gamma[0] == "FLOAT" and gamma[1]["default"] == 0.1 and (gamma[1]["min"], gamma[1]["max"]) == (0.0, 1.0)
    assert "steadier" in gamma[1]["tooltip"]
    latent = info["VCD3DGaussianNoiseLatent"]
    assert latent["output"] == ["LATENT"]
    assert latent["input_order"]["required"] == ["width", "height", "frames", "seed", "gamma", "mode"]
    assert latent["input"]["required"]["mode"][1]["options"] == ["ar1", "authors"]


def test_t2v_workflow_runs_and_writes_an_mp4(host, shipped, read_video):
    """The shipped graph saves an mp4 (h264) through core's CreateVideo -> SaveVideo, every frame in it."""
    graph = shipped("t2v_vcd", frames=8)
    result = host.run(graph)
    assert result.ok, result.describe()
    files = host.output_files(result)
    assert len(files) == 1 and files[0].suffix == ".mp4" and files[0].is_file()
    codec, frames = read_video(files[0])
    assert codec == "h264" and len(frames) == 8 and frames[0].size == (64, 64)


def test_without_core_video_nodes_the_graph_saves_an_animated_webp(host, shipped, read_video):
    """graphs.for_host on a host lacking CreateVideo/SaveVideo: the same frames as an animated WEBP."""
    from devtools import graphs

    node_types = set(host.object_info()) - {"SaveVideo"}
    graph, saved = graphs.for_host(shipped("t2v_vcd", frames=4), node_types)
    assert saved == "animated WEBP" and not set(graphs.VIDEO_NODES) & {n["class_type"] for n in graph.values()}
    result = host.run(graph)
    assert result.ok, result.describe()
    [path] = host.output_files(result)
    codec, frames = read_video(path)
    assert path.suffix == ".webp" and codec is None and len(frames) == 4


def test_latent_node_authors_mode_over_http(host):
    from vcd_core import noise_prior

    graph = {
        "1": {"class_type": "VCD3DGaussianNoiseLatent",
              "inputs": {"width": 64, "height": 32, "frames": 6, "seed": 77, "gamma": 0.2, "mode": "authors"}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "vcd_test/noise"}},
    }
    result = host.run(graph)
    assert result.ok, result.describe()
    [latent_file] = host.output_dir.glob("vcd_test/noise*.latent")
    saved = safetensors.torch.load_file(str(latent_file))["latent_tensor"]
    assert torch.equal(saved, noise_prior.authors_noise(6, 4, 4, 8, gamma=0.2, seed=77))


def _rejection(host, graph, node_id):
    result = host.run(graph)
    assert result.http_status == 400, result.describe()
    return result.node_errors[node_id]["errors"][0]


def test_gamma_above_one_is_rejected_naming_the_input(host, shipped):
    graph = shipped("t2v_vcd")
    noise_id = next(nid for nid, n in graph.items() if n["class_type"] == "VCD3DGaussianNoise")
    graph[noise_id]["inputs"]["gamma"] = 1.5
    error = _rejection(host, graph, noise_id)
    assert error["type"] == "value_bigger_than_max" and error["extra_info"]["input_name"] == "gamma"


def test_zero_frames_is_rejected_naming_the_input(host):
    graph = {
        "1": {"class_type": "VCD3DGaussianNoiseLatent",
              "inputs": {"width": 64, "height": 64, "frames": 0, "seed": 0, "gamma": 0.1, "mode": "ar1"}},
        "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "vcd_test/bad"}},
    }
    error = _rejection(host, copy.deepcopy(graph), "1")
    assert error["type"] == "value_smaller_than_min" and error["extra_info"]["input_name"] == "frames"


def test_a_missing_or_unreadable_identity_stops_the_run_naming_the_file(host, shipped):
    """ComfyUI alone would say "Value not in list"; VCD Load Identity says which file goes where, and refuses a file
    that is not an identity, before anything runs."""
    graph = shipped("t2v_vcd")
    loader = next(nid for nid, n in graph.items() if n["class_type"] == "VCDLoadIdentity")
    graph[loader]["inputs"]["embedding"] = "mona.pt"
    error = _rejection(host, graph, loader)
    assert error["type"] == "custom_validation_failed" and error["extra_info"]["input_name"] == "embedding"
    assert "no identity file 'mona.pt' in models/embeddings" in error["details"]
    assert str(host.models_dir / "embeddings") in error["details"] and "train_identity.json" in error["details"]
    (host.models_dir / "embeddings" / "vcd_test_broken.pt").write_bytes(b"not a tensor file")
    graph[loader]["inputs"]["embedding"] = "vcd_test_broken.pt"
    error = _rejection(host, graph, loader)
    assert "vcd_test_broken.pt cannot be used" in error["details"]  # then read_embedding's reason (it varies with torch)
