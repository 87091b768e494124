// koffi bindings to the CUDA driver API (libcuda.so.1): device, primary context, plain device
// allocations, copies, a stream, modules, kernel launches and events. Every result code is checked
// and turned into a CudaError naming the call and the driver's own error name and text.

import koffi from 'koffi';
import { TachyonError } from '../../errors.js';
import { letsDependentsStart, waitsForPredecessor } from './programmatic-launch.js';

type Fn = (...args: unknown[]) => unknown;
/** An opaque driver handle (context, stream, module, function, event) as koffi returns it. */
export type Handle = unknown;
/** A device address. Kept as a JS number: device virtual addresses stay far below 2^53. */
export type DevicePtr = number;

/** A CUDA driver or NVRTC call failed; the message names the call and the error. */
export class CudaError extends TachyonError {
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super('internal', message);
    this.name = 'CudaError';
  }
}

export const CUDA_ERROR_OUT_OF_MEMORY = 2;
const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
const CU_DEVICE_ATTRIBUTE_INTEGRATED = 18;
const CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
/** CUfunction_attribute: the dynamic shared memory a launch of the function may ask for. */
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
/** Dynamic shared memory any launch may ask for without raising the function's limit. */
const DEFAULT_DYNAMIC_SHARED = 48 * 1024;
const CU_STREAM_NON_BLOCKING = 1;
/** CUstreamCaptureMode: other threads' and this thread's unsafe calls are not checked against the capture. */
const CU_STREAM_CAPTURE_MODE_RELAXED = 2;

export interface DeviceInfo {
  ordinal: number;
  name: string;
  /** Compute capability as major·10 + minor (90 for the H100, 87 for Orin, 110 for Thor). */
  computeCapability: number;
  multiprocessors: number;
  l2Bytes: number;
  /** Shared memory a block may use once its function allows it (static and dynamic together). */
  sharedPerBlockOptin: number;
  totalMemoryBytes: number;
  /** Integrated GPU sharing memory with the CPU (Jetson). */
  integrated: boolean;
  driverVersion: number;
}

/** The functions of libcuda we use, bound once per process. */
class DriverApi {
  readonly cuInit: Fn;
  readonly cuDriverGetVersion: Fn;
  readonly cuGetErrorName: Fn;
  readonly cuGetErrorString: Fn;
  readonly cuDeviceGetCount: Fn;
  readonly cuDeviceGet: Fn;
  readonly cuDeviceGetName: Fn;
  readonly cuDeviceGetAttribute: Fn;
  readonly cuDeviceTotalMem: Fn;
  readonly cuFuncSetAttribute: Fn;
  readonly cuDevicePrimaryCtxRetain: Fn;
  readonly cuCtxSetCurrent: Fn;
  readonly cuCtxSynchronize: Fn;
  readonly cuMemAlloc: Fn;
  readonly cuMemFree: Fn;
  readonly cuMemGetInfo: Fn;
  readonly cuMemcpyHtoD: Fn;
  readonly cuMemcpyDtoH: Fn;
  readonly cuMemcpyHtoDAsync: Fn;
  readonly cuMemcpyDtoHAsync: Fn;
  readonly cuMemcpyDtoDAsync: Fn;
  readonly cuMemsetD32Async: Fn;
  readonly cuStreamCreate: Fn;
  readonly cuStreamSynchronize: Fn;
  readonly cuModuleLoadData: Fn;
  readonly cuModuleGetFunction: Fn;
  readonly cuLaunchKernel: Fn;
  readonly cuEventCreate: Fn;
  readonly cuEventRecord: Fn;
  readonly cuEventSynchronize: Fn;
  readonly cuEventElapsedTime: Fn;
  readonly cuGraphCreate: Fn;
  readonly cuGraphAddKernelNode: Fn;
  readonly cuGraphInstantiate: Fn;
  readonly cuGraphExecKernelNodeSetParams: Fn;
  readonly cuGraphLaunch: Fn;
  readonly cuGraphExecDestroy: Fn;
  readonly cuGraphDestroy: Fn;
  readonly cuGraphAddChildGraphNode: Fn;
  readonly cuStreamBeginCapture: Fn;
  readonly cuStreamEndCapture: Fn;
  /** Programmatic dependent launch (CUDA 12.3+ drivers); undefined where the driver lacks them. */
  readonly cuLaunchKernelEx: Fn | undefined;
  readonly cuGraphAddDependencies: Fn | undefined;

