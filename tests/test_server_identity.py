"""The identity-training workflow on a real ComfyUI server: photos -> Prompt Segment -> Train Identity ->
the new embedding used by core CLIPTextEncode in the same graph."""

import copy

from PIL import Image

from devtools import graphs
from vcd_core import embedding_io


def test_object_info_lists_the_identity_nodes(host):
    info = host.object_info()
    train = info["VCDTrainIdentity"]
    assert train["output"] == ["STRING", "IMAGE", "VCD_IDENTITY"]
    required = train["input"]["required"]
    assert required["tokens"][1]["default"] == 4 and required["steps"][1]["default"] == 200
    assert required["learning_rate"][1]["default"] == 1e-3 and required["batch_size"][1]["default"] == 4
    assert "masks" in train["input"]["optional"]
    segment = info["VCDPromptSegment"]["input"]["required"]
    assert segment["box_threshold"][1]["default"] == 0.3 and segment["text_threshold"][1]["default"] == 0.25
    assert info["VCDLoadIdentity"]["output"] == ["STRING", "VCD_IDENTITY"]


def test_training_workflow_writes_the_file_and_uses_it(host):
    graphs.provide_tiny_inputs(host.models_dir, host.input_dir)
    graph = graphs.tinyize(graphs.load_api("train_identity"), size=64, steps=3)
    graph["9"]["inputs"]["name"] = "server_astro"
    result = host.run(graph)
    assert result.ok, result.describe()
    path = host.models_dir / "embeddings" / "vcd" / "server_astro.safetensors"
    saved = embedding_io.read_embedding(path)
    assert saved.vectors.shape == (4, 768) and saved.metadata["references"] == "3"
    assert saved.metadata["prompt"] == "embedding:server_astro man"
    [check] = host.output_files(result)
    with Image.open(check) as image:
        assert image.size == (64, 64)
    log = host.log_path.read_text(errors="replace")
    assert "server_astro does not exist" not in log  # core found the new file when encoding the prompt

    again = host.run(copy.deepcopy(graph) | {"9": graph["9"] | {"inputs": graph["9"]["inputs"] | {"seed": 1}}})
    assert not again.ok and "overwrite" in again.describe()  # an existing file is never silently replaced
    assert embedding_io.read_embedding(path).vectors.equal(saved.vectors)
