// GPTQ: with correlated inputs it gives a smaller layer output error ‖X·Wᵀ − X·Ŵᵀ‖ than round-to-nearest
// on the same grid; with an identity Hessian it IS round-to-nearest; and a GPTQ checkpoint written
// layer by layer from calibration tokens loads back exactly and beats RTN on the layers' own inputs.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Rng } from '../src/engine/rng.js';
import { loadModelConfig } from '../src/model/config.js';
import { LlamaModel, type LinearInputSite } from '../src/model/llama.js';
import { readSafetensorsHeader, SafetensorsCheckpoint } from '../src/model/load/safetensors.js';
import { loadModelWeights } from '../src/model/weights.js';
import { dequantize, type QuantizedWeight } from '../src/quant/format.js';
import { gptqQuantize, HessianAccumulator, inverseHessianFactor, quantizeIntRtn, type IntGrid } from '../src/quant/gptq.js';
import { quantizeCheckpoint } from '../src/quant/checkpoint/quantize-checkpoint.js';
import { ModelRunner } from './support/run-model.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './support/tiny-checkpoint.js';

const rng = new Rng(11);
const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());

/** ‖X·(W − Ŵ)ᵀ‖_F for X [n, cols], W [rows, cols]. */
function outputError(x: Float32Array, n: number, w: Float32Array, wq: Float32Array, rows: number, cols: number): number {
  let sum = 0;
  for (let t = 0; t < n; t++) {
    for (let o = 0; o < rows; o++) {
      let d = 0;
      for (let i = 0; i < cols; i++) d += x[t * cols + i] * (w[o * cols + i] - wq[o * cols + i]);
      sum += d * d;
    }
  }
  return Math.sqrt(sum);
}

/** n inputs of dimension cols that live near an 8-dimensional subspace, with uneven column scales. */
function correlatedInputs(n: number, cols: number): Float32Array {
  const rank = 8;
  const a = Array.from({ length: rank * cols }, normal);
  const colScale = Array.from({ length: cols }, () => 0.2 + 2 * rng.next() ** 2);
  const x = new Float32Array(n * cols);
  for (let t = 0; t < n; t++) {
    const z = Array.from({ length: rank }, normal);
    for (let i = 0; i < cols; i++) {
      let v = 0.05 * normal();
      for (let k = 0; k < rank; k++) v += z[k] * a[k * cols + i];
      x[t * cols + i] = v * colScale[i];
    }
  }
  return x;
}