  constructor(lib: ReturnType<typeof koffi.load>) {
    const f = (sig: string) => lib.func(sig) as Fn;
    this.cuInit = f('int cuInit(unsigned int flags)');
    this.cuDriverGetVersion = f('int cuDriverGetVersion(_Out_ int *version)');
    this.cuGetErrorName = f('int cuGetErrorName(int error, _Out_ const char **name)');
    this.cuGetErrorString = f('int cuGetErrorString(int error, _Out_ const char **text)');
    this.cuDeviceGetCount = f('int cuDeviceGetCount(_Out_ int *count)');
    this.cuDeviceGet = f('int cuDeviceGet(_Out_ int *device, int ordinal)');
    this.cuDeviceGetName = f('int cuDeviceGetName(_Out_ uint8_t *name, int len, int device)');
    this.cuDeviceGetAttribute = f('int cuDeviceGetAttribute(_Out_ int *value, int attribute, int device)');
    this.cuDeviceTotalMem = f('int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int device)');
    this.cuFuncSetAttribute = f('int cuFuncSetAttribute(void *func, int attribute, int value)');
    this.cuDevicePrimaryCtxRetain = f('int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int device)');
    this.cuCtxSetCurrent = f('int cuCtxSetCurrent(void *ctx)');
    this.cuCtxSynchronize = f('int cuCtxSynchronize()');
    this.cuMemAlloc = f('int cuMemAlloc_v2(_Out_ uint64_t *ptr, size_t bytes)');
    this.cuMemFree = f('int cuMemFree_v2(uint64_t ptr)');
    this.cuMemGetInfo = f('int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)');
    this.cuMemcpyHtoD = f('int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)');
    this.cuMemcpyDtoH = f('int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)');
    this.cuMemcpyHtoDAsync = f('int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)');
    this.cuMemcpyDtoHAsync = f('int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)');
    this.cuMemcpyDtoDAsync = f('int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)');
    this.cuMemsetD32Async = f('int cuMemsetD32Async(uint64_t dst, unsigned int value, size_t count, void *stream)');
    this.cuStreamCreate = f('int cuStreamCreate(_Out_ void **stream, unsigned int flags)');
    this.cuStreamSynchronize = f('int cuStreamSynchronize(void *stream)');
    this.cuModuleLoadData = f('int cuModuleLoadData(_Out_ void **module, const void *image)');
    this.cuModuleGetFunction = f('int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)');
    this.cuLaunchKernel = f(
      'int cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int sharedBytes, void *stream, void *params, void *extra)',
    );
    this.cuEventCreate = f('int cuEventCreate(_Out_ void **event, unsigned int flags)');
    this.cuEventRecord = f('int cuEventRecord(void *event, void *stream)');
    this.cuEventSynchronize = f('int cuEventSynchronize(void *event)');
    this.cuEventElapsedTime = f('int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)');
    // Graphs (step-graphs.ts). Node parameters are CUDA_KERNEL_NODE_PARAMS (v2), built by kernelNodeParams.
    this.cuGraphCreate = f('int cuGraphCreate(_Out_ void **graph, unsigned int flags)');
    this.cuGraphAddKernelNode = f('int cuGraphAddKernelNode_v2(_Out_ void **node, void *graph, void *deps, size_t numDeps, void *params)');
    this.cuGraphInstantiate = f('int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, uint64_t flags)');
    this.cuGraphExecKernelNodeSetParams = f('int cuGraphExecKernelNodeSetParams_v2(void *exec, void *node, void *params)');
    this.cuGraphLaunch = f('int cuGraphLaunch(void *exec, void *stream)');
    this.cuGraphExecDestroy = f('int cuGraphExecDestroy(void *exec)');
    this.cuGraphDestroy = f('int cuGraphDestroy(void *graph)');
    // Library calls (cuBLASLt) in a recorded step: captured from a side stream into a child graph.
    this.cuGraphAddChildGraphNode = f('int cuGraphAddChildGraphNode(_Out_ void **node, void *graph, void *deps, size_t numDeps, void *child)');
    this.cuStreamBeginCapture = f('int cuStreamBeginCapture_v2(void *stream, int mode)');
    this.cuStreamEndCapture = f('int cuStreamEndCapture(void *stream, _Out_ void **graph)');
    const optional = (sig: string) => {
      try {
        return f(sig);
      } catch {
        return undefined;
      }
    };
    this.cuLaunchKernelEx = optional('int cuLaunchKernelEx(const void *config, void *f, void *params, void *extra)');
    this.cuGraphAddDependencies = optional('int cuGraphAddDependencies_v2(void *graph, const void *from, const void *to, const void *edgeData, size_t count)');
  }
}

