// The 3D Gaussian noise prior as a picture: how much noise frame 1 shares with every later frame.
// Pure drawing helpers with no ComfyUI imports, so they can be tested with plain node.

/** Correlation of frame 1's starting noise with frames 1..frames: gamma^|i-j| (gamma^0 = 1). */
export function correlations(gamma, frames = 16) {
  return Array.from({ length: frames }, (_, k) => Math.pow(gamma, k));
}

/** The smallest frame distance k with gamma^k under 1%, for 0 < gamma < 1 (however close to 1). */
export function reach(gamma) {
  let k = Math.max(1, Math.floor(Math.log(0.01) / Math.log(gamma))); // never past the answer
  while (Math.pow(gamma, k) >= 0.01) k += 1; // one or two steps
  return k;
}

/** One line an artist can read: what gamma does to neighbouring frames. */
export function describe(gamma) {
  if (gamma <= 0) return "gamma 0: every frame starts from its own noise (i.i.d.)";
  if (gamma >= 1) return "gamma 1: every frame starts from the same noise (a still image)";
  return `neighbours share ${Math.round(gamma * 100)}% of their noise; ` +
    `under 1% from ${reach(gamma)} frames apart`;
}

/** Bars of gamma^k for k = 0..frames-1 inside the box (x, y, width, height), then the caption. */
export function drawGammaChart(ctx, x, y, width, height, gamma, frames = 16) {
  const values = correlations(gamma, frames);
  const captionHeight = 14;
  const plotHeight = height - captionHeight - 4;
  const barWidth = width / frames;
  ctx.fillStyle = "#222";
  ctx.fillRect(x, y, width, plotHeight);
  ctx.fillStyle = "#6a9fd8";
  values.forEach((value, k) => {
    const barHeight = Math.max(1, value * (plotHeight - 2));
    ctx.fillRect(x + k * barWidth + 1, y + plotHeight - barHeight, Math.max(1, barWidth - 2), barHeight);
  });
  ctx.fillStyle = "#bbb";
  ctx.font = "11px sans-serif";
  ctx.fillText(describe(gamma), x, y + height - 3, width);
  return values;
}