describe('GPTQ algorithm', () => {
  const rows = 48;
  const cols = 128;
  const n = 512;
  const x = correlatedInputs(n, cols);
  const w = Float32Array.from({ length: rows * cols }, () => 0.1 * normal());
  const acc = new HessianAccumulator(cols);
  acc.add(x.subarray(0, 200 * cols), 200);
  acc.add(x.subarray(200 * cols), n - 200);
  const h = acc.hessian();

  it('the Hessian is 2/N · XᵀX over all rows added', () => {
    for (const [i, j] of [[0, 0], [3, 77], [127, 5], [64, 64]]) {
      let s = 0;
      for (let t = 0; t < n; t++) s += x[t * cols + i] * x[t * cols + j];
      assert.ok(Math.abs(h[i * cols + j] - (2 * s) / n) <= 1e-9 * Math.abs(s), `H[${i}, ${j}]`);
      assert.equal(h[i * cols + j], h[j * cols + i]);
    }
    assert.equal(acc.samples, n);
  });

  it('the Hessian of an odd width over several chunks matches the direct sum', () => {
    const k = 7;
    const m = 150;
    const xs = Float32Array.from({ length: m * k }, normal);
    const a = new HessianAccumulator(k);
    a.add(xs, m);
    const hh = a.hessian();
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let r = 0; r < m; r++) s += xs[r * k + i] * xs[r * k + j];
        assert.ok(Math.abs(hh[i * k + j] - (2 * s) / m) <= 1e-12 * m, `H[${i}, ${j}]`);
      }
    }
  });

  it('the inverse factor U is upper triangular with Uᵀ·U = H⁻¹', () => {
    const k = 40;
    const damped = Float64Array.from({ length: k * k }, (_, idx) => h[Math.floor(idx / k) * cols + (idx % k)]);
    for (let i = 0; i < k; i++) damped[i * k + i] += 0.01;
    const u = inverseHessianFactor(damped, k)!;
    for (let i = 0; i < k; i++) {
      assert.ok(u[i * k + i] > 0);
      for (let j = 0; j < i; j++) assert.equal(u[i * k + j], 0);
    }
    // H · (Uᵀ·U) = I
    for (const [i, j] of [[0, 0], [5, 5], [3, 17], [39, 2], [20, 21]]) {
      let s = 0;
      for (let m = 0; m < k; m++) {
        let hinv = 0;
        for (let r = 0; r < k; r++) hinv += u[r * k + m] * u[r * k + j];
        s += damped[i * k + m] * hinv;
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-8, `(H·H⁻¹)[${i}, ${j}] = ${s}`);
    }
    assert.equal(inverseHessianFactor(new Float64Array([1, 2, 2, 1]), 2), undefined, 'not positive definite');
  });

  const grids: [string, IntGrid, boolean][] = [
    ['W4A16 group 32', { bits: 4, symmetric: true, groupSize: 32 }, false],
    ['W4A16_ASYM group 32', { bits: 4, symmetric: false, groupSize: 32 }, false],
    ['W4A16 group 32, act-order', { bits: 4, symmetric: true, groupSize: 32 }, true],
    ['W8A16 per channel', { bits: 8, symmetric: true, groupSize: -1 }, false],
  ];
  for (const [name, grid, actOrder] of grids) {
    it(`${name}: GPTQ's output error is well below RTN's on correlated inputs`, () => {
      const rtn = dequantize(quantizeIntRtn(w, rows, cols, grid));
      const q = gptqQuantize(w, rows, cols, h, grid, { actOrder });
      if (actOrder) assert.ok(q.format === 'int4' && q.gIdx, 'act-order with groups records g_idx');
      const eRtn = outputError(x, n, w, rtn, rows, cols);
      const eGptq = outputError(x, n, w, dequantize(q), rows, cols);
      assert.ok(eGptq < 0.7 * eRtn, `GPTQ ${eGptq.toFixed(4)} vs RTN ${eRtn.toFixed(4)}`);
    });
  }

  it('with an identity Hessian there is no error to spread: GPTQ equals RTN exactly', () => {
    const eye = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) eye[i * cols + i] = 1;
    for (const [, grid] of grids) assert.deepEqual(dequantize(gptqQuantize(w, rows, cols, eye, grid)), dequantize(quantizeIntRtn(w, rows, cols, grid)));
  });

  it('a degenerate Hessian (inputs that never vary) still quantizes, dead columns zeroed', () => {
    const zeroCol = new Float64Array(h);
    for (let i = 0; i < cols; i++) {
      zeroCol[i * cols + 5] = 0;
      zeroCol[5 * cols + i] = 0;
    }
    const q = dequantize(gptqQuantize(w, rows, cols, zeroCol, { bits: 4, symmetric: true, groupSize: 32 }));
    for (let o = 0; o < rows; o++) assert.equal(q[o * cols + 5], 0);
  });
});

