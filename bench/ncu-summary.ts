// Sums Nsight Compute's per-kernel durations (ncu --metrics gpu__time_duration.sum --csv) by kernel
// name: how a profiled decode step's GPU time divides between kernels (see cuda-step-profile.ts).
//
//   node dist/bench/ncu-summary.js ncu.csv

import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8');
const lines = text.split('\n').filter((l) => l.startsWith('"'));
const split = (l: string) => l.slice(1, -1).split('","');
const header = split(lines[0]);
const nameCol = header.indexOf('Kernel Name');
const unitCol = header.indexOf('Metric Unit');
const valueCol = header.indexOf('Metric Value');
const byName = new Map<string, { n: number; us: number }>();
let total = 0;
for (const l of lines.slice(1)) {
  const f = split(l);
  const unit = f[unitCol];
  const v = Number(f[valueCol].replace(/,/g, ''));
  const us = unit === 'nsecond' ? v / 1000 : unit === 'usecond' ? v : unit === 'msecond' ? v * 1000 : v / 1000;
  const name = f[nameCol].replace(/\(.*$/, '');
  const e = byName.get(name) ?? { n: 0, us: 0 };
  e.n++;
  e.us += us;
  byName.set(name, e);
  total += us;
}
console.log('| kernel | launches | total µs | share |');
console.log('|---|---:|---:|---:|');
for (const [name, e] of [...byName].sort((a, b) => b[1].us - a[1].us)) {
  console.log(`| ${name} | ${e.n} | ${e.us.toFixed(1)} | ${((100 * e.us) / total).toFixed(1)}% |`);
}
console.log(`| all | ${[...byName.values()].reduce((a, e) => a + e.n, 0)} | ${total.toFixed(1)} | 100% |`);
