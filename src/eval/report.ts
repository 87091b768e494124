// How an eval report reads on a terminal: one markdown table of metric, baseline, candidate, ratio or delta.

import type { EvalReport } from './evaluate.js';

export function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(2)} MB`;
  if (bytes >= 1e3) return `${(bytes / 1e3).toFixed(1)} kB`;
  return `${bytes} B`;
}

/** A number with enough significant digits for small divergences (0.000123) and plain ones (5.123). */
export function formatNumber(x: number, digits = 4): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  if (Math.abs(x) < 1e-3) return x.toExponential(2);
  return x.toFixed(digits);
}

const pct = (x: number, d = 2) => `${(100 * x).toFixed(d)}%`;

export function formatReportTable(r: EvalReport): string {
  const b = r.baseline;
  const c = r.candidate;
  const k = r.comparison.kld;
  const cmp = r.comparison;
  const lines: string[] = [];
  const i = r.inputs;
  const what: string[] = [];
  if (i.scoredTokens > 0) {
    what.push(
      `text: ${i.textTokens} tokens${i.textTokensAvailable > i.textTokens ? ` (of ${i.textTokensAvailable})` : ''}` +
        ` in ${i.windows} window${i.windows === 1 ? '' : 's'} of up to ${i.contextLen}, ${i.scoredTokens} scored`,
    );
  }
  if (i.tasks > 0) what.push(`${i.tasks} task${i.tasks === 1 ? '' : 's'}`);
  lines.push(what.join('; '));
  lines.push(`baseline:  ${b.model} (${b.quantization}, KV cache ${b.kvCacheDtype})`);
  lines.push(`candidate: ${c.model} (${c.quantization}, KV cache ${c.kvCacheDtype})`);
  lines.push('');
  lines.push('| metric | baseline | candidate | ratio / delta |');
  lines.push('|---|---:|---:|---:|');
  lines.push(`| weight bytes | ${formatBytes(b.weightBytes)} | ${formatBytes(c.weightBytes)} | ${(c.weightBytes / b.weightBytes).toFixed(3)}× |`);
  if (i.scoredTokens > 0) {
    lines.push(
      `| perplexity | ${formatNumber(b.perplexity)} ± ${formatNumber(b.perplexityStandardError)} | ${formatNumber(c.perplexity)} ± ${formatNumber(c.perplexityStandardError)} | ` +
        `${cmp.pplRatio.toFixed(4)}× (ln ${formatNumber(cmp.lnPplRatio)} ± ${formatNumber(cmp.lnPplRatioStandardError)}) |`,
    );
    lines.push(`| mean KLD | 0 | ${formatNumber(k.mean)} ± ${formatNumber(k.standardError)} | |`);
    lines.push(`| KLD 99th percentile | 0 | ${formatNumber(k.p99)} | |`);
    lines.push(`| KLD max | 0 | ${formatNumber(k.max)} | |`);
    lines.push(`| KLD median | 0 | ${formatNumber(k.median)} | |`);
    lines.push(`| top-1 agreement | 100% | ${pct(cmp.top1Agreement)} ± ${pct(cmp.top1AgreementStandardError)} | |`);
    lines.push(`| mean Δp (correct token) | | | ${formatNumber(100 * cmp.meanDeltaP)}% (RMS ${formatNumber(100 * cmp.rmsDeltaP)}%) |`);
  }
  if (b.accuracy !== undefined && c.accuracy !== undefined) {
    const rec = cmp.recoveryPercent === undefined ? 'recovery n/a (baseline 0)' : `recovery ${cmp.recoveryPercent.toFixed(1)}%`;
    lines.push(
      `| exact-match accuracy | ${pct(b.accuracy, 1)} (${b.correct}/${b.tasks}) | ${pct(c.accuracy, 1)} (${c.correct}/${c.tasks}) | ` +
        `${((cmp.accuracyDelta ?? 0) * 100).toFixed(1)} pts, ${rec} |`,
    );
  }
  return lines.join('\n');
}
