// Video Custom Diffusion: under every VCD node with a gamma widget, a live bar chart of the noise
// correlation between frame 1 and the frames after it (gamma^|i-j|), redrawn as gamma changes.
import { app } from "../../scripts/app.js";
import { drawGammaChart } from "./gamma_chart.js";

const CHART_HEIGHT = 64;

app.registerExtension({
  name: "vcd.gammaChart",
  nodeCreated(node) {
    if (!String(node.comfyClass ?? "").startsWith("VCD")) return;
    const gamma = node.widgets?.find((w) => w.name === "gamma");
    if (!gamma) return;
    node.addCustomWidget({
      name: "gamma_chart",
      type: "vcd_gamma_chart",
      value: null,
      serialize: false, // a picture, not a value: never saved into the workflow
      options: { serialize: false },
      computeSize: (width) => [width, CHART_HEIGHT],
      draw(ctx, _node, width, y) {
        drawGammaChart(ctx, 12, y + 2, width - 24, CHART_HEIGHT - 6, Number(gamma.value));
      },
    });
  },
});
