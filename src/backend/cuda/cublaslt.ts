// koffi bindings to cuBLASLt, NVIDIA's tensor-core GEMM library, for prefill (steps of more than
// 8 tokens): find libcublasLt wherever a CUDA toolkit or a Python wheel put it, and run
// D = op(A)·op(B) (+ bias) with bf16, f16 or FP8 (e4m3) operands and a float32 result on the
// backend's stream. `CublasLtPrefill` wraps it with the kernels of kernels/convert.cu that bring the
// float32 activations into the operand type (and, for FP8, scale the result back).
//
// Enum values and attribute ids are those of CUDA 13's cublasLt.h, cublas_api.h and library_types.h
// (cuBLAS 13.1); they have not changed since cuBLAS 12.0.

import { existsSync, readFileSync } from 'node:fs';
import koffi from 'koffi';
import { CudaError, type CudaDriver, type DevicePtr, type Handle } from './driver.js';
import type { KernelModules } from './kernel-modules.js';
import type { DevicePool, PooledBuffer } from './memory-pool.js';
import { libraryCandidates } from './library-search.js';

type Fn = (...args: unknown[]) => unknown;

// cudaDataType (library_types.h)
const CUDA_R_32F = 0;
const CUDA_R_16F = 2;
const CUDA_R_16BF = 14;
const CUDA_R_8F_E4M3 = 28;
// cublasStatus_t, cublasComputeType_t, cublasOperation_t (cublas_api.h)
const CUBLAS_STATUS_NOT_SUPPORTED = 15;
const CUBLAS_STATUS_INVALID_VALUE = 7;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
// cublasLtMatmulDescAttributes_t
const DESC_TRANSA = 3;
const DESC_TRANSB = 4;
const DESC_EPILOGUE = 7;
const DESC_BIAS_POINTER = 8;
const DESC_A_SCALE_POINTER = 17;
const DESC_B_SCALE_POINTER = 18;
const DESC_A_SCALE_MODE = 31;
const DESC_B_SCALE_MODE = 32;
/** cublasLtMatmulMatrixScale_t: a float32 vector, M values for A and N for B (cuBLAS 12.9+, Hopper and newer). */
const MATRIX_SCALE_OUTER_VEC_32F = 3;
// cublasLtEpilogue_t
const EPILOGUE_DEFAULT = 1;
const EPILOGUE_BIAS = 4;
// cublasLtMatmulPreferenceAttributes_t
const PREF_MAX_WORKSPACE_BYTES = 1;
const PREF_MIN_ALIGNMENT_A_BYTES = 5;
const PREF_MIN_ALIGNMENT_B_BYTES = 6;
const PREF_MIN_ALIGNMENT_C_BYTES = 7;
const PREF_MIN_ALIGNMENT_D_BYTES = 8;
/** cuBLASLt's default alignment assumption (bytes), the most any pointer is reported to have. */
const MAX_ALIGNMENT = 256;
/** sizeof(cublasLtMatmulHeuristicResult_t): algo (8 × u64), size_t workspaceSize, int state, float wavesCount, int reserved[4]. */
const HEURISTIC_RESULT_BYTES = 96;
const ALGO_BYTES = 64;
const HEURISTIC_CANDIDATES = 8;
/** Groups of 4 values a thread of the row quantisers holds in registers (kernels/convert.cu QUANT_HELD). */
const QUANT_HELD = 8;
/** The pipelined row quantiser's most threads a block (kernels/convert.cu QUANT_PIPELINED_THREADS: it holds two rows). */
const QUANT_PIPELINED_THREADS = 640;
/** Chunks of 8 values a thread of the staged SiLU kernel holds at most (convert.cu SILU_STAGED_HELD). */
const SILU_STAGED_HELD = 4;
/**
 * How convert.cu's staged FP8 MLP middle runs rows of N values: 3 rows of gate and up in shared memory
 * where they fit, else 2 (the kernel is for N a multiple of 8 and 16-byte aligned rows), with threads
 * for two chunks of 8 each; undefined where it cannot (the register-pipelined kernel runs). At 14336
 * (Llama-3.1-8B): 3 stages of 56 KiB, 896 threads.
 */
export function siluStaging(N: number, sharedOptin: number, ptrs: readonly DevicePtr[]): { stages: 2 | 3; threads: number; sharedBytes: number } | undefined {
  if (N % 8 !== 0 || ptrs.some((p) => p % 16 !== 0)) return undefined;
  const chunks = N / 8;
  const threads = Math.min(1024, Math.ceil(chunks / 2 / 32) * 32);
  if (chunks > SILU_STAGED_HELD * threads) return undefined;
  // (block_max's 128 bytes of static shared memory count against the same limit.)
  const stage = 4 * N;
  const stages = 3 * stage + 128 <= sharedOptin ? 3 : 2 * stage + 128 <= sharedOptin ? 2 : undefined;
  return stages && { stages, threads, sharedBytes: stages * stage };
}
/** Threads of a row quantiser's block for rows of `n` values: enough to hold the whole row (whole warps, at most 1024). */
export function quantRowThreads(n: number): number {
  return Math.min(1024, Math.max(32, Math.ceil(n / 4 / QUANT_HELD / 32) * 32));
}
/** NVIDIA's recommended workspace for Hopper; allocated once per process. */
export const CUBLASLT_WORKSPACE_BYTES = 32 * 2 ** 20;

