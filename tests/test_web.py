"""The frontend extension: the gamma chart's numbers and drawing (run in node), and the server serving it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

WEB = Path(__file__).resolve().parents[1] / "web"

SCRIPT = """
import { correlations, describe, drawGammaChart } from "%s";
const calls = [];
const ctx = { fillRect: (...a) => calls.push(["rect", ...a]), fillText: (...a) => calls.push(["text", ...a]) };
const values = drawGammaChart(ctx, 0, 0, 160, 64, %s, 16);
console.log(JSON.stringify({ values, calls, four: correlations(%s, 4), text: describe(%s),
                             still: describe(1), iid: describe(0) }));
"""


def run_chart(gamma: float) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the chart is drawn in the browser; node only tests it)")
    module = (WEB / "gamma_chart.js").as_uri()
    out = subprocess.run([node, "--input-type=module", "-e", SCRIPT % (module, gamma, gamma, gamma)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_chart_draws_gamma_to_the_frame_distance():
    chart = run_chart(0.5)
    assert chart["four"] == [1, 0.5, 0.25, 0.125]
    bars = [c for c in chart["calls"] if c[0] == "rect"][1:]  # after the background
    assert len(bars) == 16
    heights = [bar[4] for bar in bars]
    assert heights[0] > heights[1] > heights[2] and heights[1] == pytest.approx(heights[0] / 2, rel=0.05)
    assert "share 50%" in chart["text"] and "7 frames apart" in chart["text"]  # 0.5^7 < 1% <= 0.5^6
    assert "i.i.d." in chart["iid"] and "still" in chart["still"]


def test_paper_gamma_reads_as_a_small_share():
    chart = run_chart(0.1)
    assert chart["values"][:3] == pytest.approx([1, 0.1, 0.01])
    assert "share 10%" in chart["text"] and "3 frames apart" in chart["text"]


@pytest.mark.parametrize("gamma, frames", [(0.93, 64), (0.95, 90), (0.99, 459), (0.999, 4603)])
def test_reach_is_counted_for_gamma_near_one(gamma, frames):
    """The first distance where gamma^k < 1%, however far: never the -1 of a search that gave up."""
    text = run_chart(gamma)["text"]
    assert f"under 1% from {frames} frames apart" in text, text
    assert gamma ** frames < 0.01 <= gamma ** (frames - 1)


def test_server_serves_the_extension(host):
    for name in ("vcd.js", "gamma_chart.js"):
        response = requests.get(f"{host.url}/extensions/vcd/{name}", timeout=10)
        assert response.status_code == 200, name
        assert response.text == (WEB / name).read_text()
    listed = requests.get(f"{host.url}/extensions", timeout=10).json()
    assert "/extensions/vcd/vcd.js" in listed and "/extensions/vcd/gamma_chart.js" in listed
