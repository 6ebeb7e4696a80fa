// Drives ComfyUI's real frontend in headless Chromium for the tests (devtools/frontend.py starts it):
// one browser and one page for the whole session, commands in on stdin and answers out on stdout,
// one JSON object per line.
//   node driver.mjs <server url> <chromium> <fresh user-data-dir> <playwright-core install dir>
// A command is {"op": ..., ...}; an answer is {"ok": true, "result": ...} or {"ok": false, "error": ...}.
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const [url, executablePath, userDataDir, depsDir] = process.argv.slice(2);
const { chromium } = createRequire(path.join(depsDir, "package.json"))("playwright-core");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const CHART_HEIGHT = 64; // web/vcd.js
const BAR_RGB = [0x6a, 0x9f, 0xd8]; // web/gamma_chart.js
// The frontend's default "LiteGraph.Canvas.MinFontSizeForLOD" (1.32.9 and 1.49.6): text is hidden below 8 / 14 px zoom.
const DEFAULT_LOD_FONT_SIZE = 8;

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath, headless: true, args: ARGS, viewport: { width: 1920, height: 1080 },
});
const page = context.pages()[0] ?? await context.newPage();
const consoleErrors = [];
page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text().slice(0, 500)); });

/** Resolves after the page has drawn `n` more frames. */
const frames = (n = 2) => page.evaluate((n) => new Promise((done) => {
  const step = (k) => (k ? requestAnimationFrame(() => step(k - 1)) : done());
  step(n);
}), n);

/** The texts of the dialogs on screen (missing nodes, errors, value prompts...). */
const openDialogs = () => page.evaluate(() => [...document.querySelectorAll(".p-dialog, [role=dialog], .graphdialog")]
  .filter((el) => el.getClientRects().length && getComputedStyle(el).visibility !== "hidden")
  .map((el) => el.textContent.trim().replace(/\s+/g, " ").slice(0, 2000)));

async function closeDialogs() {
  for (let i = 0; i < 5 && (await openDialogs()).length; i++) {
    await page.keyboard.press("Escape");
    await page.waitForTimeout(200);
  }
}

/** Newer frontends list a workflow's problems (missing nodes, missing models) in an errors panel, not a dialog. */
async function errorGroups() {
  const details = page.getByRole("button", { name: "View details" });
  if (!(await details.isVisible())) return [];
  await details.click();
  const groups = page.locator("[data-testid^='error-group-']");
  await groups.first().waitFor({ timeout: 5000 });
  const found = await groups.evaluateAll((els) => els.map((el) => ({
    group: el.dataset.testid.replace("error-group-", ""), text: el.textContent.trim().replace(/\s+/g, " ").slice(0, 400),
  })));
  await page.evaluate(() => app.extensionManager.setting.set("Comfy.RightSidePanel.IsOpen", false));
  return found;
}

/** Waits up to `ms` for the frontend to report a loaded workflow's problems (a dialog, or the errors panel's
 * button): it checks the model lists asynchronously after loading, later on a busy machine. */
async function awaitProblems(ms) {
  const details = page.getByRole("button", { name: "View details" });
  for (const deadline = Date.now() + ms; Date.now() < deadline; await page.waitForTimeout(100)) {
    if ((await openDialogs()).length || (await details.isVisible())) return;
  }
}

/** What the frontend made of the graph it holds: node types it does not know, links that do not connect. */
const inspectGraph = () => page.evaluate(() => {
  const graph = app.graph;
  const links = (graph.links instanceof Map ? [...graph.links.values()] : Object.values(graph.links ?? {})).filter(Boolean);
  const problems = [];
  for (const link of links) {
    const origin = graph.getNodeById(link.origin_id), target = graph.getNodeById(link.target_id);
    const output = origin?.outputs?.[link.origin_slot], input = target?.inputs?.[link.target_slot];
    const where = `link ${link.id} ${link.origin_id}:${link.origin_slot} -> ${link.target_id}:${link.target_slot}`;
    if (!output || !input) problems.push(`${where}: no such node or slot`);
    else {
      if (input.link !== link.id) problems.push(`${where}: the input points at link ${input.link}`);
      if (!output.links?.includes(link.id)) problems.push(`${where}: the output does not list it`);
      if (!LiteGraph.isValidConnection(output.type, input.type))
        problems.push(`${where}: ${output.type} does not connect to ${input.name} (${input.type})`);
    }
  }
  for (const node of graph.nodes)
    for (const input of node.inputs ?? [])
      if (input.link != null && !links.some((l) => l.id === input.link))
        problems.push(`node ${node.id} input ${input.name}: dangling link ${input.link}`);
  return {
    unregistered: graph.nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type),
    node_count: graph.nodes.length,
    // [id, origin node, origin slot, target node, target input's name, type]; newer frontends hold ids as strings
    links: links.map((l) => [l.id, Number(l.origin_id), l.origin_slot, Number(l.target_id),
      graph.getNodeById(l.target_id)?.inputs?.[l.target_slot]?.name ?? null, l.type]),
    link_problems: problems,
    widgets: Object.fromEntries(graph.nodes.map((n) => [String(n.id), (n.widgets ?? []).map((w) => w.name)])),
  };
});