class CublasLtApi {
  readonly cublasLtGetVersion: Fn;
  readonly cublasLtGetStatusName: Fn;
  readonly cublasLtGetStatusString: Fn;
  readonly cublasLtCreate: Fn;
  readonly cublasLtMatmulDescCreate: Fn;
  readonly cublasLtMatmulDescDestroy: Fn;
  readonly cublasLtMatmulDescSetAttribute: Fn;
  readonly cublasLtMatrixLayoutCreate: Fn;
  readonly cublasLtMatrixLayoutDestroy: Fn;
  readonly cublasLtMatmulPreferenceCreate: Fn;
  readonly cublasLtMatmulPreferenceDestroy: Fn;
  readonly cublasLtMatmulPreferenceSetAttribute: Fn;
  readonly cublasLtMatmulAlgoGetHeuristic: Fn;
  readonly cublasLtMatmul: Fn;

  constructor(lib: ReturnType<typeof koffi.load>) {
    const f = (sig: string) => lib.func(sig) as Fn;
    this.cublasLtGetVersion = f('size_t cublasLtGetVersion()');
    this.cublasLtGetStatusName = f('const char *cublasLtGetStatusName(int status)');
    this.cublasLtGetStatusString = f('const char *cublasLtGetStatusString(int status)');
    this.cublasLtCreate = f('int cublasLtCreate(_Out_ void **handle)');
    this.cublasLtMatmulDescCreate = f('int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)');
    this.cublasLtMatmulDescDestroy = f('int cublasLtMatmulDescDestroy(void *desc)');
    this.cublasLtMatmulDescSetAttribute = f('int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t size)');
    this.cublasLtMatrixLayoutCreate = f('int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)');
    this.cublasLtMatrixLayoutDestroy = f('int cublasLtMatrixLayoutDestroy(void *layout)');
    this.cublasLtMatmulPreferenceCreate = f('int cublasLtMatmulPreferenceCreate(_Out_ void **pref)');
    this.cublasLtMatmulPreferenceDestroy = f('int cublasLtMatmulPreferenceDestroy(void *pref)');
    this.cublasLtMatmulPreferenceSetAttribute = f('int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t size)');
    this.cublasLtMatmulAlgoGetHeuristic = f(
      'int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *pref, int requested, void *results, _Out_ int *returned)',
    );
    this.cublasLtMatmul = f(
      'int cublasLtMatmul(void *handle, void *desc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t workspace, size_t workspaceBytes, void *stream)',
    );
  }
}

/**
 * Where libcublasLt may be, most specific first: $CUBLASLT, the loader's own search, CUDA toolkits
 * (JetPack's targets/aarch64-linux too), the distribution's lib folders, ldconfig, the nvidia-cublas
 * Python wheel. Lazy, so the slower places (ldconfig, python3) are asked only if needed.
 */
export function* cublasLtCandidates(env: NodeJS.ProcessEnv = process.env): Generator<string> {
  yield* libraryCandidates({ name: 'cublasLt', envVar: 'CUBLASLT', majors: ['13', '12'], wheelDirs: ['cu13', 'cu12', 'cublas'] }, env);
}

/** A loaded libcublasLt: its bindings, where it is, its version (e.g. 13.1.1). */
export interface CublasLtLibrary {
  api: CublasLtApi;
  path: string;
  version: string;
}