let loaded: { api: DriverApi } | { error: string } | undefined;

/** Bind libcuda once; undefined error means the library loaded. */
function driverApi(): DriverApi {
  if (!loaded) {
    try {
      loaded = { api: new DriverApi(koffi.load(process.env.TACHYON_LIBCUDA || 'libcuda.so.1')) };
    } catch (err) {
      loaded = { error: `the CUDA driver library (libcuda.so.1) could not be loaded (${(err as Error).message.split('\n')[0].replace(/^Failed to load shared library: /, '')})` };
    }
  }
  if ('error' in loaded) throw new CudaError(loaded.error);
  return loaded.api;
}

/** A kernel argument: 'p' device pointer (or 0 for null), 'i' int32, 'u' uint32, 'l' 64-bit integer, 'f' float32. */
export type ArgKind = 'p' | 'i' | 'u' | 'l' | 'f';

const MAX_KERNEL_ARGS = 32;

/** CUlaunchAttributeID of programmatic stream serialization, and the graph edge that matches it. */
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
const CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC = 1;
const CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC = 1;

/**
 * Whether kernels may overlap the one before them in the stream (programmatic-launch.ts): on by
 * default where the GPU has it (sm_90+); $TACHYON_CUDA_PDL=0 turns it off.
 */
export function programmaticLaunchFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.TACHYON_CUDA_PDL;
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new CudaError(`TACHYON_CUDA_PDL must be 0 or 1, got '${v}'`);
}

/** A kernel launch as queued: the function, its shape and its arguments' bytes (8 per argument). */
export interface KernelLaunch {
  fn: Handle;
  name: string;
  grid: [number, number, number];
  block: number;
  shared: number;
  args: Buffer;
}

/**
 * Stream work that is not one of our kernel launches (a cuBLASLt GEMM) but can be captured into a
 * graph: `issue` queues it on the stream given (the backend's, or one being captured) and may run
 * later than the call that made it, so it must set up everything it relies on itself. Work with equal
 * signatures is the same work.
 */
export interface CapturableWork {
  name: string;
  signature: Buffer;
  issue(stream: Handle): void;
}

/** What a recorded step holds, in order: our kernel launches and captured library work. */
export type RecordedWork = KernelLaunch | CapturableWork;

export function isCapturable(w: RecordedWork): w is CapturableWork {
  return 'issue' in w;
}

/**
 * Takes the launches of a step being recorded into a graph instead of the stream (step-graphs.ts).
 * The driver tells it when work it cannot record is about to be queued, and when the host is about
 * to wait for the stream, so nothing runs out of order.
 */
export interface LaunchRecorder {
  /** A launch, its arguments in the first `argBytes` bytes of `argStorage` (copy them to keep them). */
  kernel(fn: Handle, name: string, grid: [number, number, number], block: number, shared: number, argStorage: Buffer, argBytes: number): void;
  /** Library work to hold as a captured child graph (or, once the recording is interrupted, to queue). */
  captured(work: CapturableWork): void;
  /** Something that is not a kernel launch is about to be queued: queue what was deferred, record no more. */
  interrupt(): void;
  /** The host is about to wait for the stream: queue everything recorded so far, record no more. */
  flush(): void;
}

/**
 * One device, its primary context and one stream. All work is issued on that stream, so a buffer
 * handed back to a pool can be reused by later work without waiting: the stream orders them.
 */
