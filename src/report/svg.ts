// Charts as inline SVG strings, drawn on the server side with no DOM and no dependency: line and
// scatter charts (linear or log2 x axis, optional Pareto front) and grouped bar charts. Every data
// point carries its values in data-* attributes and a <title> tooltip, so a report is checkable.

export const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'];

export interface Point {
  x: number;
  y: number;
  /** Tooltip text; default "x, y". */
  label?: string;
}

export interface Series {
  name: string;
  points: Point[];
  color?: string;
  dashed?: boolean;
  /** Draw only markers (scatter), no connecting line. */
  markersOnly?: boolean;
}

export interface XYChartOptions {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
  /** 'log2' spaces powers of two evenly (concurrency sweeps); ticks then sit on the data's x values. */
  xScale?: 'linear' | 'log2';
  /** Points of a Pareto front, drawn as a highlighted line with ringed markers. */
  pareto?: Point[];
}

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Round numbers for axis ticks covering [min, max]: 1, 2, 2.5 or 5 × 10^k steps; the last tick ≥ max. */
export function niceTicks(min: number, max: number, target = 5): number[] {
  if (!(max > min)) max = min + (min === 0 ? 1 : Math.abs(min));
  const raw = (max - min) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const start = Math.floor(min / step) * step;
  const ticks: number[] = [];
  for (let v = start; v < max + step * 1e-9; v += step) ticks.push(roundTo(v, step));
  if (ticks[ticks.length - 1]! < max) ticks.push(roundTo(ticks[ticks.length - 1]! + step, step));
  return ticks;
}

function roundTo(v: number, step: number): number {
  const decimals = Math.max(0, -Math.floor(Math.log10(step)) + 2);
  return Number(v.toFixed(decimals));
}

/** Compact tick text: 12000 → "12k", 0.25 → "0.25". */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function trim(v: number): string {
  return String(Number(v.toFixed(3)));
}

