// `tachyon report`: result files to a self-contained HTML page, checked as text (no scripts, no
// network) and rendered in headless Debian chromium (playwright-core, no downloaded browser): the
// charts are drawn with the data — one point per run, axes covering the maxima, the Pareto front.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadResultFiles, perUserTokensPerSecond, renderReport, toRunRecords } from '../src/report/html.js';
import { niceTicks, paretoFront } from '../src/report/svg.js';
import { packageRoot } from '../src/model/default-model.js';

const work = mkdtempSync(join(tmpdir(), 'tachyon-report-'));
const CHROMIUM = '/usr/bin/chromium';

/** A sweep-shaped list of runs: two configurations × concurrency 1, 4, 16; the second speculates. */
function sweepRuns(): Record<string, unknown>[] {
  const runs: Record<string, unknown>[] = [];
  for (const [name, speed, spec] of [
    ['quantization=fp8', 1, false],
    ['quantization=w4a16,spec=eagle3x3', 1.6, true],
  ] as const) {
    for (const c of [1, 4, 16]) {
      const tpot = (20 + c * 1.5) / speed;
      const out = (c * 1000) / tpot;
      runs.push({
        date: '20261123-120000',
        backend: 'openai',
        label: null,
        model_id: 'meta-llama/Llama-3.1-8B-Instruct',
        num_prompts: 50,
        request_rate: 'inf',
        max_concurrency: c,
        completed: 50,
        failed: 0,
        request_throughput: out / 128,
        output_throughput: out,
        total_token_throughput: out * 17,
        mean_ttft_ms: 100 + 20 * c,
        median_ttft_ms: 95 + 20 * c,
        p99_ttft_ms: 180 + 40 * c,
        mean_tpot_ms: tpot,
        median_tpot_ms: tpot,
        p99_tpot_ms: tpot * 1.3,
        mean_itl_ms: tpot * (spec ? 2.5 : 1),
        median_itl_ms: tpot * (spec ? 2.4 : 1),
        p99_itl_ms: tpot * (spec ? 4 : 1.5),
        ...(spec ? { spec_decode_acceptance_length: 2.9 - c * 0.01, spec_decode_acceptance_rate: 63, spec_decode_per_position_acceptance_rates: [0.82 - c * 0.001, 0.61, 0.44] } : {}),
        x_config: { name, server_args: [] },
        x_machine: { hostname: 'thor-devkit', cpu: 'ARM Neoverse-V3AE', cores: 14 },
        x_dataset: { name: 'random', input_len: 2048, output_len: 128 },
      });
    }
  }
  return runs;
}

