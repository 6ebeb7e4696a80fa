"""The main job on the embedded default: the shipped T2V VCD workflow on a real headless ComfyUI,
with tiny seeded models instead of downloaded weights. Prints where the animation was written.

    bash scripts/demo.sh
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import graphs
from .host import ComfyHost

OUT = Path(os.environ.get("VCD_DEMO_OUT", Path(__file__).resolve().parents[1] / "out" / "demo"))


def main() -> None:
    workdir = OUT / "host"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ComfyHost(os.environ["COMFYUI_DIR"], workdir) as host:
        print(f"[demo] ComfyUI {os.environ['COMFYUI_DIR']} serving at {host.url} (log: {host.log_path})")
        graph = graphs.tinyize(graphs.load_api("t2v_vcd"), size=64, frames=16, steps=4)
        start = time.monotonic()
        result = host.run(graph)
        if not result.ok:
            raise SystemExit(f"[demo] the T2V workflow failed:\n{result.describe()}")
        for path in host.output_files(result):
            target = OUT / path.name
            shutil.copy2(path, target)
            print(f"[demo] T2V VCD, 16 frames, gamma 0.1, tiny seeded SD1.5 model: {target}  ({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    main()
