// Speculative-decoding acceptance from a server's Prometheus /metrics, scraped before and after a
// run: the vllm:spec_decode_* counters (summed over label sets), their deltas, and the acceptance
// rate, mean acceptance length and per-position acceptance that `vllm bench serve` reports.

/** The spec-decode counters at one instant. */
export interface SpecDecodeCounters {
  numDrafts: number;
  numDraftTokens: number;
  numAcceptedTokens: number;
  /** Accepted tokens per draft position k (0-based). */
  acceptedPerPos: Map<number, number>;
}

/** What a run's deltas say (result keys spec_decode_*). */
export interface SpecDecodeStats {
  numDrafts: number;
  draftTokens: number;
  acceptedTokens: number;
  /** 100 × accepted / draft tokens. */
  acceptanceRate: number;
  /** 1 + accepted / drafts (the +1 is the token the target adds to every verify step). */
  acceptanceLength: number;
  /** accepted at position k / drafts, for k = 0.. */
  perPositionAcceptanceRates: number[];
}

/**
 * Read the vllm:spec_decode counters out of Prometheus text the way vLLM's bench does: lines whose
 * metric name starts with vllm:spec_decode and ends in _total, values summed over label sets.
 * Undefined when the server exposes none (no speculative decoding).
 */
export function parseSpecDecodeCounters(text: string): SpecDecodeCounters | undefined {
  const c: SpecDecodeCounters = { numDrafts: 0, numDraftTokens: 0, numAcceptedTokens: 0, acceptedPerPos: new Map() };
  let found = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || !line.startsWith('vllm:spec_decode')) continue;
    const sample = parseSampleLine(line);
    if (!sample || !sample.name.endsWith('_total')) continue;
    found = true;
    const v = Math.trunc(sample.value);
    if (!Number.isFinite(v)) continue;
    if (sample.name.includes('num_drafts')) c.numDrafts += v;
    else if (sample.name.includes('num_draft_tokens')) c.numDraftTokens += v;
    else if (sample.name.includes('num_accepted_tokens_per_pos')) {
      const pos = Number(sample.labels.position);
      if (Number.isInteger(pos)) c.acceptedPerPos.set(pos, (c.acceptedPerPos.get(pos) ?? 0) + v);
    } else if (sample.name.includes('num_accepted_tokens')) c.numAcceptedTokens += v;
  }
  return found ? c : undefined;
}

/** Deltas between two scrapes; undefined unless draft tokens were proposed during the run. */
export function specDecodeDelta(before: SpecDecodeCounters | undefined, after: SpecDecodeCounters | undefined): SpecDecodeStats | undefined {
  if (!before || !after) return undefined;
  const drafts = after.numDrafts - before.numDrafts;
  const draftTokens = after.numDraftTokens - before.numDraftTokens;
  const accepted = after.numAcceptedTokens - before.numAcceptedTokens;
  if (!(draftTokens > 0)) return undefined;
  const perPos: number[] = [];
  if (drafts > 0) {
    const positions = [...new Set([...before.acceptedPerPos.keys(), ...after.acceptedPerPos.keys()])].sort((a, b) => a - b);
    for (const pos of positions) {
      const b = before.acceptedPerPos.get(pos) ?? 0;
      const a = after.acceptedPerPos.get(pos) ?? b;
      perPos.push((a - b) / drafts);
    }
  }
  return {
    numDrafts: drafts,
    draftTokens,
    acceptedTokens: accepted,
    acceptanceRate: (accepted / draftTokens) * 100,
    acceptanceLength: drafts > 0 ? 1 + accepted / drafts : 0,
    perPositionAcceptanceRates: perPos,
  };
}

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One exposition line `name{a="b",...} value [timestamp]`; undefined if it is not one. */
export function parseSampleLine(line: string): PromSample | undefined {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$/.exec(line.trim());
  if (!m) return undefined;
  const labels: Record<string, string> = {};
  const body = m[3] ?? '';
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
  for (const lm of body.matchAll(re)) labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, ch: string) => (ch === 'n' ? '\n' : ch));
  const value = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : Number(m[4]);
  if (Number.isNaN(value) && m[4] !== 'NaN') return undefined;
  return { name: m[1]!, labels, value };
}