describe('report data', () => {
  it('reads one run, a list of runs, or JSON lines, and rejects other JSON', () => {
    const runs = sweepRuns();
    const list = join(work, 'sweep.json');
    writeFileSync(list, JSON.stringify(runs));
    const one = join(work, 'one.json');
    writeFileSync(one, JSON.stringify({ ...runs[0], x_config: undefined, label: 'single' }));
    const lines = join(work, 'append.jsonl');
    writeFileSync(lines, runs.slice(0, 2).map((r) => JSON.stringify({ ...r, x_config: undefined })).join('\n') + '\n');
    const all = loadResultFiles([list, one, lines]);
    assert.equal(all.length, 9);
    assert.equal(all[6]!.config, 'single', 'label when there is no sweep config');
    assert.equal(all[7]!.config, 'Llama-3.1-8B-Instruct', 'else the model');
    assert.equal(all[1]!.concurrency, 4);
    const bad = join(work, 'bad.json');
    writeFileSync(bad, '{"hello": 1}');
    assert.throws(() => loadResultFiles([bad]), /not a benchmark result \(no output_throughput\)/);
    assert.equal(perUserTokensPerSecond(toRunRecords({ output_throughput: 400, max_concurrency: 4 }, 'x')[0]!), 100);
  });

  it('the Pareto front keeps runs no other run beats on both axes', () => {
    const pts = [
      { x: 10, y: 100 },
      { x: 20, y: 90 },
      { x: 15, y: 80 }, // dominated by (20, 90)
      { x: 5, y: 150 },
      { x: 5, y: 120 }, // dominated by (5, 150)
    ];
    assert.deepEqual(
      paretoFront(pts).map((p) => [p.x, p.y]),
      [
        [20, 90],
        [10, 100],
        [5, 150],
      ],
    );
  });

  it('axis ticks are round numbers ending at or above the maximum', () => {
    assert.deepEqual(niceTicks(0, 231), [0, 50, 100, 150, 200, 250]);
    assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
    assert.deepEqual(niceTicks(0, 0), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  });

  it('the page is self-contained: no scripts, no external resources', () => {
    const html = renderReport(toRunRecords(sweepRuns(), 'sweep.json'), { title: 'Thor sweep <test>' });
    assert.ok(!/<script/i.test(html));
    assert.ok(!/\s(src|href)=/i.test(html), 'no src/href attributes');
    assert.ok(!/url\(/i.test(html), 'no CSS urls');
    assert.deepEqual(html.match(/https?:\/\/[^"\s<]+/g)?.filter((u) => u !== 'http://www.w3.org/2000/svg') ?? [], []);
    assert.match(html, /<title>Thor sweep &lt;test&gt;<\/title>/, 'escaped');
  });
});

describe('report rendered in headless chromium', { timeout: 120_000 }, () => {
  it('draws every chart with the data', async (t) => {
    if (!existsSync(CHROMIUM)) {
      t.skip(`${CHROMIUM} is not installed (apt-get install chromium)`);
      return;
    }
    const runs = sweepRuns();
    const file = join(work, 'sweep-render.json');
    writeFileSync(file, JSON.stringify(runs));
    const out = join(work, 'report.html');
    const cli = spawnSync(process.execPath, [join(packageRoot(), 'bin', 'tachyon.js'), 'report', file, '--output', out, '--title', 'Llama-3.1-8B on Thor'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(cli.status, 0, cli.stderr);
    assert.match(cli.stdout, /6 runs → /);

    const { chromium } = await import('playwright-core');
    // A persistent context is how playwright takes a fresh --user-data-dir of our choosing.
    const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'tachyon-chromium-')), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    });
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.setContent(readFileSync(out, 'utf8'), { waitUntil: 'load' });
      assert.deepEqual(requests, [], 'the page fetches nothing');

      assert.equal(await page.locator('h1').textContent(), 'Llama-3.1-8B on Thor');
      const titles = await page.locator('svg .chart-title').allTextContents();
      assert.deepEqual(titles, [
        'Output token throughput vs concurrency',
        'Time to first token (TTFT) vs concurrency',
        'Time per output token (TPOT) vs concurrency',
        'Inter-token latency (ITL) vs concurrency',
        'Speculative decoding: acceptance per draft position',
        'Configurations: throughput vs per-user speed',
      ]);

      // Throughput: one point per run, laid out by value, inside the plot frame; y axis covers the max.
      const points = await page.$$eval('svg#throughput circle.point', (els) =>
        els.map((e) => {
          const c = e as SVGCircleElement;
          const box = c.getBoundingClientRect();
          return { y: Number(c.dataset.y), x: Number(c.dataset.x), cy: box.top + box.height / 2, cx: box.left + box.width / 2, w: box.width };
        }),
      );
      assert.equal(points.length, runs.length);
      const maxOut = Math.max(...runs.map((r) => r.output_throughput as number));
      assert.deepEqual(points.map((p) => p.y).sort((a, b) => a - b), runs.map((r) => r.output_throughput as number).sort((a, b) => a - b));
      const top = points.reduce((a, b) => (b.cy < a.cy ? b : a));
      assert.equal(top.y, maxOut, 'the highest point on screen is the largest throughput');
      const bottom = points.reduce((a, b) => (b.cy > a.cy ? b : a));
      assert.equal(bottom.y, Math.min(...points.map((p) => p.y)));
      assert.ok(points.every((p) => p.w > 0), 'points are drawn');
      const frame = await page.$eval('svg#throughput rect.frame', (e) => e.getBoundingClientRect().toJSON() as DOMRect);
      assert.ok(points.every((p) => p.cx >= frame.left && p.cx <= frame.right && p.cy >= frame.top && p.cy <= frame.bottom));
      // log2 x axis: concurrency 1, 4, 16 are evenly spaced.
      const xs = [...new Set(points.filter((p) => p.x > 0).map((p) => Math.round(p.cx)))].sort((a, b) => a - b);
      assert.equal(xs.length, 3);
      assert.ok(Math.abs(xs[1]! - xs[0]! - (xs[2]! - xs[1]!)) <= 2, `even spacing ${xs.join(',')}`);
      const yTicks = await page.$$eval('svg#throughput .y-tick', (els) => els.map((e) => ({ v: Number((e as SVGTextElement).dataset.value), text: e.textContent, w: e.getBoundingClientRect().width })));
      const ticks = yTicks.map((t2) => t2.v);
      assert.ok(Math.max(...ticks) >= maxOut, `top tick ${Math.max(...ticks)} covers ${maxOut}`);
      assert.ok(ticks.filter((v) => v < maxOut).length === ticks.length - 1, 'exactly one tick at or above the maximum');
      assert.ok(yTicks.every((t2) => t2.w > 0 && t2.text), 'tick labels are drawn');
      const xTicks = await page.$$eval('svg#throughput .x-tick', (els) => els.map((e) => e.textContent));
      assert.deepEqual(xTicks, ['1', '4', '16']);

      // Latency charts: median and P99 per configuration.
      assert.equal(await page.locator('svg#latency-ttft circle.point').count(), runs.length * 2);
      assert.equal(await page.locator('svg#latency-tpot g.series').count(), 4);

      // Acceptance: one bar per speculative run and position, heights proportional to the rates.
      const bars = await page.$$eval('svg#acceptance rect.bar', (els) => els.map((e) => ({ v: Number((e as SVGRectElement).dataset.value), h: e.getBoundingClientRect().height })));
      assert.equal(bars.length, 3 * 3);
      const ratio = bars.map((b) => b.h / b.v);
      assert.ok(Math.max(...ratio) - Math.min(...ratio) < 0.05, 'bar height ∝ value');
      assert.ok(bars.some((b) => Math.abs(b.v - 82 + 0.1) < 1e-9), 'first position of the c=1 run is 81.9%');

      // Pareto: every run is a point; the front is ringed and matches the computed front.
      assert.equal(await page.locator('svg#pareto circle.point').count(), runs.length);
      const recs = toRunRecords(runs, 'x');
      const front = paretoFront(recs.map((r) => ({ x: perUserTokensPerSecond(r), y: r.result.output_throughput as number })));
      assert.equal(await page.locator('svg#pareto circle.pareto').count(), front.length);
      assert.equal(await page.locator('table.runs tbody tr.on-front').count(), front.length);
      assert.equal(await page.locator('table.runs tbody tr').count(), runs.length);

      await page.screenshot({ path: join(tmpdir(), 'tachyon-report.png'), fullPage: true });
    } finally {
      await browser.close();
    }
  });
});
