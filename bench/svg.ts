// A small SVG chart generator for bench/RESULTS.md: grouped bars (switchboard vs raw per category) and line
// charts (per-second series). Self-contained text, no dependency: the charts are simple and must render on
// any Markdown viewer that shows images.

const COLORS = ["#2b6cb0", "#a0aec0", "#dd6b20", "#38a169"];
const W = 640;
const H = 300;
const PAD = { left: 70, right: 20, top: 40, bottom: 60 };

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const num = (x: number) => (x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(x >= 10 ? 1 : 2));
/** Axis ticks stay short so they never run into the axis title: 1.6M, 540k, 17.4k, 12.5. */
const tick = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(1)}M` : x >= 1e4 ? `${(x / 1e3).toFixed(x >= 1e5 ? 0 : 1)}k` : num(x));

function frame(title: string, body: string, legend: string[]): string {
  const items = legend
    .map((name, i) => `<rect x="${PAD.left + i * 150}" y="${H - 22}" width="12" height="12" fill="${COLORS[i]}"/><text x="${PAD.left + i * 150 + 18}" y="${H - 12}">${esc(name)}</text>`)
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">
<rect width="${W}" height="${H}" fill="white"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>
${body}
${items}
</svg>
`;
}

function axis(maxY: number, unit: string): { y: (v: number) => string; grid: string } {
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v: number) => (PAD.top + plotH - (v / maxY) * plotH).toFixed(1);
  let grid = "";
  for (let i = 0; i <= 4; i++) {
    const v = (maxY * i) / 4;
    grid += `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(v)}" y2="${y(v)}" stroke="#e2e8f0"/><text x="${PAD.left - 6}" y="${Number(y(v)) + 4}" text-anchor="end">${tick(v)}</text>`;
  }
  grid += `<text x="14" y="${PAD.top + plotH / 2}" transform="rotate(-90 14 ${PAD.top + plotH / 2})" text-anchor="middle">${esc(unit)}</text>`;
  return { y, grid };
}

/** Bars per category, one per series (e.g. switchboard and raw Bun), labelled with their values. */
export function barChart(title: string, unit: string, categories: string[], series: { name: string; values: number[] }[]): string {
  const maxY = Math.max(1e-9, ...series.flatMap((s) => s.values)) * 1.15;
  const { y, grid } = axis(maxY, unit);
  const plotW = W - PAD.left - PAD.right;
  const groupW = plotW / categories.length;
  const barW = Math.min(60, (groupW * 0.7) / series.length);
  let body = grid;
  categories.forEach((category, c) => {
    const x0 = PAD.left + c * groupW + (groupW - barW * series.length) / 2;
    series.forEach((s, i) => {
      const v = s.values[c] ?? 0;
      const x = x0 + i * barW;
      body += `<rect x="${x.toFixed(1)}" y="${y(v)}" width="${(barW - 4).toFixed(1)}" height="${(H - PAD.bottom - Number(y(v))).toFixed(1)}" fill="${COLORS[i]}"/>`;
      body += `<text x="${(x + barW / 2 - 2).toFixed(1)}" y="${Number(y(v)) - 4}" text-anchor="middle" font-size="10">${num(v)}</text>`;
    });
    body += `<text x="${(PAD.left + c * groupW + groupW / 2).toFixed(1)}" y="${H - PAD.bottom + 16}" text-anchor="middle">${esc(category)}</text>`;
  });
  return frame(title, body, series.map((s) => s.name));
}

/** Lines over x (e.g. seconds of a soak), one per series. */
export function lineChart(title: string, unit: string, xLabel: string, series: { name: string; points: [number, number][] }[]): string {
  const maxY = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.15;
  const maxX = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const { y, grid } = axis(maxY, unit);
  const plotW = W - PAD.left - PAD.right;
  const x = (v: number) => (PAD.left + (v / maxX) * plotW).toFixed(1);
  let body = grid;
  series.forEach((s, i) => {
    const d = s.points.map(([px, py], k) => `${k ? "L" : "M"}${x(px)},${y(py)}`).join(" ");
    body += `<path d="${d}" fill="none" stroke="${COLORS[i]}" stroke-width="2"/>`;
  });
  for (let i = 0; i <= 4; i++) {
    const v = (maxX * i) / 4;
    body += `<text x="${x(v)}" y="${H - PAD.bottom + 16}" text-anchor="middle">${tick(v)}</text>`;
  }
  body += `<text x="${PAD.left + plotW / 2}" y="${H - PAD.bottom + 32}" text-anchor="middle">${esc(xLabel)}</text>`;
  return frame(title, body, series.map((s) => s.name));
}
