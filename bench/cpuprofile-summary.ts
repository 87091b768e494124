// The host's side of a GPU step: where the JavaScript time goes. Sums a V8 CPU profile
// (node --cpu-prof) by function, self time, highest first.
//
//   node --cpu-prof --cpu-prof-dir=prof dist/bench/cuda-step-profile.js --steps 200
//   node dist/bench/cpuprofile-summary.js prof/*.cpuprofile [--top 30]

import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
const file = process.argv[2];
const top = Number(process.argv[process.argv.indexOf('--top') + 1] || 30);
const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[] };
const usPerSample = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
const byFunction = new Map<string, number>();
let total = 0;
for (const n of profile.nodes) {
  const hits = n.hitCount ?? 0;
  const where = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/dist\//, '')}:${n.callFrame.lineNumber + 1}`;
  byFunction.set(where, (byFunction.get(where) ?? 0) + hits);
  total += hits;
}
console.log(`| function (self time) | ms | share |`);
console.log('|---|---:|---:|');
for (const [where, hits] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${where} | ${((hits * usPerSample) / 1000).toFixed(1)} | ${((100 * hits) / total).toFixed(1)}% |`);
}