export class CudaDriver {
  readonly api: DriverApi;
  readonly device: DeviceInfo;
  private readonly dev: number;
  readonly stream: Handle;
  /** Kernel arguments are written here; argPointers holds the address of each 8-byte slot. */
  private readonly argStorage = Buffer.alloc(8 * MAX_KERNEL_ARGS);
  private readonly argView = new DataView(this.argStorage.buffer, this.argStorage.byteOffset, this.argStorage.byteLength);
  private readonly argPointers = Buffer.alloc(8 * MAX_KERNEL_ARGS);
  /** Synchronize after every launch and name the kernel if it failed (tests; TACHYON_CUDA_SYNC=1). */
  syncEveryLaunch = process.env.TACHYON_CUDA_SYNC === '1';
  /** Kernels launched so far (benchmarks count launches per step; profilers skip to a step by it). */
  launches = 0;
  /** While a step is recorded into a graph, launches go here instead of the stream (step-graphs.ts). */
  recorder: LaunchRecorder | undefined;
  /** CUDA_KERNEL_NODE_PARAMS for graph nodes (kernelNodeParams). */
  private readonly nodeParams = Buffer.alloc(72);
  /** A stream only ever capturing (captureGraph), made when first needed. */
  private captureStream: Handle | undefined;
  /** Whether this GPU and driver can launch programmatically at all (sm_90+, CUDA 12.3+ driver). */
  readonly programmaticLaunchSupported: boolean;
  private pdl: boolean;
  /** Per function: whether it waits for its predecessor / lets its dependent start (programmatic-launch.ts). */
  private readonly roles = new Map<Handle, { waits: boolean; triggers: boolean }>();
  /** The last work queued on the stream, where it was one of our kernels (chainsProgrammatically's `prev`). */
  private lastKernel: { fn: Handle; name: string } | undefined;
  /** Launches made programmatically, and graph edges made programmatic (tests check both happen). */
  readonly programmaticCounts = { launches: 0, edges: 0 };
  /** CUlaunchConfig for cuLaunchKernelEx (grid, block, shared bytes, stream, one attribute). */
  private readonly launchConfig = Buffer.alloc(56);
  private readonly launchAttribute = Buffer.alloc(72);
  /** CUgraphEdgeData of a programmatic edge: from port, to port, type. */
  private readonly programmaticEdge = Buffer.from([CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC, 0, CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC, 0, 0, 0, 0, 0]);

