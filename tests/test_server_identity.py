"""The identity-training workflow on a real ComfyUI server: photos -> Prompt Segment -> Train Identity ->
the new embedding used by core CLIPTextEncode in the same graph."""

import copy
import io
import re

from PIL import Image

from devtools import graphs
from devtools.node_texts import NodeTexts
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
    with OrderedTexts(host.url) as events:
        result = host.run(graph, client_id=events.client_id)
    assert result.ok, result.describe()
    check_live_loss(events, "9", graph["9"]["inputs"]["steps"])
    path = host.models_dir / "embeddings" / "vcd" / "server_astro.safetensors"
    saved = embedding_io.read_embedding(path)
    assert saved.vectors.shape == (4, 768) and saved.metadata["references"] == "3"
    assert saved.metadata["prompt"] == "embedding:server_astro man"
    [check] = host.output_files(result)
    with Image.open(check) as image:
        assert image.size == (64, 64)
    log = host.log_path.read_text(errors="replace")
    assert "server_astro does not exist" not in log  # core found the new file when encoding the prompt
    on_disk = path.read_bytes()

    # Queued again as after a restart (a changed gradient_checkpointing gets past ComfyUI's cache; it is not part of
    # the request, since it gives the same gradients): the same photos, settings and model reuse the file.
    with NodeTexts(host.url) as events:
        requeued = host.run(with_train_inputs(graph, gradient_checkpointing=False))
    assert requeued.ok, requeued.describe()
    assert any("reused, not trained again" in text for text in events.of("9")), events.of("9")
    assert path.read_bytes() == on_disk

    again = host.run(with_train_inputs(graph, seed=1))
    assert not again.ok and "seed 0 in the file, 1 now" in again.describe() and "overwrite" in again.describe()
    assert path.read_bytes() == on_disk  # an existing file is never silently replaced


def with_train_inputs(graph: dict, **inputs) -> dict:
    """A copy of the training graph with Train Identity's (node 9) inputs changed."""
    changed = copy.deepcopy(graph)
    changed["9"]["inputs"].update(inputs)
    return changed


class OrderedTexts(NodeTexts):
    """NodeTexts that also keeps each text in ``events`` as ("text", node id, text), in arrival order."""

    def _parse(self, data: bytes) -> None:
        seen = len(self.received)
        super()._parse(data)
        self.events.extend(("text", *item) for item in self.received[seen:])


def check_live_loss(events: OrderedTexts, node: str, steps: int) -> None:
    """While the node trained, its loss curve (PNG previews) and its steps with the time left (texts) arrived, all
    before the node finished; the last step's preview and text came with the last step."""
    done = next(i for i, event in enumerate(events.events) if event[0] == "executed" and event[1]["node"] == node)
    previews = [i for i, event in enumerate(events.events) if event[0] == "preview" and event[1] == node]
    assert previews and max(previews) < done, (previews, done)
    for mime, data in events.previews(node):
        with Image.open(io.BytesIO(data)) as picture:
            assert mime == "image/png" and picture.size == (512, 256)  # the loss_curve output's size
    texts = [event[2] for event in events.events[:done] if event[:2] == ("text", node) and event[2].startswith("step ")]
    assert texts[0].startswith(f"step 1/{steps} ") and texts[-1].startswith(f"step {steps}/{steps} "), texts
    assert all(re.search(r"about \d+ (s|min \d\d s|h \d\d min) left$", text) for text in texts), texts
