// A minimal Prometheus registry and text exposition (format 0.0.4): counters, gauges and
// histograms with labels. Enough for /metrics without a dependency; values either observed as
// things happen or read from a callback at scrape time.

type Labels = Record<string, string>;

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labelText = (labels: Labels): string => {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};
const num = (v: number): string => (v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : Number.isNaN(v) ? 'NaN' : String(v));

interface Metric {
  render(): string;
}

abstract class Scalar implements Metric {
  protected readonly values = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    /** Read at scrape time instead of observed; returns label sets and values. */
    private readonly collect?: () => Array<{ labels: Labels; value: number }>,
  ) {}

  protected entry(labels: Labels) {
    const key = labelText(labels);
    let e = this.values.get(key);
    if (!e) this.values.set(key, (e = { labels, value: 0 }));
    return e;
  }

  render(): string {
    const rows = this.collect ? this.collect() : [...this.values.values()];
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    for (const r of rows) lines.push(`${this.name}${labelText(r.labels)} ${num(r.value)}`);
    return lines.join('\n');
  }
}

export class Counter extends Scalar {
  constructor(name: string, help: string, collect?: () => Array<{ labels: Labels; value: number }>) {
    super(name, help, 'counter', collect);
  }

  inc(labels: Labels, by = 1): void {
    this.entry(labels).value += by;
  }
}

export class Gauge extends Scalar {
  constructor(name: string, help: string, collect?: () => Array<{ labels: Labels; value: number }>) {
    super(name, help, 'gauge', collect);
  }

  set(labels: Labels, value: number): void {
    this.entry(labels).value = value;
  }
}

export class Histogram implements Metric {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    /** Upper bounds, ascending; +Inf is implied. */
    readonly buckets: number[],
  ) {}

  /** Make a label set appear (at zero) before anything is observed. */
  touch(labels: Labels): void {
    this.entry(labels);
  }

  observe(labels: Labels, value: number): void {
    const s = this.entry(labels);
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  private entry(labels: Labels) {
    const key = labelText(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }));
    return s;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((le, i) => lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: num(le) })} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${num(s.sum)}`);
      lines.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines.join('\n');
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  register<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  /** The text exposition, as served with content type PROMETHEUS_CONTENT_TYPE. */
  render(): string {
    return this.metrics.map((m) => m.render()).join('\n') + '\n';
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
