// koffi bindings to NVRTC, the run-time CUDA C++ compiler: find libnvrtc wherever a CUDA toolkit or
// a Python wheel put it, and compile kernel source to a CUBIN for the present GPU (or to PTX for the
// driver to finish when this NVRTC predates the GPU).

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import koffi from 'koffi';
import { CudaError } from './driver.js';
import { libraryCandidates } from './library-search.js';

type Fn = (...args: unknown[]) => unknown;

class NvrtcApi {
  readonly nvrtcVersion: Fn;
  readonly nvrtcGetErrorString: Fn;
  readonly nvrtcGetNumSupportedArchs: Fn;
  readonly nvrtcGetSupportedArchs: Fn;
  readonly nvrtcCreateProgram: Fn;
  readonly nvrtcCompileProgram: Fn;
  readonly nvrtcDestroyProgram: Fn;
  readonly nvrtcGetProgramLogSize: Fn;
  readonly nvrtcGetProgramLog: Fn;
  readonly nvrtcGetCUBINSize: Fn;
  readonly nvrtcGetCUBIN: Fn;
  readonly nvrtcGetPTXSize: Fn;
  readonly nvrtcGetPTX: Fn;

  constructor(lib: ReturnType<typeof koffi.load>) {
    const f = (sig: string) => lib.func(sig) as Fn;
    this.nvrtcVersion = f('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)');
    this.nvrtcGetErrorString = f('const char *nvrtcGetErrorString(int result)');
    this.nvrtcGetNumSupportedArchs = f('int nvrtcGetNumSupportedArchs(_Out_ int *n)');
    this.nvrtcGetSupportedArchs = f('int nvrtcGetSupportedArchs(_Out_ int *archs)');
    this.nvrtcCreateProgram = f('int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)');
    this.nvrtcCompileProgram = f('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)');
    this.nvrtcDestroyProgram = f('int nvrtcDestroyProgram(_Inout_ void **prog)');
    this.nvrtcGetProgramLogSize = f('int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)');
    this.nvrtcGetProgramLog = f('int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)');
    this.nvrtcGetCUBINSize = f('int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)');
    this.nvrtcGetCUBIN = f('int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)');
    this.nvrtcGetPTXSize = f('int nvrtcGetPTXSize(void *prog, _Out_ size_t *size)');
    this.nvrtcGetPTX = f('int nvrtcGetPTX(void *prog, _Out_ uint8_t *ptx)');
  }
}

/**
 * Where libnvrtc may be, most specific first: $NVRTC, the loader's own search, CUDA toolkits,
 * ldconfig, Python wheels. Lazy, so the slower places (ldconfig, python3) are asked only if needed.
 */
export function* nvrtcCandidates(env: NodeJS.ProcessEnv = process.env): Generator<string> {
  yield* libraryCandidates({ name: 'nvrtc', envVar: 'NVRTC', majors: ['13', '12'], wheelDirs: ['cu13', 'cu12', 'cuda_nvrtc'] }, env);
}

export interface CompileResult {
  /** A CUBIN, or NUL-terminated PTX text for the driver to compile. */
  image: Uint8Array;
  kind: 'cubin' | 'ptx';
  /** e.g. sm_90, or compute_90 when PTX. */
  target: string;
  log: string;
}

export class Nvrtc {
  private constructor(
    private readonly api: NvrtcApi,
    readonly path: string,
    readonly version: string,
    /** Compute capabilities this NVRTC can compile to machine code, e.g. [75, 80, ..., 90, 100, ...]. */
    readonly supportedArchs: number[],
  ) {}

  /** Load the first libnvrtc that works; the error lists what was tried. */
  static load(): Nvrtc {
    const tried: string[] = [];
    for (const path of nvrtcCandidates()) {
      if (path.includes('/') && !existsSync(path)) continue;
      try {
        if (path.includes('/')) preloadBuiltins(dirname(path));
        const api = new NvrtcApi(koffi.load(path));
        const major = [0];
        const minor = [0];
        if (api.nvrtcVersion(major, minor) !== 0) throw new Error('nvrtcVersion failed');
        const n = [0];
        api.nvrtcGetNumSupportedArchs(n);
        const archs = new Int32Array(Math.max(n[0], 1));
        api.nvrtcGetSupportedArchs(archs);
        return new Nvrtc(api, path.includes('/') ? path : resolveLoadedPath(path), `${major[0]}.${minor[0]}`, Array.from(archs.subarray(0, n[0])));
      } catch (err) {
        tried.push(`${path} (${(err as Error).message.split('\n')[0]})`);
      }
    }
    throw new CudaError(
      `NVRTC (libnvrtc.so, the CUDA run-time compiler) was not found; set NVRTC=/path/to/libnvrtc.so.N or install the CUDA toolkit or the nvidia-cuda-nvrtc wheel. Tried: ${tried.slice(0, 8).join('; ')}${tried.length > 8 ? `; and ${tried.length - 8} more` : ''}`,
    );
  }

