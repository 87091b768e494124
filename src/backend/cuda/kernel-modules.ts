// The kernels: .cu files under src/backend/cuda/kernels/ (shipped with the package, read at run
// time from the package root), compiled by NVRTC for the present GPU and cached on disk by a hash
// of (all kernel sources, target, options, NVRTC version), so only the first run pays for NVRTC.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../../model/default-model.js';
import type { CudaDriver, Handle } from './driver.js';
import type { Nvrtc } from './nvrtc.js';

/** Where the .cu sources live: src/ ships in the package ("files"), and tsc does not copy .cu files into dist/. */
export function kernelSourceDir(): string {
  return join(packageRoot(), 'src', 'backend', 'cuda', 'kernels');
}

/** $TACHYON_CACHE/kernels, else $XDG_CACHE_HOME/tachyon/kernels, else ~/.cache/tachyon/kernels. */
export function kernelCacheDir(): string {
  const base = process.env.TACHYON_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'tachyon');
  return join(base, 'kernels');
}

const COMPILE_OPTIONS = ['-std=c++17', '--fmad=true'];

/**
 * Macros for every kernel module from $TACHYON_NVRTC_DEFINES ("NAME=VALUE NAME2"), so a benchmark
 * can compare compile-time variants of a kernel in one checkout (docs/cuda.md, "Tried and
 * reverted", used it for the quantized GEMV's load order); part of the cache key.
 */
export function kernelDefinesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const words = (env.TACHYON_NVRTC_DEFINES ?? '').split(/\s+/).filter(Boolean);
  for (const w of words) if (!/^[A-Za-z_]\w*(=[\w.+-]*)?$/.test(w)) throw new Error(`TACHYON_NVRTC_DEFINES: '${w}' is not NAME or NAME=VALUE`);
  return words.map((w) => `-D${w}`);
}

export interface ModuleStats {
  file: string;
  target: string;
  fromCache: boolean;
  ms: number;
}

export class KernelModules {
  private readonly modules = new Map<string, Handle>();
  private readonly functions = new Map<string, Handle>();
  private readonly sources: Map<string, string>;
  /** Hash of every file in the kernels folder: a header change recompiles every module. */
  private readonly treeHash: string;
  readonly stats: ModuleStats[] = [];
  /** This NVRTC refused --split-compile. */
  private noParallelCompile = false;

  constructor(
    private readonly driver: CudaDriver,
    private readonly nvrtc: Nvrtc,
    readonly sourceDir = kernelSourceDir(),
    readonly cacheDir: string | undefined = kernelCacheDir(),
  ) {
    this.sources = new Map();
    const h = createHash('sha256');
    for (const name of readdirSync(sourceDir).sort()) {
      if (!/\.(cu|cuh)$/.test(name)) continue;
      const text = readFileSync(join(sourceDir, name), 'utf8');
      this.sources.set(name, text);
      h.update(name).update('\0').update(text).update('\0');
    }
    this.treeHash = h.digest('hex');
  }

  /**
   * A kernel by module and extern "C" name, compiled and loaded on first use. A module is a file
   * (e.g. 'linear.cu'), or a file compiled with macros defined: 'attention-decode.cu+KV_BF16' (see
   * moduleVariant), a separate module with its own cache entry; either with '@a' appended is
   * compiled for the arch-specific target (archSpecificModule).
   */
  fn(file: string, name: string): Handle {
    const key = `${file}:${name}`;
    let f = this.functions.get(key);
    if (f === undefined) {
      f = this.driver.getFunction(this.module(file), name);
      this.functions.set(key, f);
    }
    return f;
  }

  private compileParallel(source: string, file: string, cc: number, options: string[], archSpecific: boolean): Uint8Array {
    if (!this.noParallelCompile) {
      try {
        return this.nvrtc.compile(source, file, cc, [...options, PARALLEL_OPTION], archSpecific).image;
      } catch (err) {
        if (!/INVALID_OPTION/.test((err as Error).message)) throw err;
        this.noParallelCompile = true;
      }
    }
    return this.nvrtc.compile(source, file, cc, options, archSpecific).image;
  }

  module(name: string): Handle {
    let m = this.modules.get(name);
    if (m !== undefined) return m;
    const { file, variant, archSpecific } = parseModuleName(name);
    const source = this.sources.get(file);
    if (source === undefined) throw new Error(`kernel source ${file} is missing from ${this.sourceDir}`);
    const t0 = performance.now();
    const cc = this.driver.device.computeCapability;
    const target = this.nvrtc.targetFor(cc, archSpecific);
    const defines = [...variant.map((d) => `-D${d}`), ...kernelDefinesFromEnv()];
    const options = [...COMPILE_OPTIONS, ...defines, `--include-path=${this.sourceDir}`];
    const key = createHash('sha256')
      .update([this.treeHash, file, target.kind, target.arch, COMPILE_OPTIONS.join(' '), defines.join(' '), this.nvrtc.version].join('\n'))
      .digest('hex')
      .slice(0, 32);
    const cached = this.cacheDir ? join(this.cacheDir, `${name.replace(/\W/g, '_')}-${target.arch}-${key}.${target.kind}`) : undefined;
    let image: Uint8Array | undefined;
    let fromCache = false;
    if (cached) {
      try {
        image = readFileSync(cached);
        fromCache = true;
      } catch {
        // not cached yet
      }
    }
    if (!image) {
      image = this.compileParallel(source, file, cc, options, archSpecific);
      if (cached) writeAtomically(cached, image);
    }
    m = this.driver.loadModule(image, `${name} for ${target.arch}`);
    this.modules.set(name, m);
    this.stats.push({ file: name, target: target.arch, fromCache, ms: performance.now() - t0 });
    return m;
  }
}

/** `file` compiled with each of `defines` (NAME or NAME=VALUE) defined: a module name for KernelModules.fn. */
export function moduleVariant(file: string, ...defines: string[]): string {
  return [file, ...defines].join('+');
}

const ARCH_SPECIFIC = '@a';

/**
 * A module compiled for the GPU's arch-specific target (sm_90a: wgmma, which no later GPU runs), as
 * machine code: only for kernels the host launches after checking the compute capability.
 */
export function archSpecificModule(name: string): string {
  return name + ARCH_SPECIFIC;
}

/** A module name's parts: its source file, the macros it defines, whether it is arch-specific. */
export function parseModuleName(name: string): { file: string; variant: string[]; archSpecific: boolean } {
  const archSpecific = name.endsWith(ARCH_SPECIFIC);
  const [file, ...variant] = (archSpecific ? name.slice(0, -ARCH_SPECIFIC.length) : name).split('+');
  return { file, variant, archSpecific };
}

/**
 * NVRTC's optimizer on every core (--split-compile=0): the quantized GEMV module, dozens of template
 * instantiations, took 81 s cold on one core of the H100 machine. An NVRTC too old for the option
 * compiles on one thread instead. The result is the same program, so the cache key leaves it out.
 */
const PARALLEL_OPTION = '--split-compile=0';

/** Write via a temporary file and rename, so a concurrent reader never sees half a CUBIN; an unwritable cache is skipped. */
function writeAtomically(path: string, data: Uint8Array): void {
  try {
    mkdirSync(join(path, '..'), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch {
    // A read-only home: compile again next time.
  }
}