  constructor(ordinal = 0, programmaticLaunch = programmaticLaunchFromEnv()) {
    const api = (this.api = driverApi());
    this.check(api.cuInit(0), 'cuInit');
    const count = [0];
    this.check(api.cuDeviceGetCount(count), 'cuDeviceGetCount');
    if (count[0] === 0) throw new CudaError('the CUDA driver reports no GPU');
    if (ordinal >= count[0]) throw new CudaError(`CUDA device ${ordinal} does not exist (${count[0]} present)`);
    const dev = [0];
    this.check(api.cuDeviceGet(dev, ordinal), 'cuDeviceGet');
    this.dev = dev[0];
    const nameBuf = Buffer.alloc(256);
    this.check(api.cuDeviceGetName(nameBuf, 256, this.dev), 'cuDeviceGetName');
    const total = [0];
    this.check(api.cuDeviceTotalMem(total, this.dev), 'cuDeviceTotalMem');
    const version = [0];
    this.check(api.cuDriverGetVersion(version), 'cuDriverGetVersion');
    this.device = {
      ordinal,
      name: nameBuf.toString('utf8').replace(/\0.*$/s, ''),
      computeCapability: 10 * this.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) + this.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
      multiprocessors: this.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
      l2Bytes: this.attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
      sharedPerBlockOptin: this.attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      totalMemoryBytes: Number(total[0]),
      integrated: this.attribute(CU_DEVICE_ATTRIBUTE_INTEGRATED) !== 0,
      driverVersion: version[0],
    };
    const ctx: Handle[] = [null];
    this.check(api.cuDevicePrimaryCtxRetain(ctx, this.dev), 'cuDevicePrimaryCtxRetain');
    this.check(api.cuCtxSetCurrent(ctx[0]), 'cuCtxSetCurrent');
    const stream: Handle[] = [null];
    // Flags 0: the stream also orders against the legacy default stream used by synchronous copies.
    this.check(api.cuStreamCreate(stream, 0), 'cuStreamCreate');
    this.stream = stream[0];
    const base = koffi.address(this.argStorage);
    for (let i = 0; i < MAX_KERNEL_ARGS; i++) this.argPointers.writeBigUInt64LE(base + BigInt(8 * i), 8 * i);
    this.programmaticLaunchSupported = this.device.computeCapability >= 90 && !!api.cuLaunchKernelEx && !!api.cuGraphAddDependencies;
    this.pdl = programmaticLaunch && this.programmaticLaunchSupported;
    // CUlaunchConfig: 7 × u32 (grid, block, shared bytes), pad, stream @32, attrs @40, numAttrs @48.
    this.launchConfig.writeBigUInt64LE(koffi.address(this.stream), 32);
    this.launchConfig.writeBigUInt64LE(koffi.address(this.launchAttribute), 40);
    this.launchConfig.writeUInt32LE(1, 48);
    // CUlaunchAttribute: id, pad, then the value union (programmaticStreamSerializationAllowed = 1).
    this.launchAttribute.writeUInt32LE(CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, 0);
    this.launchAttribute.writeInt32LE(1, 8);
  }

  /**
   * Programmatic dependent launch: the kernels programmatic-launch.ts names (they wait for their
   * predecessor with griddepcontrol.wait before reading what it wrote) are launched, and chained in
   * graphs, so that their blocks may start while the kernel before them runs and load their weights
   * meanwhile. On for sm_90+ unless $TACHYON_CUDA_PDL=0. Graphs keep the edges they were built with.
   */
  get programmaticLaunch(): boolean {
    return this.pdl;
  }

  /** Turn programmatic dependent launch on (where supported) or off for the launches that follow. */
  setProgrammaticLaunch(on: boolean): void {
    this.pdl = on && this.programmaticLaunchSupported;
  }

  private role(fn: Handle, name: string): { waits: boolean; triggers: boolean } {
    let r = this.roles.get(fn);
    if (!r) this.roles.set(fn, (r = { waits: waitsForPredecessor(name), triggers: letsDependentsStart(name) }));
    return r;
  }

  /**
   * Whether `next` may start while `prev` (the work before it on the stream or in a graph, a kernel)
   * runs: only a kernel that waits, after one that triggers — never after a copy, library work or a
   * kernel that might write what `next` reads before its wait (a weight).
   */
  chainsProgrammatically(prev: { fn: Handle; name: string } | undefined, next: { fn: Handle; name: string }): boolean {
    return this.pdl && !!prev && this.role(prev.fn, prev.name).triggers && this.role(next.fn, next.name).waits;
  }

  /** Work other than our kernels was queued on the stream (a copy, library work, a graph). */
  otherStreamWork(): void {
    this.lastKernel = undefined;
  }

  private attribute(attr: number): number {
    const v = [0];
    this.check(this.api.cuDeviceGetAttribute(v, attr, this.dev), `cuDeviceGetAttribute(${attr})`);
    return v[0];
  }

  /** Throw a CudaError naming `what` and the driver's error name and text, unless rc is CUDA_SUCCESS. */
  check(rc: unknown, what: string): void {
    if (rc === 0) return;
    throw new CudaError(`${what} failed: ${describeCudaError(this.api, rc as number)}`, rc as number);
  }

  memAlloc(bytes: number): DevicePtr {
    const p = [0];
    this.check(this.api.cuMemAlloc(p, Math.max(bytes, 1)), `cuMemAlloc(${bytes} bytes)`);
    return Number(p[0]);
  }

  /** Like memAlloc, but undefined when the device is out of memory. */
  tryMemAlloc(bytes: number): DevicePtr | undefined {
    const p = [0];
    const rc = this.api.cuMemAlloc(p, Math.max(bytes, 1));
    if (rc === CUDA_ERROR_OUT_OF_MEMORY) return undefined;
    this.check(rc, `cuMemAlloc(${bytes} bytes)`);
    return Number(p[0]);
  }

  memFree(ptr: DevicePtr): void {
    this.check(this.api.cuMemFree(ptr), 'cuMemFree');
  }

  memInfo(): { freeBytes: number; totalBytes: number } {
    const free = [0];
    const total = [0];
    this.check(this.api.cuMemGetInfo(free, total), 'cuMemGetInfo');
    return { freeBytes: Number(free[0]), totalBytes: Number(total[0]) };
  }

  /** Host → device on the stream. Pageable sources are staged before this returns, so `src` may be reused. */
  upload(dst: DevicePtr, src: ArrayBufferView, bytes = src.byteLength): void {
    // A recorded step's deferred kernels must not see this copy land before them.
    this.recorder?.interrupt();
    this.uploadNow(dst, src, bytes);
  }

  /**
   * An upload a recorded step may queue while its kernels wait (step-graphs.ts): only into memory no
   * kernel deferred in this step reads, which its upload slots guarantee.
   */
  uploadNow(dst: DevicePtr, src: ArrayBufferView, bytes = src.byteLength): void {
    this.otherStreamWork();
    this.check(this.api.cuMemcpyHtoDAsync(dst, src, bytes, this.stream), `cuMemcpyHtoDAsync(${bytes} bytes)`);
  }

  /** Device → host after all work queued on the stream; returns when `dst` holds the data. */
  download(dst: ArrayBufferView, src: DevicePtr, bytes = dst.byteLength): void {
    this.recorder?.flush();
    this.otherStreamWork();
    this.check(this.api.cuMemcpyDtoHAsync(dst, src, bytes, this.stream), `cuMemcpyDtoHAsync(${bytes} bytes)`);
    this.synchronize();
  }

  copyDeviceToDevice(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    this.recorder?.interrupt();
    this.otherStreamWork();
    this.check(this.api.cuMemcpyDtoDAsync(dst, src, bytes, this.stream), `cuMemcpyDtoDAsync(${bytes} bytes)`);
  }

  /** Fill `count` 32-bit words with `value` (e.g. a NaN pattern to poison outputs in tests). */
  fill32(dst: DevicePtr, value: number, count: number): void {
    this.recorder?.interrupt();
    this.otherStreamWork();
    this.check(this.api.cuMemsetD32Async(dst, value >>> 0, count, this.stream), 'cuMemsetD32Async');
  }

  synchronize(): void {
    this.recorder?.flush();
    this.check(this.api.cuStreamSynchronize(this.stream), 'cuStreamSynchronize');
  }

  loadModule(image: Uint8Array, what: string): Handle {
    const mod: Handle[] = [null];
    this.check(this.api.cuModuleLoadData(mod, image), `cuModuleLoadData(${what})`);
    return mod[0];
  }

  getFunction(module: Handle, name: string): Handle {
    const fn: Handle[] = [null];
    this.check(this.api.cuModuleGetFunction(fn, module, name), `cuModuleGetFunction(${name})`);
    return fn[0];
  }

  /** Launch `fn` on the stream. `kinds` spells each argument's type (see ArgKind), one letter each. */
  launch(fn: Handle, name: string, grid: [number, number, number], block: number, kinds: string, args: readonly number[], sharedBytes = 0): void {
    if (kinds.length !== args.length || args.length > MAX_KERNEL_ARGS) throw new CudaError(`launch ${name}: ${args.length} arguments for signature '${kinds}'`);
    const v = this.argView;
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      const off = 8 * i;
      switch (kinds.charCodeAt(i)) {
        // 32-bit values clear their slot's upper half: a recorded step compares launches by all 8 bytes.
        case 105: // i
          v.setInt32(off, a, true);
          v.setUint32(off + 4, 0);
          break;
        case 117: // u
          v.setUint32(off, a >>> 0, true);
          v.setUint32(off + 4, 0);
          break;
        case 102: // f
          v.setFloat32(off, a, true);
          v.setUint32(off + 4, 0);
          break;
        default: // p, l: 64-bit, from a non-negative safe integer
          v.setUint32(off, a % 4294967296, true);
          v.setUint32(off + 4, Math.floor(a / 4294967296), true);
      }
    }
    this.launches++;
    if (sharedBytes > DEFAULT_DYNAMIC_SHARED) this.allowDynamicShared(fn, name, sharedBytes);
    if (this.recorder) return this.recorder.kernel(fn, name, grid, block, sharedBytes, this.argStorage, 8 * args.length);
    this.launchNow(fn, name, grid, block, sharedBytes);
  }

  /** Functions' raised dynamic shared memory limits (cuFuncSetAttribute), by function. */
  private readonly sharedLimits = new Map<Handle, number>();

  /** Let `fn` launch with `bytes` of dynamic shared memory (over 48 KiB needs the function's opt-in). */
  private allowDynamicShared(fn: Handle, name: string, bytes: number): void {
    if ((this.sharedLimits.get(fn) ?? DEFAULT_DYNAMIC_SHARED) >= bytes) return;
    this.check(this.api.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes), `cuFuncSetAttribute(${name}, dynamic shared memory ${bytes} bytes)`);
    this.sharedLimits.set(fn, bytes);
  }

  /** Queue a launch recorded earlier (a recorded step that could not become a graph). */
  launchRecorded(l: KernelLaunch): void {
    l.args.copy(this.argStorage);
    this.launchNow(l.fn, l.name, l.grid, l.block, l.shared);
  }

  /** cuLaunchKernel (cuLaunchKernelEx where programmatic) with the arguments now in argStorage. */
  private launchNow(fn: Handle, name: string, grid: [number, number, number], block: number, sharedBytes: number): void {
    let rc: unknown;
    const programmatic = this.chainsProgrammatically(this.lastKernel, { fn, name });
    this.lastKernel = { fn, name };
    if (programmatic) {
      this.programmaticCounts.launches++;
      const c = this.launchConfig;
      c.writeUInt32LE(grid[0], 0);
      c.writeUInt32LE(grid[1], 4);
      c.writeUInt32LE(grid[2], 8);
      c.writeUInt32LE(block, 12);
      c.writeUInt32LE(1, 16);
      c.writeUInt32LE(1, 20);
      c.writeUInt32LE(sharedBytes, 24);
      rc = this.api.cuLaunchKernelEx!(c, fn, this.argPointers, null);
    } else {
      rc = this.api.cuLaunchKernel(fn, grid[0], grid[1], grid[2], block, 1, 1, sharedBytes, this.stream, this.argPointers, null);
    }
    // (The message is built only on failure: this runs for every kernel, ~10,000 times a second.)
    if (rc !== 0) this.check(rc, `cuLaunchKernel(${name}, grid ${grid.join('×')}, block ${block})`);
    if (this.syncEveryLaunch) this.check(this.api.cuStreamSynchronize(this.stream), `kernel ${name} (grid ${grid.join('×')}, block ${block})`);
  }

  // ---- graphs (step-graphs.ts) ----------------------------------------------------------------

  /** An empty graph. */
  createGraph(): Handle {
    const g: Handle[] = [null];
    this.check(this.api.cuGraphCreate(g, 0), 'cuGraphCreate');
    return g[0];
  }

  /**
   * Append `l` to `graph` after node `after` (none: a root). Returns the new node. Where `after` is
   * the kernel `afterLaunch` and the stream would launch `l` programmatically after it, so is the edge.
   */
  addKernelNode(graph: Handle, after: Handle | undefined, l: KernelLaunch, afterLaunch?: KernelLaunch): Handle {
    const node: Handle[] = [null];
    let deps: Buffer | null = null;
    if (after !== undefined) {
      deps = Buffer.alloc(8);
      deps.writeBigUInt64LE(koffi.address(after));
    }
    const programmatic = deps !== null && this.chainsProgrammatically(afterLaunch, l);
    this.check(
      this.api.cuGraphAddKernelNode(node, graph, programmatic ? null : deps, programmatic || !deps ? 0 : 1, this.kernelNodeParams(l)),
      `cuGraphAddKernelNode(${l.name})`,
    );
    if (programmatic) {
      this.programmaticCounts.edges++;
      const to = Buffer.alloc(8);
      to.writeBigUInt64LE(koffi.address(node[0]));
      this.check(this.api.cuGraphAddDependencies!(graph, deps, to, this.programmaticEdge, 1), `cuGraphAddDependencies(programmatic, ${l.name})`);
    }
    return node[0];
  }

  /** Append a copy of graph `child` to `graph` after node `after` (none: a root). Returns the new node. */
  addChildGraphNode(graph: Handle, after: Handle | undefined, child: Handle, name: string): Handle {
    const node: Handle[] = [null];
    let deps: Buffer | null = null;
    if (after !== undefined) {
      deps = Buffer.alloc(8);
      deps.writeBigUInt64LE(koffi.address(after));
    }
    this.check(this.api.cuGraphAddChildGraphNode(node, graph, deps, deps ? 1 : 0, child), `cuGraphAddChildGraphNode(${name})`);
    return node[0];
  }

  /**
   * The work `issue` queues, captured into a new graph (the caller destroys it) instead of run: on a
   * stream of its own in relaxed mode, so nothing else on the device waits or is recorded with it.
   */
  captureGraph(name: string, issue: (stream: Handle) => void): Handle {
    if (!this.captureStream) {
      const s: Handle[] = [null];
      this.check(this.api.cuStreamCreate(s, CU_STREAM_NON_BLOCKING), 'cuStreamCreate(capture)');
      this.captureStream = s[0];
    }
    const stream = this.captureStream;
    this.check(this.api.cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_RELAXED), `cuStreamBeginCapture(${name})`);
    let failure: unknown;
    try {
      issue(stream);
    } catch (err) {
      failure = err;
    }
    // End the capture whatever happened, so the stream is usable again.
    const graph: Handle[] = [null];
    const rc = this.api.cuStreamEndCapture(stream, graph);
    if (failure) {
      if (rc === 0 && graph[0]) this.api.cuGraphDestroy(graph[0]);
      throw failure;
    }
    this.check(rc, `cuStreamEndCapture(${name})`);
    return graph[0];
  }

  instantiateGraph(graph: Handle): Handle {
    const exec: Handle[] = [null];
    this.check(this.api.cuGraphInstantiate(exec, graph, 0), 'cuGraphInstantiate');
    return exec[0];
  }

  /** Give node `node` of an instantiated graph new launch parameters (later launches of it see them). */
  setKernelNode(exec: Handle, node: Handle, l: KernelLaunch): void {
    this.check(this.api.cuGraphExecKernelNodeSetParams(exec, node, this.kernelNodeParams(l)), `cuGraphExecKernelNodeSetParams(${l.name})`);
  }

  launchGraph(exec: Handle): void {
    this.otherStreamWork();
    this.check(this.api.cuGraphLaunch(exec, this.stream), 'cuGraphLaunch');
  }

  destroyGraph(graph: Handle, exec: Handle | undefined): void {
    if (exec) this.check(this.api.cuGraphExecDestroy(exec), 'cuGraphExecDestroy');
    this.check(this.api.cuGraphDestroy(graph), 'cuGraphDestroy');
  }

  /**
   * CUDA_KERNEL_NODE_PARAMS_v2 for `l`: func, grid x/y/z, block x/y/z, shared bytes (u32 each), then
   * at 8-byte offsets kernelParams, extra, kern, ctx. Arguments are copied by the driver when the call
   * that takes this returns, so one buffer serves every node.
   */
  private kernelNodeParams(l: KernelLaunch): Buffer {
    l.args.copy(this.argStorage);
    const p = this.nodeParams;
    p.fill(0);
    p.writeBigUInt64LE(koffi.address(l.fn), 0);
    p.writeUInt32LE(l.grid[0], 8);
    p.writeUInt32LE(l.grid[1], 12);
    p.writeUInt32LE(l.grid[2], 16);
    p.writeUInt32LE(l.block, 20);
    p.writeUInt32LE(1, 24);
    p.writeUInt32LE(1, 28);
    p.writeUInt32LE(l.shared, 32);
    p.writeBigUInt64LE(koffi.address(this.argPointers), 40);
    return p;
  }

  createEvent(): Handle {
    const e: Handle[] = [null];
    this.check(this.api.cuEventCreate(e, 0), 'cuEventCreate');
    return e[0];
  }

  recordEvent(e: Handle): void {
    this.recorder?.interrupt();
    this.otherStreamWork();
    this.check(this.api.cuEventRecord(e, this.stream), 'cuEventRecord');
  }

  /** Milliseconds between two recorded events (waits for the second). */
  elapsedMs(start: Handle, end: Handle): number {
    this.check(this.api.cuEventSynchronize(end), 'cuEventSynchronize');
    const ms = [0];
    this.check(this.api.cuEventElapsedTime(ms, start, end), 'cuEventElapsedTime');
    return ms[0];
  }
}

export function describeCudaError(api: DriverApi, rc: number): string {
  const name: unknown[] = [null];
  const text: unknown[] = [null];
  const okName = api.cuGetErrorName(rc, name) === 0 && typeof name[0] === 'string';
  const okText = api.cuGetErrorString(rc, text) === 0 && typeof text[0] === 'string';
  return okName ? `${name[0]} (${okText ? text[0] : `error ${rc}`})` : `CUDA error ${rc}`;
}