describe('GPTQ checkpoints (sequential, layer by layer)', () => {
  const cfg = { ...TINY_LLAMA, hidden_size: 64, intermediate_size: 128 };
  const dir = writeTinyCheckpoint(cfg);
  // Few distinct tokens: the layers' inputs are strongly correlated, as real text's are.
  const windows = Array.from({ length: 8 }, (_, s) => Array.from({ length: 32 }, (_, p) => [3, 9, 14, 27, 33, 41, 50, 58][(s * 7 + p * p) % 8]));
  const run = (method: 'rtn' | 'gptq') => {
    const inMemory = new Map<string, QuantizedWeight>();
    const lines: string[] = [];
    const result = quantizeCheckpoint({
      model: dir,
      output: join(mkdtempSync(join(tmpdir(), 'tachyon-gptq-')), 'out'),
      scheme: 'W4A16',
      method,
      groupSize: 16,
      actOrder: method === 'gptq',
      calibrationTokens: method === 'gptq' ? windows : undefined,
      log: (l) => lines.push(l),
      onQuantized: (m, w) => inMemory.set(m, w),
    });
    return { result, inMemory, lines };
  };
  const gptq = run('gptq');
  const rtn = run('rtn');

  it('writes actorder "group" with weight_g_idx, a GPTQModifier recipe, and loads back exactly', () => {
    const { result, inMemory, lines } = gptq;
    assert.deepEqual(result.calibration, { samples: 8, tokens: 256 });
    assert.equal(lines.length, 2);
    assert.match(lines[1], /^layer 2\/2: .* → W4A16 \(gptq\)/);
    const qc = JSON.parse(readFileSync(join(result.output, 'config.json'), 'utf8')).quantization_config;
    assert.equal(qc.config_groups.group_0.weights.actorder, 'group');
    assert.match(readFileSync(join(result.output, 'recipe.yaml'), 'utf8'), /GPTQModifier:[\s\S]*dampening_frac: 0\.01[\s\S]*actorder: group/);
    const h = new Map(readSafetensorsHeader(join(result.output, 'model.safetensors')).tensors.map((t) => [t.name, t]));
    assert.deepEqual([h.get('model.layers.0.mlp.down_proj.weight_g_idx')?.dtype, h.get('model.layers.0.mlp.down_proj.weight_g_idx')?.shape], ['I32', [128]]);
    const backend = new CpuBackend();
    const ckpt = SafetensorsCheckpoint.open(result.output);
    const w = loadModelWeights(ckpt, loadModelConfig(result.output), backend);
    ckpt.close();
    const down = w.layers[0].down;
    assert.equal(down.format, 'int4');
    assert.deepEqual(backend.weightToHost(down), dequantize(inMemory.get('model.layers.0.mlp.down_proj')!));
    assert.deepEqual(backend.weightToHost(w.layers[1].q), dequantize(inMemory.get('model.layers.1.self_attn.q_proj')!));
  });

  it("on layer 0's calibration inputs, every projection's output error is well below RTN's", () => {
    const backend = new CpuBackend();
    const ckpt = SafetensorsCheckpoint.open(dir);
    const model = new LlamaModel(loadModelConfig(dir), loadModelWeights(ckpt, loadModelConfig(dir), backend), backend);
    const floatOf = (m: string) => new Float32Array(ckpt.read(`${m}.weight`).bytes.buffer);
    const inputs = new Map<LinearInputSite, Float32Array[]>();
    const runner = new ModelRunner(model, 64, 16);
    windows.forEach((tokens, s) => {
      const orig = model.forward.bind(model);
      model.forward = (batch, kv) => orig(batch, kv, { observeLinearInput: (l, site, x) => l === 0 && inputs.set(site, [...(inputs.get(site) ?? []), x.slice()]) });
      runner.step([{ seq: s, start: 0, tokens }]);
      model.forward = orig;
    });
    const site: Record<string, LinearInputSite> = { q_proj: 'qkv', k_proj: 'qkv', v_proj: 'qkv', o_proj: 'o', gate_proj: 'gate_up', up_proj: 'gate_up', down_proj: 'down' };
    for (const [module, q] of gptq.inMemory) {
      if (!module.startsWith('model.layers.0.')) continue;
      const parts = inputs.get(site[module.split('.').pop()!])!;
      const x = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
      let off = 0;
      for (const p of parts) {
        x.set(p, off);
        off += p.length;
      }
      const w = floatOf(module);
      const nTok = x.length / q.cols;
      const eG = outputError(x, nTok, w, dequantize(q), q.rows, q.cols);
      const eR = outputError(x, nTok, w, dequantize(rtn.inMemory.get(module)!), q.rows, q.cols);
      assert.ok(eG < 0.6 * eR, `${module}: GPTQ ${eG.toFixed(4)} vs RTN ${eR.toFixed(4)}`);
    }
    ckpt.close();
  });
});