const nodeById = (id) => page.evaluate((id) => app.graph.nodes.some((n) => String(n.id) === id), String(id));

async function fitAndShoot(screenshot) {
  await page.evaluate(() => app.extensionManager.command.execute("Comfy.Canvas.FitView"));
  await frames(3);
  await page.screenshot({ path: screenshot });
}

const ops = {
  /** Opens the app and waits for the graph, the canvas and our extension. */
  async open({ timeout_ms = 120000 }) {
    await page.goto(url);
    await page.waitForFunction(() => window.app?.graph && window.app.canvas?.ds &&
      window.app.extensions?.some((e) => e.name === "vcd.gammaChart"), null, { timeout: timeout_ms });
    await frames();
    await closeDialogs();
    return page.evaluate(() => ({
      frontend: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
      extensions: app.extensions.map((e) => e.name).filter((n) => n.startsWith("vcd")),
    }));
  },

  /** Loads a workflow the way the frontend does (UI format, or API format with `api`) and reports what it made of it. */
  async load({ workflow, name, api = false, screenshot = null, problems_ms = 0 }) {
    await closeDialogs();
    await page.evaluate(({ workflow, name, api }) =>
      (api ? app.loadApiJson(workflow, name) : app.loadGraphData(workflow, true, true, name)), { workflow, name, api });
    await page.waitForTimeout(300); // dialogs open asynchronously
    await awaitProblems(problems_ms); // a workflow expected to have problems: until they are shown
    await frames();
    const report = await inspectGraph();
    report.prompt = await page.evaluate(async () => (await app.graphToPrompt()).output);
    report.dialogs = await openDialogs();
    report.error_groups = await errorGroups();
    if (screenshot) await fitAndShoot(screenshot);
    return report;
  },

  /** On a `width` x `height` canvas with the frontend's default level of detail: Fit view, then where each
   * node and group lies (graph units, title bars included), the zoom reached and whether text is drawn. */
  async layout({ width = 1600, height = 900, screenshot = null }) {
    await closeDialogs();
    await page.setViewportSize({ width, height });
    try {
      await frames(3);
      await page.evaluate((lod) => { app.canvas.min_font_size_for_lod = lod; }, DEFAULT_LOD_FONT_SIZE);
      await page.evaluate(() => app.extensionManager.command.execute("Comfy.Canvas.FitView"));
      await page.waitForTimeout(600); // the fit is animated (350 ms)
      await frames(3);
      const report = await page.evaluate(() => {
        const c = app.canvas;
        const rect = (r) => [r[0], r[1], r[2], r[3]].map((v) => Math.round(v * 10) / 10);
        return {
          canvas: [c.canvas.clientWidth, c.canvas.clientHeight], scale: c.ds.scale,
          lod_threshold: c._lowQualityZoomThreshold ?? null, low_quality: c.low_quality,
          nodes: app.graph.nodes.map((n) => ({ id: String(n.id), type: n.type, title: n.title, rect: rect(n.boundingRect) })),
          groups: (app.graph.groups ?? app.graph._groups ?? []).map((g) => ({ title: g.title, rect: rect(g._bounding ?? g.boundingRect),
            font_size: g.font_size, nodes: (g.recomputeInsideNodes?.(), [...(g._nodes ?? g.nodes ?? [])]).map((n) => String(n.id)) })),
        };
      });
      if (screenshot) await page.screenshot({ path: screenshot });
      return report;
    } finally {
      await page.evaluate(() => { app.canvas.min_font_size_for_lod = 1; }); // devtools/frontend.py SETTINGS
      await page.setViewportSize({ width: 1920, height: 1080 });
      await frames(2);
    }
  },

  /** Types each value into the gamma widget of node `node_id` and reads the chart's bars off the canvas. */
  async gamma({ node_id, values, screenshot = null }) {
    if (!(await nodeById(node_id))) throw new Error(`no node ${node_id} in the graph`);
    const readings = [];
    for (const value of values) {
      await closeDialogs();
      const target = await page.evaluate((id) => {
        const node = app.graph.nodes.find((n) => String(n.id) === id);
        app.canvas.ds.scale = 1;
        app.canvas.centerOnNode(node);
        app.canvas.setDirty(true, true);
        const widget = node.widgets.find((w) => w.name === "gamma");
        const y = node.pos[1] + (widget.y ?? widget.last_y) + LiteGraph.NODE_WIDGET_HEIGHT / 2;
        return app.canvasPosToClientPos([node.pos[0] + node.size[0] / 2, y]);
      }, String(node_id));
      await frames();
      await page.mouse.click(target[0], target[1]); // the middle of a number widget asks for a value
      const input = page.locator(".graphdialog input, .p-dialog input").first();
      await input.waitFor({ timeout: 10000 });
      await input.fill(String(value));
      await input.press("Enter");
      await frames(3);
      readings.push(await page.evaluate(({ id, chartHeight, rgb }) => {
        const node = app.graph.nodes.find((n) => String(n.id) === id);
        const gamma = node.widgets.find((w) => w.name === "gamma");
        const chart = node.widgets.find((w) => w.name === "gamma_chart");
        if (!chart) return { gamma: gamma.value, bars: null };
        const canvas = app.canvas.canvas, ratio = canvas.width / canvas.clientWidth, scale = app.canvas.ds.scale;
        const [left, top] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] + (chart.y ?? chart.last_y)]);
        const w = Math.round(node.size[0] * scale * ratio), h = Math.round(chartHeight * scale * ratio);
        const data = canvas.getContext("2d").getImageData(Math.round(left * ratio), Math.round(top * ratio), w, h).data;
        const isBar = (i) => rgb.every((c, k) => Math.abs(data[i + k] - c) < 12);
        const columns = Array.from({ length: w }, (_, x) => {
          let count = 0;
          for (let y = 0; y < h; y++) if (isBar(4 * (y * w + x))) count++;
          return count;
        });
        const bars = []; // runs of columns holding bar pixels, left to right: one per frame; the tallest column of each
        columns.forEach((count, x) => {
          if (!count) return;
          if (columns[x - 1]) bars[bars.length - 1] = Math.max(bars[bars.length - 1], count);
          else bars.push(count);
        });
        return { gamma: gamma.value, bars };
      }, { id: String(node_id), chartHeight: CHART_HEIGHT, rgb: BAR_RGB }));
    }
    if (screenshot) await page.screenshot({ path: screenshot });
    const saved = await page.evaluate(async (id) => {
      const node = app.graph.nodes.find((n) => String(n.id) === id);
      return {
        widgets: node.widgets.map((w) => [w.name, w.value]),
        widgets_values: app.graph.serialize().nodes.find((n) => String(n.id) === id).widgets_values,
        inputs: (await app.graphToPrompt()).output[id].inputs,
      };
    }, String(node_id));
    return { readings, ...saved };
  },

  /** Clicks Run on the graph loaded before; records the progress bars drawn, the live previews the server sent
   * (`live`) and first drawn on each node (`shown`, with whether the node had finished), and the output previews. */
  async queue({ screenshot = null, timeout_ms = 240000 }) {
    await closeDialogs();
    await page.evaluate(() => {
      const seen = (window.__vcdRun = { progress: [], titles: [], events: [], live: [], shown: {}, imaged: [], done: false,
        rejected: null });
      if (!app.api.__vcdQueuePrompt) { // a prompt the server refuses (400) starts no execution: record why
        const queuePrompt = (app.api.__vcdQueuePrompt = app.api.queuePrompt.bind(app.api));
        app.api.queuePrompt = async (...args) => {
          try { return await queuePrompt(...args); } catch (error) {
            window.__vcdRun.rejected = JSON.stringify(error?.response ?? String(error));
            window.__vcdRun.events.push(["rejected", null]);
            throw error;
          }
        };
      }
      for (const kind of ["execution_start", "executing", "progress", "executed", "execution_success", "execution_error"])
        app.api.addEventListener(kind, (e) => { // "executing"'s detail is the node id itself (null at the end)
          const node = typeof e.detail === "object" ? e.detail?.node ?? e.detail?.node_id : e.detail;
          seen.events.push([kind, node == null ? null : String(node)]);
          if (kind === "executed" && e.detail?.output?.images?.length) seen.imaged.push(String(node)); // output previews due
        });
      // Only output nodes get "executed": a node has finished once it did, or once the server moved on past it.
      const finished = (id) => {
        const start = seen.events.findIndex(([k, n]) => k === "executing" && n === id);
        return seen.events.some(([k, n], i) => (k === "executed" && n === id) ||
          (start >= 0 && i > start && ["executing", "execution_success"].includes(k) && n !== id));
      };
      app.api.addEventListener("b_preview_with_metadata", async ({ detail }) => { // a live preview the server sent
        const node = String(detail.displayNodeId ?? detail.nodeId), executed = finished(node);
        const bitmap = await createImageBitmap(detail.blob).catch(() => null);
        seen.live.push({ node, type: detail.blob.type, width: bitmap?.width ?? null, height: bitmap?.height ?? null, executed });
      });
      const sample = () => { // each drawn frame: nodes with a progress bar (green, along the top edge)
        const canvas = app.canvas.canvas, ratio = canvas.width / canvas.clientWidth;
        for (const node of app.graph.nodes) {
          if (!(node.progress > 0)) continue;
          const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 1, node.pos[1] + 2]);
          const px = canvas.getContext("2d").getImageData(Math.round(x * ratio), Math.round(y * ratio), 1, 1).data;
          seen.progress.push({ node: String(node.id), value: node.progress, pixel: [px[0], px[1], px[2]] });
        }
        for (const node of app.graph.nodes) { // a live preview drawn on the node (a blob: image), first time seen
          const img = node.imgs?.find((i) => i.src.startsWith("blob:") && i.complete && i.naturalWidth > 0);
          if (img && !(String(node.id) in seen.shown))
            seen.shown[String(node.id)] = { width: img.naturalWidth, height: img.naturalHeight,
              executed: finished(String(node.id)) };
        }
        if (!seen.titles.includes(document.title)) seen.titles.push(document.title);
        if (!seen.done) requestAnimationFrame(sample);
      };
      requestAnimationFrame(sample);
    });
    await page.evaluate(() => app.extensionManager.command.execute("Comfy.Canvas.FitView"));
    await frames();
    await page.locator('[data-testid="queue-button"]').first().click();
    const finished = await page.waitForFunction(
      () => window.__vcdRun.events.some(([k]) => ["execution_success", "execution_error", "rejected"].includes(k)),
      null, { timeout: timeout_ms, polling: 100 }).then(() => true, () => false);
    if (finished) {
      await page.waitForFunction(() => window.__vcdRun.imaged.every((id) => app.graph.nodes.find((n) => String(n.id) === id)?.imgs?.some((img) =>
        !img.src.startsWith("blob:") && img.complete && img.naturalWidth > 0)), // each output's own image, not a live one
      null, { timeout: 30000, polling: 100 }).catch(() => null); // the test says so when no preview came
    }
    await frames(3);
    const result = await page.evaluate(() => {
      window.__vcdRun.done = true;
      const { progress, titles, events, rejected, live, shown } = window.__vcdRun;
      return {
        progress, titles, events, rejected, live, shown,
        previews: app.graph.nodes.filter((n) => n.imgs?.length).map((n) => ({
          node: String(n.id),
          images: n.imgs.map((img) => ({ src: img.src, width: img.naturalWidth, height: img.naturalHeight })),
        })),
      };
    });
    result.finished = finished;
    await page.waitForTimeout(300); // dialogs open asynchronously
    result.dialogs = await openDialogs();
    result.error_groups = await errorGroups();
    if (screenshot) await page.screenshot({ path: screenshot });
    return result;
  },

  async close() {
    return null;
  },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  let answer;
  try {
    consoleErrors.length = 0;
    if (!ops[command.op]) throw new Error(`unknown op ${command.op}`);
    answer = { ok: true, result: await ops[command.op](command) };
  } catch (error) {
    answer = { ok: false, error: String(error?.stack ?? error), console: consoleErrors.slice(-20) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (command.op === "close") break;
}
await context.close();
process.exit(0); // stdin may still be open
