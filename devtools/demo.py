"""The main job on the embedded default: the shipped workflows on a real headless ComfyUI, with tiny
seeded models instead of downloaded weights. Prints where each output was written.

Trains an identity on three photos that ship in scikit-image (the astronaut), then T2V VCD and the
full pipeline (T2V -> Face VCD -> 2x upscale -> Tiled VCD) with that identity in the prompt.

    bash scripts/demo.sh
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import graphs
from .host import ComfyHost

IDENTITY_NAME = "demo_astronaut"
STAGES = [
    ("train_identity", "identity training (Prompt Segment -> Train Identity, 40 steps) and a still with it"),
    ("t2v_vcd", "T2V VCD, 16 frames at 64 px, gamma 0.1, tiny seeded SD1.5 model"),
    ("full_pipeline", "T2V -> Face VCD -> 2x upscale -> Tiled VCD, 16 frames at 128 px"),
]
OUT = Path(os.environ.get("VCD_DEMO_OUT", Path(__file__).resolve().parents[1] / "out" / "demo"))


def main() -> None:
    workdir = OUT / "host"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ComfyHost(os.environ["COMFYUI_DIR"], workdir) as host:
        print(f"[demo] ComfyUI {os.environ['COMFYUI_DIR']} serving at {host.url} (log: {host.log_path})")
        graphs.provide_tiny_inputs(host.models_dir, host.input_dir)
        snippet = f"embedding:{IDENTITY_NAME} woman"
        node_types = host.object_info()
        for name, label in STAGES:
            graph = graphs.tinyize(graphs.load_api(name), size=64, frames=16, steps=4)
            if name == "train_identity":
                train = next(n for n in graph.values() if n["class_type"] == "VCDTrainIdentity")
                train["inputs"].update(name=IDENTITY_NAME, class_word="woman", steps=40)
            graph = graphs.use_identity(graph, f"vcd/{IDENTITY_NAME}.safetensors")  # in VCD Load Identity
            start = time.monotonic()
            graph, video_format = graphs.for_host(graph, node_types)
            result = host.run(graph)
            if not result.ok:
                raise SystemExit(f"[demo] the {name} workflow failed:\n{result.describe()}")
            for path in host.output_files(result):
                target = OUT / path.name
                shutil.copy2(path, target)
                kind = video_format if path.suffix in (".mp4", ".webp") else "image"
                print(f"[demo] {label}: {target}  ({kind}, {time.monotonic() - start:.1f} s)")
            if name == "train_identity":
                embedding = host.models_dir / "embeddings" / "vcd" / f"{IDENTITY_NAME}.safetensors"
                target = OUT / embedding.name
                shutil.copy2(embedding, target)
                print(f"[demo] the identity ({target.stat().st_size} bytes, used below as '{snippet}'): {target}")
        if f"{IDENTITY_NAME} does not exist" in host.log_path.read_text(errors="replace"):
            raise SystemExit("[demo] ComfyUI did not find the trained identity")


if __name__ == "__main__":
    main()
