// A progress bar on stderr for long benchmark runs: redrawn in place on a terminal, a plain line at
// every quarter when stderr is a file or a pipe (so logs stay readable), nothing when disabled.

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class ProgressBar {
  private done = 0;
  private lastDraw = 0;
  private lastQuarter = 0;
  private readonly started = performance.now();

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: ProgressStream = process.stderr,
    private readonly enabled = true,
  ) {
    if (enabled && out.isTTY) this.draw();
  }

  /** Mark `n` more items done. */
  tick(n = 1): void {
    this.done = Math.min(this.total, this.done + n);
    if (!this.enabled) return;
    if (this.out.isTTY) {
      // Redraw at most every 50 ms, and always at the end.
      const t = performance.now();
      if (t - this.lastDraw >= 50 || this.done === this.total) this.draw();
      return;
    }
    const quarter = Math.floor((this.done / this.total) * 4);
    if (quarter > this.lastQuarter) {
      this.lastQuarter = quarter;
      this.out.write(`${this.label}: ${this.done}/${this.total} (${this.elapsed()})\n`);
    }
  }

  /** End the bar's line on a terminal. */
  finish(): void {
    if (this.enabled && this.out.isTTY) {
      this.draw();
      this.out.write('\n');
    }
  }

  /** The bar's text, e.g. "benchmark |█████     | 5/10 [00:02, 2.31 it/s]". */
  render(width = this.out.columns ?? 80): string {
    const counts = `${this.done}/${this.total}`;
    const secs = (performance.now() - this.started) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const tail = ` ${counts} [${this.elapsed()}, ${rate.toFixed(2)} it/s]`;
    const barWidth = Math.max(10, Math.min(40, width - this.label.length - tail.length - 4));
    const filled = this.total > 0 ? Math.round((this.done / this.total) * barWidth) : barWidth;
    return `${this.label} |${'█'.repeat(filled)}${' '.repeat(barWidth - filled)}|${tail}`;
  }

  private draw(): void {
    this.lastDraw = performance.now();
    this.out.write(`\r${this.render()}\x1b[K`);
  }

  private elapsed(): string {
    const s = Math.floor((performance.now() - this.started) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  }
}