  private errorText(rc: number): string {
    const s = this.api.nvrtcGetErrorString(rc);
    return typeof s === 'string' ? s : `NVRTC error ${rc}`;
  }

  private check(rc: unknown, what: string): void {
    if (rc !== 0) throw new CudaError(`${what} failed: ${this.errorText(rc as number)}`);
  }

  /**
   * The target for a GPU of compute capability `cc`: its own sm_XY when this NVRTC knows it, else
   * PTX for the newest architecture it knows below (the driver compiles that PTX for the GPU).
   */
  targetFor(cc: number, archSpecific = false): { kind: 'cubin' | 'ptx'; arch: string } {
    if (archSpecific) {
      // sm_90a and the like: the GPU's own instructions that later GPUs lack (wgmma), machine code only.
      if (!this.supportedArchs.includes(cc)) throw new CudaError(`NVRTC ${this.version} (${this.path}) cannot compile arch-specific code for compute capability ${cc / 10}`);
      return { kind: 'cubin', arch: `sm_${cc}a` };
    }
    if (this.supportedArchs.includes(cc)) return { kind: 'cubin', arch: `sm_${cc}` };
    const below = this.supportedArchs.filter((a) => a <= cc);
    if (below.length === 0) throw new CudaError(`NVRTC ${this.version} (${this.path}) cannot compile for compute capability ${cc / 10}: it supports ${this.supportedArchs.join(', ')}`);
    return { kind: 'ptx', arch: `compute_${Math.max(...below)}` };
  }

  /** Compile `source` for compute capability `cc`; throws with the compiler log on failure. */
  compile(source: string, name: string, cc: number, options: string[], archSpecific = false): CompileResult {
    const target = this.targetFor(cc, archSpecific);
    const prog: unknown[] = [null];
    this.check(this.api.nvrtcCreateProgram(prog, source, name, 0, null, null), `nvrtcCreateProgram(${name})`);
    try {
      const opts = [`--gpu-architecture=${target.arch}`, ...options];
      const rc = this.api.nvrtcCompileProgram(prog[0], opts.length, opts) as number;
      const logSize = [0];
      this.api.nvrtcGetProgramLogSize(prog[0], logSize);
      let log = '';
      if (Number(logSize[0]) > 1) {
        const buf = Buffer.alloc(Number(logSize[0]));
        this.api.nvrtcGetProgramLog(prog[0], buf);
        log = buf.toString('utf8').replace(/\0+$/, '').trim();
      }
      if (rc !== 0) throw new CudaError(`NVRTC could not compile ${name} for ${target.arch} (${this.errorText(rc)}):\n${log}`);
      const size = [0];
      if (target.kind === 'cubin') {
        this.check(this.api.nvrtcGetCUBINSize(prog[0], size), 'nvrtcGetCUBINSize');
        const image = new Uint8Array(Number(size[0]));
        this.check(this.api.nvrtcGetCUBIN(prog[0], image), 'nvrtcGetCUBIN');
        return { image, kind: 'cubin', target: target.arch, log };
      }
      this.check(this.api.nvrtcGetPTXSize(prog[0], size), 'nvrtcGetPTXSize');
      const image = new Uint8Array(Number(size[0]));
      this.check(this.api.nvrtcGetPTX(prog[0], image), 'nvrtcGetPTX');
      return { image, kind: 'ptx', target: target.arch, log };
    } finally {
      this.api.nvrtcDestroyProgram(prog);
    }
  }
}

/**
 * NVRTC dlopens libnvrtc-builtins.so.X.Y by name; outside the loader's search path (a Python wheel,
 * a toolkit not in ld.so.conf) that fails at the first compile. Loading it first from NVRTC's own
 * folder makes the later dlopen find it.
 */
function preloadBuiltins(dir: string): void {
  try {
    for (const n of readdirSync(dir).filter((n) => /^libnvrtc-builtins\.so[\d.]*$/.test(n))) {
      try {
        koffi.load(join(dir, n));
      } catch {
        // the compile will say what is missing
      }
    }
  } catch {
    // unreadable folder
  }
}

/** For a library found by the loader's own search, the file it mapped (for messages). */
function resolveLoadedPath(name: string): string {
  try {
    const line = readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => /\/libnvrtc\.so[^/]*$/.test(l));
    return line ? line.slice(line.indexOf('/')) : name;
  } catch {
    return name;
  }
}
