// `tachyon report`: benchmark result files (one run, a sweep's list, or vLLM's JSONL) turned into
// one self-contained HTML page — inline CSS and SVG, no scripts, nothing fetched — with throughput
// vs concurrency, latency percentiles, per-position speculative acceptance and a configuration
// comparison (output tok/s against per-user tok/s, Pareto front marked).

import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { InvalidRequestError } from '../errors.js';
import { barChart, escapeXml, formatValue, PALETTE, paretoFront, xyChart, type Series } from './svg.js';

/** One benchmark run and where it came from. */
export interface RunRecord {
  source: string;
  /** Configuration name (sweep x_config.name, else the label, else the model). */
  config: string;
  /** Client concurrency (max_concurrency, else the observed peak). */
  concurrency: number;
  result: Record<string, unknown>;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Runs out of parsed JSON: an object (one run) or a list of them. */
export function toRunRecords(raw: unknown, source: string): RunRecord[] {
  const items = Array.isArray(raw) ? raw : [raw];
  return items.map((r, i) => {
    if (typeof r !== 'object' || r === null || num((r as Record<string, unknown>).output_throughput) === undefined) {
      throw new InvalidRequestError(`${source}${Array.isArray(raw) ? `[${i}]` : ''}: not a benchmark result (no output_throughput); expected \`tachyon bench serve --save-result\` or \`vllm bench serve\` output`);
    }
    const res = r as Record<string, unknown>;
    const xc = res.x_config as { name?: unknown } | undefined;
    const model = typeof res.model_id === 'string' ? (res.model_id.split('/').filter(Boolean).pop() ?? res.model_id) : 'model';
    const config = typeof xc?.name === 'string' ? xc.name : typeof res.label === 'string' && res.label ? res.label : model;
    const concurrency = num(res.max_concurrency) ?? num(res.max_concurrent_requests) ?? 1;
    return { source, config, concurrency, result: res };
  });
}

/** Read result files: JSON (object or list) or JSONL (vLLM's --append-result). */
export function loadResultFiles(paths: string[]): RunRecord[] {
  if (paths.length === 0) throw new InvalidRequestError('give at least one result file');
  const runs: RunRecord[] = [];
  for (const p of paths) {
    let text: string;
    try {
      text = readFileSync(p, 'utf8');
    } catch (err) {
      throw new InvalidRequestError(`${p}: cannot read (${(err as Error).message})`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      try {
        parsed = text
          .split('\n')
          .filter((l) => l.trim())
          .map((l) => JSON.parse(l) as unknown);
      } catch (err) {
        throw new InvalidRequestError(`${p}: neither JSON nor JSON lines (${(err as Error).message})`);
      }
    }
    runs.push(...toRunRecords(parsed, basename(p)));
  }
  return runs;
}

/** Output tokens per second per user: output throughput / concurrency (vLLM's plot_pareto definition). */
export function perUserTokensPerSecond(r: RunRecord): number {
  return (num(r.result.output_throughput) ?? 0) / Math.max(1, r.concurrency);
}

const METRICS = [
  ['ttft', 'Time to first token (TTFT)'],
  ['tpot', 'Time per output token (TPOT)'],
  ['itl', 'Inter-token latency (ITL)'],
  ['e2el', 'End-to-end latency (E2EL)'],
] as const;

/** Statistic keys present for a metric, e.g. ["median", "p99"] (mean is in the table). */
function statKeys(runs: RunRecord[], metric: string): string[] {
  const keys = new Set<string>();
  for (const r of runs) {
    for (const k of Object.keys(r.result)) {
      const m = new RegExp(`^(median|p[0-9.]+)_${metric}_ms$`).exec(k);
      if (m) keys.add(m[1]!);
    }
  }
  return [...keys].sort((a, b) => (a === 'median' ? -1 : b === 'median' ? 1 : Number(a.slice(1)) - Number(b.slice(1))));
}

function groupByConfig(runs: RunRecord[]): Map<string, RunRecord[]> {
  const m = new Map<string, RunRecord[]>();
  for (const r of runs) {
    const list = m.get(r.config) ?? [];
    list.push(r);
    m.set(r.config, list);
  }
  return m;
}

export interface ReportOptions {
  title?: string;
  generatedAt?: Date;
}

export function renderReport(runs: RunRecord[], opts: ReportOptions = {}): string {
  if (runs.length === 0) throw new InvalidRequestError('no runs to report');
  const title = opts.title ?? 'tachyon benchmark report';
  const byConfig = groupByConfig(runs);
  const xs = runs.map((r) => r.concurrency);
  const xScale = Math.max(...xs) / Math.max(1, Math.min(...xs)) >= 4 ? 'log2' : 'linear';
  const charts: string[] = [];

  // Throughput vs concurrency.
  charts.push(
    figure(
      xyChart({
        id: 'throughput',
        title: 'Output token throughput vs concurrency',
        xLabel: 'max concurrency',
        yLabel: 'output tokens/s',
        xScale,
        series: [...byConfig].map(([name, rs]) => ({
          name,
          points: rs.map((r) => ({ x: r.concurrency, y: num(r.result.output_throughput) ?? 0, label: `${name} @ ${r.concurrency}: ${formatValue(num(r.result.output_throughput) ?? 0)} tok/s` })),
        })),
      }),
      'Output tokens per second summed over all requests, at each client concurrency.',
    ),
  );

  // Latency percentiles per metric.
  for (const [metric, label] of METRICS) {
    const stats = statKeys(runs, metric);
    if (stats.length === 0) continue;
    const series: Series[] = [];
    [...byConfig].forEach(([name, rs], ci) => {
      stats.forEach((stat, si) => {
        const pts = rs.filter((r) => num(r.result[`${stat}_${metric}_ms`]) !== undefined).map((r) => ({ x: r.concurrency, y: num(r.result[`${stat}_${metric}_ms`])!, label: `${name} @ ${r.concurrency}: ${stat} ${formatValue(num(r.result[`${stat}_${metric}_ms`])!)} ms` }));
        if (pts.length) series.push({ name: `${name} ${stat === 'median' ? 'median' : stat.toUpperCase()}`, points: pts, dashed: si > 0, color: PALETTE[ci % PALETTE.length] });
      });
    });
    charts.push(figure(xyChart({ id: `latency-${metric}`, title: `${label} vs concurrency`, xLabel: 'max concurrency', yLabel: 'milliseconds', xScale, series }), `Median (solid) and ${stats.filter((s) => s !== 'median').map((s) => s.toUpperCase()).join(', ') || 'no'} percentile (dashed), per configuration.`));
  }

  // Per-position acceptance.
  const specRuns = runs.filter((r) => Array.isArray(r.result.spec_decode_per_position_acceptance_rates) && (r.result.spec_decode_per_position_acceptance_rates as unknown[]).length > 0);
  if (specRuns.length > 0) {
    const k = Math.max(...specRuns.map((r) => (r.result.spec_decode_per_position_acceptance_rates as unknown[]).length));
    charts.push(
      figure(
        barChart({
          id: 'acceptance',
          title: 'Speculative decoding: acceptance per draft position',
          xLabel: 'draft position',
          yLabel: 'accepted (% of drafts)',
          categories: Array.from({ length: k }, (_, i) => String(i + 1)),
          yMax: 100,
          unit: '%',
          series: specRuns.map((r) => {
            const rates = r.result.spec_decode_per_position_acceptance_rates as number[];
            const len = num(r.result.spec_decode_acceptance_length);
            return { name: `${r.config} @ ${r.concurrency}${len !== undefined ? ` (τ ${len.toFixed(2)})` : ''}`, values: Array.from({ length: k }, (_, i) => (rates[i] !== undefined ? rates[i]! * 100 : undefined)) };
          }),
        }),
        'Share of drafts whose token at each position was accepted (vllm:spec_decode_num_accepted_tokens_per_pos_total / drafts); τ is the mean acceptance length.',
      ),
    );
  }

  // Configuration comparison with the Pareto front.
  const pts = runs.map((r) => ({ x: perUserTokensPerSecond(r), y: num(r.result.output_throughput) ?? 0, run: r }));
  const front = paretoFront(pts);
  const frontSet = new Set(front.map((p) => p.run));
  charts.push(
    figure(
      xyChart({
        id: 'pareto',
        title: 'Configurations: throughput vs per-user speed',
        xLabel: 'per-user output tokens/s (throughput / concurrency)',
        yLabel: 'output tokens/s',
        series: [...byConfig].map(([name, rs]) => ({
          name,
          markersOnly: true,
          points: rs.map((r) => ({ x: perUserTokensPerSecond(r), y: num(r.result.output_throughput) ?? 0, label: `${name} @ ${r.concurrency}: ${formatValue(num(r.result.output_throughput) ?? 0)} tok/s, ${formatValue(perUserTokensPerSecond(r))} tok/s/user${frontSet.has(r) ? ' (Pareto front)' : ''}` })),
        })),
        pareto: front.map((p) => ({ x: p.x, y: p.y })),
      }),
      'Each point is one run. Ringed points are on the Pareto front: no other run is both faster per user and higher in total throughput.',
    ),
  );

  return page(title, runs, charts, frontSet, opts.generatedAt ?? new Date());
}

function figure(svg: string, caption: string): string {
  return `<figure>${svg}<figcaption>${escapeXml(caption)}</figcaption></figure>`;
}

function cell(v: unknown, digits = 2): string {
  const n = num(v);
  return n === undefined ? '–' : n.toFixed(digits);
}

function page(title: string, runs: RunRecord[], charts: string[], front: Set<RunRecord>, generatedAt: Date): string {
  const models = [...new Set(runs.map((r) => String(r.result.model_id ?? '?')))];
  const machines = [...new Set(runs.map((r) => {
    const m = r.result.x_machine as { hostname?: string; cpu?: string; cores?: number } | undefined;
    return m ? `${m.hostname ?? '?'} (${m.cpu ?? '?'}, ${m.cores ?? '?'} cores)` : undefined;
  }).filter((x): x is string => x !== undefined))];
  const datasets = [...new Set(runs.map((r) => {
    const d = r.result.x_dataset as Record<string, unknown> | undefined;
    if (!d) return undefined;
    const parts = [String(d.name)];
    if (d.input_len !== undefined) parts.push(`input ${String(d.input_len)}`);
    if (d.output_len !== undefined && d.output_len !== null) parts.push(`output ${String(d.output_len)}`);
    return parts.join(', ');
  }).filter((x): x is string => x !== undefined))];
  const dates = [...new Set(runs.map((r) => String(r.result.date ?? '')).filter(Boolean))].sort();
  const sorted = [...runs].sort((a, b) => a.config.localeCompare(b.config) || a.concurrency - b.concurrency);
  const rows = sorted
    .map((r) => {
      const x = r.result;
      return `<tr${front.has(r) ? ' class="on-front"' : ''}><td>${escapeXml(r.config)}</td><td>${r.concurrency}</td><td>${cell(x.completed, 0)} / ${cell(x.failed, 0)}</td><td>${cell(x.request_throughput)}</td><td>${cell(x.output_throughput, 1)}</td><td>${perUserTokensPerSecond(r).toFixed(2)}</td><td>${cell(x.mean_ttft_ms)}</td><td>${cell(x.median_tpot_ms)}</td><td>${cell(x.p99_itl_ms)}</td><td>${cell(x.spec_decode_acceptance_length)}</td><td>${front.has(r) ? '●' : ''}</td></tr>`;
    })
    .join('\n');
  const meta = [
    ['Model', models.join(', ')],
    ['Runs', `${runs.length} (${[...new Set(runs.map((r) => r.config))].length} configuration${new Set(runs.map((r) => r.config)).size === 1 ? '' : 's'})`],
    ['Dataset', datasets.join('; ') || '–'],
    ['Machine', machines.join('; ') || '–'],
    ['Dates', dates.length ? `${dates[0]}${dates.length > 1 ? ` … ${dates[dates.length - 1]}` : ''}` : '–'],
    ['Sources', [...new Set(runs.map((r) => r.source))].join(', ')],
  ]
    .map(([k, v]) => `<tr><th>${escapeXml(k!)}</th><td>${escapeXml(v!)}</td></tr>`)
    .join('');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeXml(title)}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; margin: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #6b7280; margin-bottom: 16px; }
table { border-collapse: collapse; }
table.meta th { text-align: left; padding: 2px 16px 2px 0; color: #374151; font-weight: 600; }
table.runs th, table.runs td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; white-space: nowrap; }
table.runs th:first-child, table.runs td:first-child { text-align: left; }
table.runs tr.on-front td { background: #f0f9ff; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px; }
figcaption { color: #6b7280; font-size: 12px; max-width: 560px; }
svg.chart { display: block; font: 11px system-ui, sans-serif; }
svg .chart-title { font-size: 13px; font-weight: 600; fill: #111827; }
svg .grid { stroke: #e5e7eb; }
svg .frame { fill: none; stroke: #9ca3af; }
svg .tick { stroke: #9ca3af; }
svg .tick-label, svg .legend text { fill: #374151; }
svg .axis-label { fill: #374151; font-size: 12px; }
</style>
</head>
<body>
<h1>${escapeXml(title)}</h1>
<div class="sub">Generated ${escapeXml(generatedAt.toISOString())} by tachyon report · metrics as defined by <code>vllm bench serve</code></div>
<table class="meta">${meta}</table>
<h2>Charts</h2>
<div class="charts">
${charts.join('\n')}
</div>
<h2>Runs</h2>
<table class="runs">
<thead><tr><th>configuration</th><th>concurrency</th><th>completed / failed</th><th>req/s</th><th>output tok/s</th><th>tok/s per user</th><th>mean TTFT ms</th><th>median TPOT ms</th><th>P99 ITL ms</th><th>acceptance length</th><th>Pareto</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</body>
</html>
`;
}