/** Load the first libcublasLt of `candidates` that binds; the error lists what was tried and how to fix it. */
export function loadCublasLt(candidates: Iterable<string> = cublasLtCandidates()): CublasLtLibrary {
  const tried: string[] = [];
  for (const path of candidates) {
    if (path.includes('/') && !existsSync(path)) {
      tried.push(`${path} (no such file)`);
      continue;
    }
    try {
      const api = new CublasLtApi(koffi.load(path));
      const v = Number(api.cublasLtGetVersion());
      const version = `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
      return { api, path: path.includes('/') ? path : resolveLoadedPath(path), version };
    } catch (err) {
      tried.push(`${path} (${(err as Error).message.split('\n')[0].replace(/^Failed to load shared library: /, '')})`);
    }
  }
  throw new CudaError(
    'cuBLASLt (libcublasLt.so, the tensor-core GEMM library) was not found; set CUBLASLT=/path/to/libcublasLt.so.N or install the CUDA toolkit ' +
      `or the nvidia-cublas wheel (prefill then runs on the slower float32 tiled kernel). Tried: ${tried.slice(0, 8).join('; ')}${tried.length > 8 ? `; and ${tried.length - 8} more` : ''}`,
  );
}

/** For a library found by the loader's own search, the file it mapped (for messages). */
function resolveLoadedPath(name: string): string {
  try {
    const line = readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => /\/libcublasLt\.so[^/]*$/.test(l));
    return line ? line.slice(line.indexOf('/')) : name;
  } catch {
    return name;
  }
}

/** Operand type of A and B. */
export type GemmOperand = 'bf16' | 'f16' | 'e4m3';
const CUDA_TYPE: Record<GemmOperand, number> = { bf16: CUDA_R_16BF, f16: CUDA_R_16F, e4m3: CUDA_R_8F_E4M3 };

/**
 * One GEMM's shape in cuBLAS's column-major terms, for nn.Linear: m = output features (rows of the
 * weight), n = tokens, k = input features. A is the weight, row-major [m, k] (column-major [k, m],
 * used transposed); B the activations, row-major [n, k]; D row-major [n, ldd] (column-major [m, n]
 * with leading dimension ldd ≥ m), float32 unless `out` is 'half' (bf16/f16 D: the operand type).
 */
export interface GemmShape {
  type: GemmOperand;
  m: number;
  n: number;
  k: number;
  ldd: number;
  /** D's type: float32 (the default), or 16 bits: the operands' type, bf16 for e4m3. */
  out?: 'f32' | 'half';
  /**
   * e4m3: D[i, j] is scaled by aScale[i] · bScale[j] inside the GEMM (float32 vectors of m and n
   * values given to matmul; cuBLASLt's outer-vector scaling), instead of unit scales.
   */
  outerScales?: boolean;
  /**
   * D += the product (beta 1, C = D: cuBLASLt reads D's old values in its epilogue) instead of
   * D = the product: a linear added to the residual stream in the GEMM (CudaBackend.linearAdd).
   */
  accumulate?: boolean;
}

/** The CUDA type of a GEMM's D. */
function outType(s: GemmShape): number {
  if (s.out !== 'half') return CUDA_R_32F;
  return s.type === 'e4m3' ? CUDA_R_16BF : CUDA_TYPE[s.type];
}

/** A cached descriptor set and the algorithm cuBLASLt's heuristic chose for it. */
interface Plan {
  desc: Handle;
  a: Handle;
  b: Handle;
  d: Handle;
  algo: Buffer;
  workspaceBytes: number;
  /** Bias added by cuBLASLt's epilogue (else the caller adds it). */
  biasInEpilogue: boolean;
  /** The pointers last set on `desc` (set again only when they change: each set is a native call). */
  set: { bias: DevicePtr; aScale: DevicePtr; bScale: DevicePtr };
}

/** The descriptor attributes a GEMM's pointers go in (Plan.set). */
const POINTER_ATTRIBUTES = { bias: [DESC_BIAS_POINTER, 'BIAS_POINTER'], aScale: [DESC_A_SCALE_POINTER, 'A_SCALE_POINTER'], bScale: [DESC_B_SCALE_POINTER, 'B_SCALE_POINTER'] } as const;

/** The largest power of two (up to 256) dividing a device address: what cuBLASLt may assume about it. */
function alignmentOf(ptr: DevicePtr): number {
  const low = ptr % MAX_ALIGNMENT;
  return low === 0 ? MAX_ALIGNMENT : low & -low;
}

const i32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u64 = (v: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};

/**
 * A cuBLASLt handle bound to one driver's stream, with one workspace and a cache of plans (descriptors
 * and the heuristic's algorithm) per shape, operand type, bias and pointer alignments: the heuristic
 * runs once per distinct GEMM, later calls only set the bias pointer and launch.
 */
export class CublasLt {
  /** null: the heuristic had no algorithm for that GEMM. */
  private readonly plans = new Map<string, Plan | null>();
  private readonly one = Buffer.from(new Float32Array([1]).buffer);
  private readonly zero = Buffer.from(new Float32Array([0]).buffer);
  /** Use cuBLASLt's bias epilogue (true), or leave the bias to the caller's kernel (tests compare both). */
  biasEpilogue = true;
  /** GEMMs run, heuristic queries made and pointers set on descriptors (tests, benchmarks). */
  readonly counters = { matmuls: 0, plans: 0, pointerSets: 0 };

  private constructor(
    private readonly lib: CublasLtLibrary,
    private readonly driver: CudaDriver,
    private readonly handle: Handle,
    private readonly workspace: DevicePtr,
  ) {}

  get path(): string {
    return this.lib.path;
  }
  get version(): string {
    return this.lib.version;
  }

  /** Find the library, create the handle and the workspace. Throws a CudaError saying why not. */
  static open(driver: CudaDriver, lib: CublasLtLibrary = loadCublasLt()): CublasLt {
    const handle: Handle[] = [null];
    check(lib, lib.api.cublasLtCreate(handle), 'cublasLtCreate');
    return new CublasLt(lib, driver, handle[0], driver.memAlloc(CUBLASLT_WORKSPACE_BYTES));
  }

  private check(rc: unknown, what: string): void {
    check(this.lib, rc, what);
  }

  /** Whether cuBLASLt has an algorithm for this GEMM (asked once per shape, alignments and bias; the answer is kept). */
  canRun(shape: GemmShape, a: DevicePtr, b: DevicePtr, d: DevicePtr, bias: DevicePtr = 0, scales?: { a: DevicePtr; b: DevicePtr }): boolean {
    return this.plan(shape, a, b, d, bias, scales) !== null;
  }

  /**
   * D = Aᵀ·B (+ bias[m]) in float32 (see GemmShape; compute and scale type float32, alpha 1, beta 0,
   * or beta 1 with C = D where the shape accumulates).
   * Returns whether the bias was added (false: cuBLASLt's bias epilogue is off or refused this
   * GEMM, and the caller must add it). Throws if cuBLASLt has no algorithm for it (see canRun).
   */
  matmul(shape: GemmShape, a: DevicePtr, b: DevicePtr, d: DevicePtr, bias: DevicePtr = 0, scales?: { a: DevicePtr; b: DevicePtr }): boolean {
    if (!shape.outerScales !== !scales) throw new CudaError(`cuBLASLt GEMM: ${shape.outerScales ? 'outer scales need their vectors' : 'scale vectors given for a GEMM without outer scales'}`);
    const plan = this.plan(shape, a, b, d, bias, scales);
    if (!plan) {
      throw new CudaError(
        `cuBLASLt ${this.version} has no algorithm for ${describe(shape)} on ${this.driver.device.name} (sm_${this.driver.device.computeCapability}); ` +
          "set backend.prefillGemm = 'tiled' to use the float32 kernel",
      );
    }
    const api = this.lib.api;
    const what = () => `cublasLtMatmul(${describe(shape)})`;
    // The plan's descriptor is shared by every GEMM of its shape: each call sets the pointers it
    // carries right before it is queued (a recorded step may queue or capture it later than now).
    const issue = (stream: Handle) => {
      if (plan.biasInEpilogue) this.setPointer(plan, 'bias', bias);
      if (scales) {
        this.setPointer(plan, 'aScale', scales.a);
        this.setPointer(plan, 'bScale', scales.b);
      }
      const beta = shape.accumulate ? this.one : this.zero;
      const rc = api.cublasLtMatmul(this.handle, plan.desc, this.one, a, plan.a, b, plan.b, beta, d, plan.d, d, plan.d, plan.algo, this.workspace, plan.workspaceBytes, stream);
      if (rc !== 0) this.check(rc, what());
    };
    if (this.driver.recorder) {
      // A recorded step (step-graphs.ts) holds the GEMM as a captured child graph: the same shape and
      // pointers are the same GEMM (the plan follows from them).
      const signature = Buffer.from(`${what()} ${a} ${b} ${d} ${bias} ${scales ? `${scales.a} ${scales.b}` : '-'}`);
      this.driver.recorder.captured({ name: what(), signature, issue });
    } else {
      this.driver.otherStreamWork();
      issue(this.driver.stream);
    }
    this.counters.matmuls++;
    if (this.driver.syncEveryLaunch) this.driver.check(this.driver.api.cuStreamSynchronize(this.driver.stream), what());
    return bias === 0 || plan.biasInEpilogue;
  }

  /** Point the plan's descriptor attribute at `ptr`, unless it already does. */
  private setPointer(plan: Plan, which: keyof Plan['set'], ptr: DevicePtr): void {
    if (plan.set[which] === ptr) return;
    const [attr, name] = POINTER_ATTRIBUTES[which];
    this.check(this.lib.api.cublasLtMatmulDescSetAttribute(plan.desc, attr, u64(ptr), 8), `cublasLtMatmulDescSetAttribute(${name})`);
    plan.set[which] = ptr;
    this.counters.pointerSets++;
  }

  private plan(shape: GemmShape, a: DevicePtr, b: DevicePtr, d: DevicePtr, bias: DevicePtr, scales?: { a: DevicePtr; b: DevicePtr }): Plan | null {
    const wantBias = bias !== 0 && this.biasEpilogue;
    const aligns = [a, b, d, wantBias ? bias : 0].map(alignmentOf);
    const key = `${shape.type} ${shape.m} ${shape.n} ${shape.k} ${shape.ldd} ${shape.out ?? 'f32'} ${shape.outerScales ? 'outer' : 'unit'} ${shape.accumulate ? 'acc' : 'set'} ${wantBias ? 1 : 0} ${aligns.join(' ')}`;
    let plan = this.plans.get(key);
    if (plan === undefined) {
      // With a bias, the epilogue first; where it is refused, the plain GEMM (the caller adds the bias).
      plan = (wantBias ? this.tryPlan(shape, aligns, bias, scales) : undefined) ?? this.tryPlan(shape, aligns, 0, scales) ?? null;
      this.plans.set(key, plan);
      this.counters.plans++;
    }
    return plan;
  }

  /** Descriptors and the heuristic's best algorithm, or undefined when it has none (descriptors freed). */
  private tryPlan(shape: GemmShape, aligns: number[], bias: DevicePtr, scales?: { a: DevicePtr; b: DevicePtr }): Plan | undefined {
    const api = this.lib.api;
    const made: Array<{ destroy: Fn; h: Handle }> = [];
    const create = (fn: Fn, destroy: Fn, what: string, ...args: unknown[]): Handle => {
      const out: Handle[] = [null];
      this.check(fn(out, ...args), what);
      made.push({ destroy, h: out[0] });
      return out[0];
    };
    let plan: Plan | undefined;
    let pref: Handle = null;
    try {
      const desc = create(api.cublasLtMatmulDescCreate, api.cublasLtMatmulDescDestroy, 'cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
      const set = (attr: number, buf: Buffer, what: string) => this.check(api.cublasLtMatmulDescSetAttribute(desc, attr, buf, buf.length), `cublasLtMatmulDescSetAttribute(${what})`);
      // A is the row-major [m, k] weight, i.e. column-major [k, m], used transposed; B column-major
      // [k, n], as is. This "TN" form is also the only one FP8 accepts on Ada and Hopper.
      set(DESC_TRANSA, i32(CUBLAS_OP_T), 'TRANSA');
      set(DESC_TRANSB, i32(CUBLAS_OP_N), 'TRANSB');
      set(DESC_EPILOGUE, u32(bias ? EPILOGUE_BIAS : EPILOGUE_DEFAULT), 'EPILOGUE');
      // The heuristic reads the bias pointer's alignment; each call sets the pointer again.
      if (bias) set(DESC_BIAS_POINTER, u64(bias), 'BIAS_POINTER');
      if (shape.outerScales) {
        set(DESC_A_SCALE_MODE, i32(MATRIX_SCALE_OUTER_VEC_32F), 'A_SCALE_MODE');
        set(DESC_B_SCALE_MODE, i32(MATRIX_SCALE_OUTER_VEC_32F), 'B_SCALE_MODE');
        // As with the bias, the heuristic may look at them; each call sets them again.
        if (scales) {
          set(DESC_A_SCALE_POINTER, u64(scales.a), 'A_SCALE_POINTER');
          set(DESC_B_SCALE_POINTER, u64(scales.b), 'B_SCALE_POINTER');
        }
      }
      const layout = (type: number, rows: number, cols: number, ld: number) =>
        create(api.cublasLtMatrixLayoutCreate, api.cublasLtMatrixLayoutDestroy, 'cublasLtMatrixLayoutCreate', type, rows, cols, ld);
      const a = layout(CUDA_TYPE[shape.type], shape.k, shape.m, shape.k);
      const b = layout(CUDA_TYPE[shape.type], shape.k, shape.n, shape.k);
      const d = layout(outType(shape), shape.m, shape.n, shape.ldd);
      const p: Handle[] = [null];
      this.check(api.cublasLtMatmulPreferenceCreate(p), 'cublasLtMatmulPreferenceCreate');
      pref = p[0];
      const setPref = (attr: number, buf: Buffer, what: string) =>
        this.check(api.cublasLtMatmulPreferenceSetAttribute(pref, attr, buf, buf.length), `cublasLtMatmulPreferenceSetAttribute(${what})`);
      setPref(PREF_MAX_WORKSPACE_BYTES, u64(CUBLASLT_WORKSPACE_BYTES), 'MAX_WORKSPACE_BYTES');
      setPref(PREF_MIN_ALIGNMENT_A_BYTES, u32(aligns[0]), 'MIN_ALIGNMENT_A_BYTES');
      setPref(PREF_MIN_ALIGNMENT_B_BYTES, u32(aligns[1]), 'MIN_ALIGNMENT_B_BYTES');
      setPref(PREF_MIN_ALIGNMENT_C_BYTES, u32(aligns[2]), 'MIN_ALIGNMENT_C_BYTES');
      setPref(PREF_MIN_ALIGNMENT_D_BYTES, u32(aligns[2]), 'MIN_ALIGNMENT_D_BYTES');
      const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * HEURISTIC_CANDIDATES);
      const returned = [0];
      const rc = api.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, d, d, pref, HEURISTIC_CANDIDATES, results, returned);
      // NOT_SUPPORTED: no algorithm for this combination (e.g. with the bias epilogue); the caller tries another.
      // INVALID_VALUE for outer-vector scales: this cuBLASLt or GPU does not scale that way (refused, not an error).
      if (rc === CUBLAS_STATUS_NOT_SUPPORTED || (shape.outerScales && rc === CUBLAS_STATUS_INVALID_VALUE)) return undefined;
      this.check(rc, `cublasLtMatmulAlgoGetHeuristic(${describe(shape)})`);
      // Results come best first; take the first that is usable.
      for (let i = 0; i < returned[0] && !plan; i++) {
        const r = results.subarray(i * HEURISTIC_RESULT_BYTES, (i + 1) * HEURISTIC_RESULT_BYTES);
        const state = r.readInt32LE(ALGO_BYTES + 8);
        const workspaceBytes = Number(r.readBigUInt64LE(ALGO_BYTES));
        if (state !== 0 || workspaceBytes > CUBLASLT_WORKSPACE_BYTES) continue;
        plan = { desc, a, b, d, algo: Buffer.from(r.subarray(0, ALGO_BYTES)), workspaceBytes, biasInEpilogue: bias !== 0, set: { bias, aScale: scales?.a ?? 0, bScale: scales?.b ?? 0 } };
      }
      return plan;
    } finally {
      if (pref !== null) api.cublasLtMatmulPreferenceDestroy(pref);
      // Kept for the plan's lifetime (the process) when it was made; freed when it was not.
      if (!plan) for (const { destroy, h } of made) destroy(h);
    }
  }
}

/** A cuBLAS status as the library names and explains it, e.g. "CUBLAS_STATUS_NOT_SUPPORTED (the requested functionality is not supported)". */
export function cublasStatusText(lib: CublasLtLibrary, rc: number): string {
  const name = lib.api.cublasLtGetStatusName(rc);
  const text = lib.api.cublasLtGetStatusString(rc);
  return `${typeof name === 'string' ? name : `cuBLAS status ${rc}`}${typeof text === 'string' ? ` (${text})` : ''}`;
}

function check(lib: CublasLtLibrary, rc: unknown, what: string): void {
  if (rc !== 0) throw new CudaError(`${what} failed: ${cublasStatusText(lib, rc as number)}`, rc as number);
}

function describe(s: GemmShape): string {
  return `${s.type} A [${s.m}, ${s.k}]ᵀ · B [${s.k}, ${s.n}] ${s.accumulate ? '+' : '→'} ${s.out === 'half' ? s.type : 'float32'} D, ld ${s.ldd}${s.outerScales ? ', outer-vector scales' : ''}`;
}

const MAX_GRID_Y = 65535;

/** Why FP8 prefill GEMMs cannot run here, or undefined when they can. */
export function fp8GemmUnsupportedReason(computeCapability: number, K: number): string | undefined {
  if (computeCapability < 89) return `FP8 tensor cores need compute capability 8.9 or newer, this GPU is ${computeCapability / 10}`;
  if (K % 16 !== 0) return `cuBLASLt's FP8 GEMM needs K to be a multiple of 16 (16-byte rows), K is ${K}`;
  return undefined;
}

/**
 * The prefill linears on cuBLASLt: float32 activations in and out, as the rest of the backend keeps
 * them. The activation goes through a pooled scratch in the operand type (recycled with the step's
 * other activations; stream order keeps the GEMM reading it first).
 */
export class CublasLtPrefill {
  private readonly gridStrideBlocks: number;
  /** Calls per path (tests check which one ran; benchmarks report it). */
  readonly counters = { half: 0, fp8: 0, fp8OuterScaled: 0 };

  constructor(
    readonly lt: CublasLt,
    private readonly driver: CudaDriver,
    private readonly kernels: KernelModules,
    private readonly pool: DevicePool,
  ) {
    this.gridStrideBlocks = driver.device.multiprocessors * 8;
  }

  private launch(kernel: string, grid: [number, number, number], block: number, kinds: string, args: number[], sharedBytes = 0): void {
    if (grid[0] === 0 || grid[1] === 0) return;
    this.driver.launch(this.kernels.fn('convert.cu', kernel), kernel, grid, block, kinds, args, sharedBytes);
  }

  /**
   * y [T, N] = x [T, K] · Wᵀ (+ bias), W a bf16 or f16 [N, K] matrix; x is rounded to W's type first.
   * `accumulate`: y += x · Wᵀ instead (no bias). Undefined (nothing launched) where cuBLASLt has no
   * algorithm for the shape: the caller's kernel runs. x is read only when xCast is not given.
   */
  half(x: DevicePtr, T: number, w: DevicePtr, dtype: 'bf16' | 'f16', N: number, K: number, bias: DevicePtr, y: DevicePtr, xCast?: PooledBuffer, accumulate = false): PooledBuffer | undefined {
    const n = T * K;
    // xCast: x already rounded to dtype by an earlier call (q, k and v share their input).
    const xh = xCast ?? this.pool.alloc(n * 2);
    const shape = halfGemmShape(T, dtype, N, K, accumulate ? 'f32+' : 'f32');
    if (accumulate && bias) throw new CudaError('cuBLASLt GEMM: an accumulating GEMM takes no bias');
    if (!this.lt.canRun(shape, w, xh.ptr, y, bias)) {
      if (!xCast) this.pool.release(xh);
      return undefined;
    }
    if (!xCast) this.cast(x, xh.ptr, n, dtype);
    const biasDone = this.lt.matmul(shape, w, xh.ptr, y, bias);
    if (!biasDone) this.launch('add_bias_rows', [Math.ceil(N / 256), Math.min(T, MAX_GRID_Y), 1], 256, 'ppii', [y, bias, T, N]);
    this.counters.half++;
    return xh;
  }

  /** dst = x rounded to dtype, n values (x float32). */
  cast(x: DevicePtr, dst: DevicePtr, n: number, dtype: 'bf16' | 'f16'): void {
    this.launch(`f32_to_${dtype}`, this.elementwiseGrid(n), 256, 'ppl', [x, dst, n]);
  }

  private elementwiseGrid(n: number): [number, number, number] {
    return [Math.max(1, Math.min(Math.ceil(n / (8 * 256)), this.gridStrideBlocks)), 1, 1];
  }

  /**
   * y [T, N] = xh [T, K] · Wᵀ with xh and W in dtype and y in dtype too (no bias): the prefill MLP's
   * gate and up, and its down from the half intermediate when `out` is 'f32' (y float32), or added
   * to float32 y when 'f32+'. False (nothing launched) where cuBLASLt has no algorithm for it.
   */
  halfGemm(xh: DevicePtr, T: number, w: DevicePtr, dtype: 'bf16' | 'f16', N: number, K: number, y: DevicePtr, out: 'f32' | 'half' | 'f32+'): boolean {
    const shape = halfGemmShape(T, dtype, N, K, out);
    if (!this.lt.canRun(shape, w, xh, y)) return false;
    this.lt.matmul(shape, w, xh, y);
    this.counters.half++;
    return true;
  }

  /** y = silu(g) · u over n values of dtype (convert.cu silu_mul_bf16 / silu_mul_f16). */
  siluMulHalf(g: DevicePtr, u: DevicePtr, y: DevicePtr, n: number, dtype: 'bf16' | 'f16'): void {
    this.launch(`silu_mul_${dtype}`, this.elementwiseGrid(n), 256, 'pppl', [g, u, y, n]);
  }

  /** D's leading dimension for an FP8 GEMM of N outputs: cuBLASLt wants its rows 16-byte aligned. */
  static fp8Ldd(N: number): number {
    return Math.ceil(N / 4) * 4;
  }

  /**
   * Whether cuBLASLt has an FP8 algorithm for [T, K] · [N, K]ᵀ with these operand addresses (d: the
   * GEMM's output, 0 for a pool scratch, whose alignment 0 stands for).
   */
  canFp8(T: number, N: number, K: number, codes: DevicePtr, xq: DevicePtr, d: DevicePtr): boolean {
    const reason = fp8GemmUnsupportedReason(this.driver.device.computeCapability, K);
    if (reason) throw new CudaError(`matmulFp8: ${reason}`);
    return this.lt.canRun({ type: 'e4m3', m: N, n: T, k: K, ldd: CublasLtPrefill.fp8Ldd(N) }, codes, xq, d);
  }

  /** x [T, K] float32 quantised per token: codes (e4m3, [T, K]) and scales (absmax / 448, [T]). */
  quantizeRows(x: DevicePtr, T: number, K: number, codes: DevicePtr, scales: DevicePtr): void {
    this.launch('quantize_rows_e4m3', [T, 1, 1], quantRowThreads(K), 'pppi', [x, codes, scales, K]);
  }

  /**
   * The FP8 GEMM of per-token codes xq (scales xScales) with weight codes (per-row wScales), into
   * float32 y [T, N] with the bias. Where cuBLASLt scales by vectors itself (cuBLAS 12.9+ on Hopper
   * and newer; no bias; rows of N floats 16-byte aligned) one GEMM does it all; otherwise the GEMM
   * with unit scales into y (or a padded scratch), then scale_fp8_product. Check canFp8 first.
   */
  fp8GemmScaled(xq: DevicePtr, xScales: DevicePtr, T: number, codes: DevicePtr, wScales: DevicePtr, N: number, K: number, bias: DevicePtr, y: DevicePtr): void {
    const ldd = CublasLtPrefill.fp8Ldd(N);
    const scaled: GemmShape = { type: 'e4m3', m: N, n: T, k: K, ldd, outerScales: true };
    if (bias === 0 && ldd === N && this.lt.canRun(scaled, codes, xq, y, 0, { a: wScales, b: xScales })) {
      this.lt.matmul(scaled, codes, xq, y, 0, { a: wScales, b: xScales });
      this.counters.fp8++;
      this.counters.fp8OuterScaled++;
      return;
    }
    const scratch = ldd === N ? undefined : this.pool.alloc(T * ldd * 4);
    const d = scratch?.ptr ?? y;
    this.fp8Gemm(xq, T, codes, N, K, d);
    this.launch('scale_fp8_product', [Math.ceil(N / 256), Math.min(T, MAX_GRID_Y), 1], 256, 'pppppiii', [d, xScales, wScales, bias, y, T, N, ldd]);
    if (scratch) this.pool.release(scratch);
  }

  /**
   * Whether fp8GemmScaledAdd can run: cuBLASLt scales by vectors here (cuBLAS 12.9+, Hopper or newer)
   * and has an algorithm for the shape; N a multiple of 4 (16-byte rows of y).
   */
  canFp8ScaledAdd(T: number, N: number, K: number, codes: DevicePtr, wScales: DevicePtr, xq: DevicePtr, xScales: DevicePtr, y: DevicePtr): boolean {
    const reason = fp8GemmUnsupportedReason(this.driver.device.computeCapability, K);
    if (reason) throw new CudaError(`matmulFp8: ${reason}`);
    return CublasLtPrefill.fp8Ldd(N) === N && this.lt.canRun(scaledAdd(T, N, K), codes, xq, y, 0, { a: wScales, b: xScales });
  }

  /** y [T, N] float32 += (xq · codesᵀ) · xScales[t] · wScales[n], in one GEMM (the residual stream's add). Check canFp8ScaledAdd first. */
  fp8GemmScaledAdd(xq: DevicePtr, xScales: DevicePtr, T: number, codes: DevicePtr, wScales: DevicePtr, N: number, K: number, y: DevicePtr): void {
    this.lt.matmul(scaledAdd(T, N, K), codes, xq, y, 0, { a: wScales, b: xScales });
    this.counters.fp8++;
    this.counters.fp8OuterScaled++;
  }

  /** d [T, fp8Ldd(N)] float32 = xq · codesᵀ with unit scales (the FP8 GEMM alone). Check canFp8 first. */
  fp8Gemm(xq: DevicePtr, T: number, codes: DevicePtr, N: number, K: number, d: DevicePtr): void {
    this.lt.matmul({ type: 'e4m3', m: N, n: T, k: K, ldd: CublasLtPrefill.fp8Ldd(N) }, codes, xq, d);
    this.counters.fp8++;
  }

  /**
   * The FP8 MLP's middle: from the gate and up GEMMs' unscaled outputs dg, du [T, fp8Ldd(N)], the
   * down GEMM's input quantised per token (convert.cu silu_mul_quantize_e4m3).
   */
  siluMulQuantizeFp8(dg: DevicePtr, du: DevicePtr, xScales: DevicePtr, wsGate: DevicePtr, wsUp: DevicePtr, T: number, N: number, codes: DevicePtr, scales: DevicePtr): void {
    this.launch('silu_mul_quantize_e4m3', [T, 1, 1], quantRowThreads(N), 'pppppppii', [dg, du, xScales, wsGate, wsUp, codes, scales, N, CublasLtPrefill.fp8Ldd(N)]);
  }

  /** The FP8 GEMM scaled inside cuBLASLt into bf16 d [T, N] (fp8GemmScaledHalf): whether it can run (N a multiple of 8: 16-byte rows). */
  canFp8ScaledHalf(T: number, N: number, K: number, codes: DevicePtr, wScales: DevicePtr, xq: DevicePtr, xScales: DevicePtr, d: DevicePtr): boolean {
    return N % 8 === 0 && this.lt.canRun(scaledHalf(T, N, K), codes, xq, d, 0, { a: wScales, b: xScales });
  }

  /** d [T, N] bf16 = (xq · codesᵀ) · xScales[t] · wScales[n], scaled by cuBLASLt (outer vectors). Check canFp8ScaledHalf first. */
  fp8GemmScaledHalf(xq: DevicePtr, xScales: DevicePtr, T: number, codes: DevicePtr, wScales: DevicePtr, N: number, K: number, d: DevicePtr): void {
    this.lt.matmul(scaledHalf(T, N, K), codes, xq, d, 0, { a: wScales, b: xScales });
    this.counters.fp8++;
    this.counters.fp8OuterScaled++;
  }

  /** The FP8 MLP's middle from gate and up already scaled, in bf16 [T, N]: down's input quantised per token. */
  siluMulQuantizeBf16(g: DevicePtr, u: DevicePtr, T: number, N: number, codes: DevicePtr, scales: DevicePtr): void {
    // About one block an SM, each looping over rows (convert.cu): rows streamed through shared memory
    // where STAGES of them fit, else the next row's loads in flight in registers.
    const blocks = Math.min(T, this.pipelinedRowBlocks ?? this.driver.device.multiprocessors);
    const staged = this.stagedSiluRows ? siluStaging(N, this.driver.device.sharedPerBlockOptin, [g, u, codes]) : undefined;
    if (staged) {
      this.launch(`silu_mul_quantize_bf16_e4m3_staged${staged.stages}`, [blocks, 1, 1], staged.threads, 'ppppii', [g, u, codes, scales, N, T], staged.sharedBytes);
      return;
    }
    this.launch('silu_mul_quantize_bf16_e4m3', [blocks, 1, 1], Math.min(QUANT_PIPELINED_THREADS, quantRowThreads(N)), 'ppppii', [g, u, codes, scales, N, T]);
  }
  /** Blocks of the pipelined row kernels (default: one an SM); tests set T to give every row its own block. */
  pipelinedRowBlocks?: number;
  /** The FP8 MLP's middle through shared memory where it fits (siluStaging); false keeps rows in registers (tests compare). */
  stagedSiluRows = true;
}

/** The shape of halfGemm's GEMM ('f32+': float32 D accumulated). */
export function halfGemmShape(T: number, dtype: 'bf16' | 'f16', N: number, K: number, out: 'f32' | 'half' | 'f32+'): GemmShape {
  return { type: dtype, m: N, n: T, k: K, ldd: N, out: out === 'half' ? 'half' : 'f32', accumulate: out === 'f32+' };
}

/** An FP8 GEMM of T tokens into float32 [T, N], scaled inside cuBLASLt and added to D's old values (fp8GemmScaledAdd). */
function scaledAdd(T: number, N: number, K: number): GemmShape {
  return { type: 'e4m3', m: N, n: T, k: K, ldd: N, outerScales: true, accumulate: true };
}

/** An FP8 GEMM of T tokens into bf16 [T, N], scaled by per-row and per-token vectors inside cuBLASLt. */
function scaledHalf(T: number, N: number, K: number): GemmShape {
  return { type: 'e4m3', m: N, n: T, k: K, ldd: N, out: 'half', outerScales: true };
}

/**
 * The backend's prefillGemm default: $TACHYON_PREFILL_GEMM (auto, cublaslt or tiled), so a whole
 * run, e.g. a test suite that compares against float32 references exactly, can pick the tiled kernel.
 */
export function prefillGemmFromEnv(env: NodeJS.ProcessEnv = process.env): 'auto' | 'cublaslt' | 'tiled' {
  const v = env.TACHYON_PREFILL_GEMM;
  if (v === undefined || v === '') return 'auto';
  if (v === 'auto' || v === 'cublaslt' || v === 'tiled') return v;
  throw new CudaError(`TACHYON_PREFILL_GEMM must be auto, cublaslt or tiled, not '${v}'`);
}

let shared: { lt: CublasLt } | { reason: string } | undefined;

/**
 * The process's cuBLASLt (one handle and workspace, like the one driver and stream) wrapped for a
 * backend's kernels and pool, or why it cannot be had: the library is missing, or its handle could
 * not be created. Tried once; the answer is kept.
 */
export function openCublasLtPrefill(driver: CudaDriver, kernels: KernelModules, pool: DevicePool): CublasLtPrefill | { reason: string } {
  if (!shared) {
    try {
      shared = { lt: CublasLt.open(driver) };
    } catch (err) {
      shared = { reason: (err as Error).message };
    }
  }
  return 'lt' in shared ? new CublasLtPrefill(shared.lt, driver, kernels, pool) : shared;
}