/** Value text for tooltips and tables. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

const MARGIN = { left: 64, right: 16, top: 40, bottom: 70 };

/** A line or scatter chart. */
export function xyChart(o: XYChartOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 340;
  const pw = W - MARGIN.left - MARGIN.right;
  const ph = H - MARGIN.top - MARGIN.bottom;
  const all = o.series.flatMap((s) => s.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const log = o.xScale === 'log2' && xs.length > 0 && xs.every((x) => x > 0);
  const tx = (x: number) => (log ? Math.log2(x) : x);

  const xMinRaw = xs.length ? Math.min(...xs) : 0;
  const xMaxRaw = xs.length ? Math.max(...xs) : 1;
  let xTicks: number[];
  let xLo: number;
  let xHi: number;
  if (log) {
    xTicks = [...new Set(xs)].sort((a, b) => a - b);
    xLo = tx(xMinRaw);
    xHi = tx(xMaxRaw);
    if (xHi === xLo) {
      xLo -= 1;
      xHi += 1;
    }
    const padX = (xHi - xLo) * 0.06;
    xLo -= padX;
    xHi += padX;
  } else {
    xTicks = niceTicks(Math.min(0, xMinRaw), xMaxRaw);
    xLo = xTicks[0]!;
    xHi = xTicks[xTicks.length - 1]!;
  }
  const yTicks = niceTicks(Math.min(0, ...ys), ys.length ? Math.max(...ys) : 1);
  const yLo = yTicks[0]!;
  const yHi = yTicks[yTicks.length - 1]!;
  const px = (x: number) => MARGIN.left + ((tx(x) - xLo) / (xHi - xLo)) * pw;
  const py = (y: number) => MARGIN.top + ph - ((y - yLo) / (yHi - yLo)) * ph;

  const parts: string[] = [];
  parts.push(`<text class="chart-title" x="${W / 2}" y="20" text-anchor="middle">${escapeXml(o.title)}</text>`);
  // Grid and axes.
  parts.push('<g class="axis y-axis">');
  for (const t of yTicks) {
    const y = py(t).toFixed(1);
    parts.push(`<line class="grid" x1="${MARGIN.left}" x2="${MARGIN.left + pw}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="tick-label y-tick" data-value="${t}" x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${formatTick(t)}</text>`);
  }
  parts.push('</g><g class="axis x-axis">');
  for (const t of xTicks) {
    const x = px(t).toFixed(1);
    parts.push(`<line class="tick" x1="${x}" x2="${x}" y1="${MARGIN.top + ph}" y2="${MARGIN.top + ph + 5}"/>`);
    parts.push(`<text class="tick-label x-tick" data-value="${t}" x="${x}" y="${MARGIN.top + ph + 18}" text-anchor="middle">${formatTick(t)}</text>`);
  }
  parts.push('</g>');
  parts.push(`<rect class="frame" x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}"/>`);
  parts.push(`<text class="axis-label" x="${MARGIN.left + pw / 2}" y="${MARGIN.top + ph + 38}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  parts.push(`<text class="axis-label" transform="translate(16 ${MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);

  if (o.pareto && o.pareto.length > 0) {
    const sorted = [...o.pareto].sort((a, b) => a.x - b.x);
    const d = sorted.map((p, i) => `${i ? 'L' : 'M'}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ');
    parts.push(`<path class="pareto-front" d="${d}" fill="none" stroke="#111827" stroke-width="1.5" stroke-dasharray="2 3"/>`);
    for (const p of sorted) parts.push(`<circle class="pareto" cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="8" fill="none" stroke="#111827" stroke-width="1.5"/>`);
  }

  o.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    parts.push(`<g class="series" data-series="${escapeXml(s.name)}">`);
    if (!s.markersOnly && pts.length > 1) {
      const d = pts.map((p, j) => `${j ? 'L' : 'M'}${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(' ');
      parts.push(`<path class="line" d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    for (const p of pts) {
      const tip = p.label ?? `${s.name}: ${formatValue(p.x)}, ${formatValue(p.y)}`;
      parts.push(`<circle class="point" data-series="${escapeXml(s.name)}" data-x="${p.x}" data-y="${p.y}" cx="${px(p.x).toFixed(1)}" cy="${py(p.y).toFixed(1)}" r="4" fill="${s.dashed ? '#fff' : color}" stroke="${color}" stroke-width="1.5"><title>${escapeXml(tip)}</title></circle>`);
    }
    parts.push('</g>');
  });
  const leg = legend(o.series.map((s, i) => ({ name: s.name, color: s.color ?? PALETTE[i % PALETTE.length]!, dashed: s.dashed })), W, H, o.pareto && o.pareto.length > 0);
  parts.push(leg.svg);
  return svgRoot(o.id, o.title, W, H + leg.extraHeight, parts);
}

function legend(items: { name: string; color: string; dashed?: boolean }[], W: number, H: number, pareto?: boolean): { svg: string; extraHeight: number } {
  const parts: string[] = ['<g class="legend">'];
  let x = MARGIN.left;
  let y = H - 14;
  const put = (label: string, swatch: string) => {
    const w = 26 + label.length * 6.2;
    if (x + w > W - MARGIN.right && x > MARGIN.left) {
      x = MARGIN.left;
      y += 15;
    }
    parts.push(`<g class="legend-item" transform="translate(${x.toFixed(1)} ${y})">${swatch}<text x="20" y="4">${escapeXml(label)}</text></g>`);
    x += w + 8;
  };
  for (const it of items) put(it.name, `<line x1="0" x2="16" y1="0" y2="0" stroke="${it.color}" stroke-width="2"${it.dashed ? ' stroke-dasharray="4 3"' : ''}/><circle cx="8" cy="0" r="3" fill="${it.dashed ? '#fff' : it.color}" stroke="${it.color}"/>`);
  if (pareto) put('Pareto front', '<circle cx="8" cy="0" r="5" fill="none" stroke="#111827" stroke-width="1.5"/>');
  parts.push('</g>');
  return { svg: parts.join(''), extraHeight: y - (H - 14) };
}

/** The <svg> element around a chart body, tall enough for its legend. */
function svgRoot(id: string, title: string, W: number, H: number, body: string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="${escapeXml(id)}" data-chart="${escapeXml(id)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeXml(title)}">${body.join('')}</svg>`;
}

export interface BarChartOptions {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  /** Category labels along x (e.g. draft positions). */
  categories: string[];
  /** One bar per series in every category; values[i] belongs to categories[i] (undefined = no bar). */
  series: { name: string; values: (number | undefined)[]; color?: string }[];
  width?: number;
  height?: number;
  /** Fixed top of the y axis (e.g. 100 for percentages). */
  yMax?: number;
  /** Format of bar tooltips' values. */
  unit?: string;
}

/** A grouped bar chart. */
export function barChart(o: BarChartOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 340;
  const pw = W - MARGIN.left - MARGIN.right;
  const ph = H - MARGIN.top - MARGIN.bottom;
  const values = o.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined));
  const yTicks = niceTicks(0, Math.max(o.yMax ?? 0, ...values, 1e-9));
  const yHi = yTicks[yTicks.length - 1]!;
  const py = (y: number) => MARGIN.top + ph - (y / yHi) * ph;
  const groupW = pw / Math.max(1, o.categories.length);
  const barW = Math.max(2, (groupW * 0.8) / Math.max(1, o.series.length));

  const parts: string[] = [];
  parts.push(`<text class="chart-title" x="${W / 2}" y="20" text-anchor="middle">${escapeXml(o.title)}</text>`);
  parts.push('<g class="axis y-axis">');
  for (const t of yTicks) {
    const y = py(t).toFixed(1);
    parts.push(`<line class="grid" x1="${MARGIN.left}" x2="${MARGIN.left + pw}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="tick-label y-tick" data-value="${t}" x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${formatTick(t)}</text>`);
  }
  parts.push('</g><g class="axis x-axis">');
  o.categories.forEach((c, i) => {
    parts.push(`<text class="tick-label x-tick" x="${(MARGIN.left + groupW * (i + 0.5)).toFixed(1)}" y="${MARGIN.top + ph + 18}" text-anchor="middle">${escapeXml(c)}</text>`);
  });
  parts.push('</g>');
  parts.push(`<rect class="frame" x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}"/>`);
  parts.push(`<text class="axis-label" x="${MARGIN.left + pw / 2}" y="${MARGIN.top + ph + 38}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  parts.push(`<text class="axis-label" transform="translate(16 ${MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  o.series.forEach((s, si) => {
    const color = s.color ?? PALETTE[si % PALETTE.length]!;
    parts.push(`<g class="series" data-series="${escapeXml(s.name)}">`);
    s.values.forEach((v, ci) => {
      if (v === undefined) return;
      const x = MARGIN.left + groupW * ci + groupW * 0.1 + barW * si;
      const y = py(v);
      parts.push(
        `<rect class="bar" data-series="${escapeXml(s.name)}" data-category="${escapeXml(o.categories[ci]!)}" data-value="${v}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${(MARGIN.top + ph - y).toFixed(1)}" fill="${color}"><title>${escapeXml(`${s.name}, ${o.categories[ci]}: ${formatValue(v)}${o.unit ?? ''}`)}</title></rect>`,
      );
    });
    parts.push('</g>');
  });
  const leg = legend(o.series.map((s, i) => ({ name: s.name, color: s.color ?? PALETTE[i % PALETTE.length]! })), W, H);
  parts.push(leg.svg);
  return svgRoot(o.id, o.title, W, H + leg.extraHeight, parts);
}

/**
 * The Pareto front of points maximizing both x and y (vLLM's plot_pareto rule): sweep from the
 * largest x down, keeping each point whose y is at least the best y seen so far.
 */
export function paretoFront<T extends { x: number; y: number }>(points: readonly T[], epsilon = 1e-9): T[] {
  const sorted = [...points].sort((a, b) => b.x - a.x || b.y - a.y);
  const front: T[] = [];
  let best = -Infinity;
  for (const p of sorted) {
    if (p.y >= best - epsilon) {
      front.push(p);
      best = Math.max(best, p.y);
    }
  }
  return front;
}
