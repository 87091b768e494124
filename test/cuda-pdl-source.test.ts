// Programmatic dependent launch lets a kernel start while the one before it still runs (driver.ts),
// which is only correct if every kernel waits (griddepcontrol.wait, kernels/common.cuh) before it
// reads what an earlier kernel wrote, writes anything, or returns. A kernel that forgot would race,
// on the GPU only and only sometimes, so the sources are checked here: every __global__ function
// begins with pdl_begin() or a pdl_wait…() call, with nothing before it but declarations computed
// from its arguments and block index (no loop, no return, no store, no barrier).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { kernelSourceDir } from '../src/backend/cuda/kernel-modules.js';

interface Kernel {
  file: string;
  name: string;
  body: string;
}

/** The index of the bracket closing the one at `open`. */
function closing(text: string, open: number): number {
  const pair: Record<string, string> = { '(': ')', '{': '}' };
  const want = pair[text[open]];
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    if (text[i] === text[open]) depth++;
    else if (text[i] === want && --depth === 0) return i;
  }
  throw new Error(`unbalanced ${text[open]} at ${open}`);
}

/** Every __global__ function of a source: its name and body (macro bodies included, continuations removed). */
function kernels(file: string, source: string): Kernel[] {
  const text = source.replace(/\\\n/g, '\n').replace(/\/\/[^\n]*/g, '').replace(/\/\*[\s\S]*?\*\//g, '');
  const out: Kernel[] = [];
  for (let at = text.indexOf('__global__'); at >= 0; at = text.indexOf('__global__', at + 1)) {
    let i = at + '__global__'.length;
    // Past __launch_bounds__(…) (or a BOUNDS macro), to the parameter list's parenthesis.
    let open = text.indexOf('(', i);
    while (/__launch_bounds__\s*$/.test(text.slice(i, open))) {
      i = closing(text, open) + 1;
      open = text.indexOf('(', i);
    }
    const name = /([\w#]+)\s*$/.exec(text.slice(i, open))![1];
    const brace = closing(text, open) + 1;
    const start = text.indexOf('{', brace);
    assert.match(text.slice(brace, start), /^\s*$/, `${file}: ${name}: expected its body after the parameters`);
    out.push({ file, name, body: text.slice(start + 1, closing(text, start)) });
  }
  return out;
}

const sources = readdirSync(kernelSourceDir())
  .filter((f) => /\.(cu|cuh)$/.test(f))
  .map((f) => ({ file: f, text: readFileSync(join(kernelSourceDir(), f), 'utf8') }));
const all = sources.flatMap((s) => kernels(s.file, s.text));

test('the kernel sources hold the kernels the backend launches', () => {
  // A scan that found nothing would pass every check below.
  assert.ok(all.length >= 70, `${all.length} kernels found`);
  for (const name of ['rms_norm_b', 'decode_attention_d', 'qgemv2_int4_r', 'gemv_mma_int4_r', 'sample_rows', 'gemv_splitk_', 'gemv_silu_'])
    assert.ok(all.some((k) => k.name.startsWith(name)), `no kernel named ${name}…`);
});

test('every kernel waits for the kernel before it before anything else', () => {
  const waits = /\b(?:job\.)?pdl_(?:begin|wait\w*)\s*\(/;
  for (const k of all) {
    const m = waits.exec(k.body);
    assert.ok(m, `${k.file}: ${k.name} never calls pdl_begin() / pdl_wait…(): launched programmatically, it would race its predecessor`);
    const before = k.body.slice(0, m.index);
    assert.doesNotMatch(before, /\b(return|for|while|__syncthreads)\b/, `${k.file}: ${k.name}: a loop, barrier or return before its wait`);
    // Declarations may compute from arguments; nothing may be stored through a pointer or subscript.
    assert.doesNotMatch(before, /(\]|\*\w+|->\w+)\s*[-+*/]?=(?!=)/, `${k.file}: ${k.name}: a store before its wait`);
  }
});

test('the prefetching starts are the ones in common.cuh, and they wait', () => {
  const common = sources.find((s) => s.file === 'common.cuh')!.text;
  for (const fn of ['pdl_wait_after_prefetch', 'pdl_wait_after_prefetch_pair']) {
    const defs = [...common.matchAll(new RegExp(`void ${fn}\\(([^)]*)\\)\\s*\\{`, 'g'))];
    assert.ok(defs.length > 0, `common.cuh defines ${fn}`);
    for (const d of defs) {
      const body = common.slice(d.index! + d[0].length, closing(common, d.index! + d[0].length - 1));
      assert.match(body, /pdl_wait(_after_prefetch)?\(/, `${fn} ends in the wait`);
    }
  }
});
