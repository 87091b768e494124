// mlp(backend, …): a backend without its own `mlp` gets linearSiluMul then the down linear, the
// intermediate released — the same bits as the model's old sequence of ops, on the CPU backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linearSiluMul, mlp, type Backend, type Tensor } from '../src/backend/backend.js';
import { CpuBackend } from '../src/backend/cpu/cpu-backend.js';
import { Rng } from '../src/engine/rng.js';

test('mlp on a backend without one is linearSiluMul, then down, with the biases', () => {
  const be = new CpuBackend();
  const rng = new Rng(7);
  const rand = (n: number) => Float32Array.from({ length: n }, () => rng.next() * 2 - 1);
  const f32 = (name: string, shape: number[]) => be.loadDense(name, { dtype: 'F32', shape, bytes: new Uint8Array(rand(shape.reduce((a, b) => a * b, 1)).buffer) });
  const H = 16, N = 40, T = 5;
  const gate = f32('g', [N, H]), up = f32('u', [N, H]), down = f32('d', [H, N]);
  const biases = { gate: f32('gb', [N]), up: f32('ub', [N]), down: f32('db', [H]) };
  const x = be.fromHost(rand(T * H), [T, H]);
  // The CPU backend keeps activations until the step ends; a view of it that records releases.
  const released: Tensor[] = [];
  const spy: Backend = Object.assign(Object.create(be) as Backend, { release: (...ts: Tensor[]) => void released.push(...ts) });
  const y = mlp(spy, x, gate, up, down, biases);
  const got = be.toHost(y);
  // gate's and up's outputs (linearSiluMul by linears), then the intermediate; never x or the result.
  assert.equal(released.length, 3, 'the intermediates are released');
  assert.ok(!released.includes(y) && !released.includes(x));
  const want = be.toHost(be.linear(linearSiluMul(be, x, gate, up, biases.gate, biases.up), down, biases.down));
  assert.deepEqual(got, want);
  assert.equal(got.length, T * H);
  assert.ok(got.some((v) => v !== 0));
});
