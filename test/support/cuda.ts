// What the CUDA test files share: a GPU backend or the one-line reason there is none (CI has no GPU,
// so those suites skip with it), seeded random inputs whose seed every failure message names, and
// the comparisons every kernel is held to.

import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { CudaBackend } from '../../src/backend/cuda/cuda-backend.js';
import { Rng } from '../../src/engine/rng.js';

/**
 * A CUDA backend that names the kernel that failed (a synchronisation after every launch), or why
 * there is none: `skipReason` goes straight to `describe(…, { skip })`. Its KV caches are float32
 * unless a spec says otherwise, like the CPU reference's, so suites compare op by op; the bf16
 * cache (LLM.load's default on CUDA) has its own cases (cuda-attention.test.ts, the end-to-end tests).
 */
export async function openTestGpu(): Promise<{ gpu?: CudaBackend; skipReason: string | false }> {
  try {
    const cuda = await import('../../src/backend/cuda/cuda-backend.js');
    const opened = cuda.openCudaBackend({ syncEveryLaunch: true, kvDtype: 'float32' });
    if ('backend' in opened) return { gpu: opened.backend, skipReason: false };
    return { skipReason: `no CUDA device: ${opened.reason}` };
  } catch (err) {
    return { skipReason: `no CUDA device: the CUDA bindings did not load (${(err as Error).message.split('\n')[0]})` };
  }
}

/** Fresh inputs on every run; TACHYON_TEST_SEED replays one. */
export function testRandom(): { seed: number; rng: Rng; uniform: (n: number, lo?: number, hi?: number) => Float32Array; randInt: (n: number) => number } {
  const seed = Number(process.env.TACHYON_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const rng = new Rng(seed);
  return {
    seed,
    rng,
    uniform: (n, lo = -1, hi = 1) => Float32Array.from({ length: n }, () => lo + (hi - lo) * rng.next()),
    randInt: (n) => Math.floor(rng.next() * n),
  };
}

/** ‖a − b‖ / ‖b‖, and NaN anywhere in a fails. */
export function relErr(a: Float32Array, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, 'lengths differ');
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return Infinity;
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** The comparisons, each failure naming the seed of the inputs. */
export function comparisons(seed: number): {
  assertClose: (got: Float32Array, want: ArrayLike<number>, bound: number, what: string) => void;
  assertBitwise: (got: Float32Array, want: Float32Array, what: string) => void;
} {
  return {
    assertClose(got, want, bound, what) {
      const e = relErr(got, want);
      assert.ok(e <= bound, `${what}: relative error ${e.toExponential(2)} over ${bound.toExponential(0)} (seed ${seed})`);
    },
    /** The same bits everywhere (NaN payloads and signed zeros included); names the first difference. */
    assertBitwise(got, want, what) {
      assert.equal(got.length, want.length, `${what}: ${got.length} values, expected ${want.length}`);
      const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
      const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
      const i = a.findIndex((v, j) => v !== b[j]);
      assert.ok(i < 0, `${what}: value ${i} is ${got[i]}, expected ${want[i]} (seed ${seed})`);
    },
  };
}

/** The kernels `fn` launches, by name (the driver's launch, recorded and passed on). */
export function launchesOf(be: CudaBackend, fn: () => void): string[] {
  const names: string[] = [];
  const driver = be.driver;
  const launch = driver.launch;
  driver.launch = function (this: typeof driver, ...args: Parameters<typeof launch>) {
    names.push(args[1]);
    return launch.apply(this, args);
  };
  try {
    fn();
  } finally {
    driver.launch = launch;
  }
  return names;
}

/** A streamed kernel's name as its classic kernel's (gemv_mma_int4s… → gemv_mma_int4…, gemv_mma_nvfp4s… → gemv_mma_nvfp4…); others as they are. */
export function classicName(name: string): string {
  return name.replace(/^gemv_mma_(int4|nvfp4)s(?=many|silu|_|$)/, 'gemv_mma_$1');
}

/**
 * fn's outputs and its gemv_* launches with the streamed kernels on or off (QuantizedWeights.streamed,
 * up to 8 tokens a launch), the settings restored after.
 */
export function runStreamed(be: CudaBackend, streamed: boolean, fn: () => Float32Array[]): { out: Float32Array[]; names: string[] } {
  const q = be.quantized;
  const was = { streamed: q.streamed, streamMaxTokens: q.streamMaxTokens };
  q.streamed = streamed;
  q.streamMaxTokens = 8;
  try {
    let out: Float32Array[] = [];
    const names = launchesOf(be, () => (out = fn())).filter((n) => n.startsWith('gemv_'));
    return { out, names };
  } finally {
    Object.assign(q, was);
  }
}

/**
 * fn run with the streamed kernels on and then off (runStreamed), each on freshly poisoned memory and
 * inside `setting` (the suite's switch of its decode GEMVs to the mma kernels): bitwise the same
 * outputs; the classic run launches classic kernels only; the streamed run one streamed kernel, or
 * (`streams` false: where the streamed kernels do not fit) the classic run's. Returns both runs'
 * launches for further checks.
 */
export async function assertStreamedIsClassic(
  be: CudaBackend,
  seed: number,
  setting: <R>(fn: () => R) => R,
  what: string,
  fn: () => Float32Array[],
  streams = true,
): Promise<{ streamed: string[]; classic: string[] }> {
  const run = async (streamed: boolean) => {
    await nextTurn(); // the last call's buffers back in the pool, so poisoning reaches them
    be.poisonFreeMemory();
    return setting(() => runStreamed(be, streamed, fn));
  };
  const streamed = await run(true);
  const classic = await run(false);
  assert.ok(classic.names.every((n) => classicName(n) === n), `${what}: classic launches ${classic.names.join(', ')}`);
  if (streams) assert.ok(streamed.names.length === 1 && classicName(streamed.names[0]) !== streamed.names[0], `${what}: one streamed launch (${streamed.names.join(', ')})`);
  else assert.deepEqual(streamed.names, classic.names, `${what}: the classic kernels where the streamed ones do not fit`);
  const { assertBitwise } = comparisons(seed);
  streamed.out.forEach((y, i) => assertBitwise(y, classic.out[i], `${what} output ${i}`));
  return { streamed: streamed.names, classic: classic.names };
}
